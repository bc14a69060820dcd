"""The results file format: plain JSON values, atomic saving, loading with a format check.

:func:`nic_core.evaluate.evaluate_robustness` writes CompressAI's ``eval_model`` JSON, extended
(``results`` holds one value per key, as CompressAI writes one entry per model point, so its
plotting tool reads it unchanged)::

    {"name", "description", "dataset", "config": {... plain values ..., "evaluation": {...}},
     "results": {"psnr-rgb": [m], "ms-ssim-rgb": [m], "bpp": [m], "bpp-est": [m],
                 "bpp_main-est": [m], "encoding_time": [m], "decoding_time": [m]},
     "stderr": {"psnr-rgb": se, "bpp": se},
     "attacks": {spec: {"kind", "eps", "iterations", "lr", "quant", "held": n,
                        "results": {"psnr-rgb", "ms-ssim-rgb", "bpp", "bpp-est", "delta-psnr",
                                    "delta-bpp", "noise-mse", "noise-psnr", "budget-use",
                                    "seconds"},
                        "stderr": {"psnr-rgb", "bpp", "delta-psnr", "delta-bpp"}},
                 "worst-psnr" / "worst-bpp": {..., "members": [...], "wins": {spec: n}}},
     "per_image": [{"name", "height", "width", <clean keys as scalars>,
                    "attacks": {spec: {<attack keys as scalars>, "held", "best-iteration",
                                       "restart"(, "winner" in worst-*)}}}],
     "findings": ["kodim03: psnr used only 91 % of the budget", ...]}

A file nested over a smaller budget (:mod:`nic_core.budgets`) has ``config.evaluation.nested``
(``{"eps", "name"}`` of the smaller budget's file) and members ``"SPEC (eps 0.0005)"`` in its
worst-case ``wins``.

Undefined values (MS-SSIM under 161 px, the times without real coding, the PSNR of zero noise)
are ``None`` in the dict and ``null`` in the file, never NaN: the file is strict JSON and
``load_results(save_results(r)) == r`` exactly. Means skip ``None`` (all ``None`` gives ``None``).
:mod:`nic_core.evaluate` re-exports everything here (``evaluate.save_results``,
``evaluate.load_results``, ``evaluate.CLEAN_KEYS``, ...).
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

import torch

__all__ = ["save_results", "load_results", "without_timings", "CLEAN_KEYS", "ATTACK_KEYS",
           "REQUIRED_KEYS", "REQUIRED_RESULTS"]

CLEAN_KEYS = ("psnr-rgb", "ms-ssim-rgb", "bpp", "bpp-est", "bpp_main-est", "encoding_time",
              "decoding_time")
ATTACK_KEYS = ("psnr-rgb", "ms-ssim-rgb", "bpp", "bpp-est", "delta-psnr", "delta-bpp",
               "noise-mse", "noise-psnr", "budget-use", "seconds")
REQUIRED_KEYS = ("name", "results")
REQUIRED_RESULTS = ("psnr-rgb", "bpp")


def plain_number(v) -> Optional[float]:
    """A finite float, or None for NaN / inf / None."""
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def mean_or_none(values) -> Optional[float]:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def plain_values(obj: Any) -> Any:
    """Plain JSON values: dicts with str keys, lists, str, int, float (finite), bool, None."""
    if isinstance(obj, Mapping):
        return {str(k): plain_values(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [plain_values(v) for v in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return plain_number(obj)
    if isinstance(obj, torch.Tensor) and obj.numel() == 1:
        return plain_values(obj.item())
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        try:
            return plain_values(obj.item())
        except (TypeError, ValueError):
            pass
    return str(obj)


def save_results(results: Mapping[str, Any], path) -> Path:
    """Write results as strict JSON (NaN / inf become null), atomically (temp + os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(plain_values(results), indent=2, allow_nan=False)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text + "\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def load_results(path) -> Dict[str, Any]:
    """Read a results JSON and check it has CompressAI's keys (``name``, ``results``...)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"results file not found: {path}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise ValueError(f"{path}: missing required key(s) {missing} (CompressAI eval format)")
    if not isinstance(data["results"], dict):
        raise ValueError(f"{path}: 'results' must be an object")
    missing = [k for k in REQUIRED_RESULTS if k not in data["results"]]
    if missing:
        raise ValueError(f"{path}: 'results' lacks {missing}")
    if "attacks" in data and not isinstance(data["attacks"], dict):
        raise ValueError(f"{path}: 'attacks' must be an object")
    for kind, block in data.get("attacks", {}).items():
        if not isinstance(block, dict) or not isinstance(block.get("results"), dict):
            raise ValueError(f"{path}: attacks[{kind!r}] lacks its 'results' object")
    return data


TIMING_KEYS = ("seconds", "encoding_time", "decoding_time")


def without_timings(obj: Any, also: tuple = ()) -> Any:
    """``obj`` (results, or any part) without its wall-clock keys (and ``also``): what two runs
    of the same evaluation must agree on exactly (e.g. a resumed run and an uninterrupted one)."""
    drop = set(TIMING_KEYS) | set(also)
    if isinstance(obj, Mapping):
        return {k: without_timings(v, also) for k, v in obj.items() if k not in drop}
    if isinstance(obj, list):
        return [without_timings(v, also) for v in obj]
    return obj
