"""Robustness evaluation: clean rate-distortion plus psnr / bpp attacks, in one JSON format.

:func:`evaluate_robustness` reproduces the measurements behind Table 1 and Fig. 3-5 of
arXiv 2403.06700: per image the clean estimated and real (bitstream) bpp, PSNR and MS-SSIM,
then for each attack the same quantities on the adversarial image, with PSNR / MS-SSIM taken
against the ORIGINAL clean image (as in the paper), the deltas to clean and the noise achieved.

The result is CompressAI's ``eval_model`` JSON, extended (``results`` holds one value per key,
as CompressAI writes one entry per model point, so its plotting tool reads it unchanged)::

    {"name", "description", "dataset", "config": {... plain values ...},
     "results": {"psnr-rgb": [m], "ms-ssim-rgb": [m], "bpp": [m], "bpp-est": [m],
                 "bpp_main-est": [m], "encoding_time": [m], "decoding_time": [m]},
     "attacks": {kind: {"eps", "iterations", "lr", "quant",
                        "results": {"psnr-rgb", "ms-ssim-rgb", "bpp", "bpp-est", "delta-psnr",
                                    "delta-bpp", "noise-mse", "noise-psnr", "seconds"}}},
     "per_image": [{"name", "height", "width", <clean keys as scalars>,
                    "attacks": {kind: {<attack keys as scalars>}}}]}

``bpp`` is the real bitstream rate when ``real=True`` (default) and the estimated one otherwise
(``config["evaluation"]["real"]`` says which). Undefined values (MS-SSIM under 161 px, the
times without real coding, the PSNR of zero noise) are ``None`` in the dict and ``null`` in the
file, never NaN: the file is strict JSON and ``load_results(save_results(r)) == r`` exactly.
Means skip ``None`` (all ``None`` gives ``None``).
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from tqdm.auto import tqdm

from . import attacks as _attacks
from .metrics import ms_ssim, psnr, psnr_from_mse, real_codec, update_entropy_tables
from .models import codec_forward

__all__ = ["evaluate_robustness", "save_results", "load_results", "CLEAN_KEYS", "ATTACK_KEYS"]

CLEAN_KEYS = ("psnr-rgb", "ms-ssim-rgb", "bpp", "bpp-est", "bpp_main-est", "encoding_time",
              "decoding_time")
ATTACK_KEYS = ("psnr-rgb", "ms-ssim-rgb", "bpp", "bpp-est", "delta-psnr", "delta-bpp",
               "noise-mse", "noise-psnr", "seconds")
REQUIRED_KEYS = ("name", "results")
REQUIRED_RESULTS = ("psnr-rgb", "bpp")

Images = Union[torch.Tensor, Sequence[Tuple[str, torch.Tensor]]]


def _num(v) -> Optional[float]:
    """A finite float, or None for NaN / inf / None."""
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _mean(values) -> Optional[float]:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def _plain(obj: Any) -> Any:
    """Plain JSON values: dicts with str keys, lists, str, int, float (finite), bool, None."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [_plain(v) for v in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return _num(obj)
    if isinstance(obj, torch.Tensor) and obj.numel() == 1:
        return _plain(obj.item())
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        try:
            return _plain(obj.item())
        except (TypeError, ValueError):
            pass
    return str(obj)


def _as_images(images: Images) -> List[Tuple[str, torch.Tensor]]:
    if isinstance(images, torch.Tensor):
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be a [B,3,H,W] tensor or a list of (name, [3,H,W]) "
                             f"pairs, got a tensor of shape {tuple(images.shape)}")
        return [(f"image{i:03d}", t) for i, t in enumerate(images)]
    items = list(images)
    out = []
    for i, item in enumerate(items):
        if not (isinstance(item, (tuple, list)) and len(item) == 2
                and isinstance(item[1], torch.Tensor)):
            raise ValueError(f"images[{i}] must be a (name, [3,H,W] tensor) pair")
        name, t = item
        if t.dim() != 3 or t.shape[0] != 3:
            raise ValueError(f"image {name!r} must be [3,H,W], got shape {tuple(t.shape)}")
        out.append((str(name), t))
    if not out:
        raise ValueError("no images to evaluate")
    return out


def _iterations_for(iterations, kind: str) -> int:
    if isinstance(iterations, Mapping):
        if kind not in iterations:
            raise ValueError(f"iterations has no entry for attack {kind!r}")
        return int(iterations[kind])
    return int(iterations)


def _measure(model, x_ref, x_in, real: bool) -> Dict[str, List[Optional[float]]]:
    """Estimated and (optionally) real rate of coding ``x_in``; quality against ``x_ref``."""
    with torch.no_grad():
        out = codec_forward(model, x_in, quant="round")
    B = x_in.shape[0]
    m = {"bpp-est": [_num(v) for v in out["bpp"]],
         "bpp_main-est": [_num(v) for v in out["bpp_main"]]}
    if real:
        rc = real_codec(model, x_in, update=False)
        x_hat = rc["x_hat"]
        m["bpp"] = [_num(v) for v in rc["bpp"]]
        m["encoding_time"] = [rc["enc_s"] / B] * B
        m["decoding_time"] = [rc["dec_s"] / B] * B
    else:
        x_hat = out["x_hat"].clamp(0, 1)
        m["bpp"] = list(m["bpp-est"])
        m["encoding_time"] = m["decoding_time"] = [None] * B
    m["psnr-rgb"] = [_num(v) for v in psnr(x_ref, x_hat)]
    m["ms-ssim-rgb"] = [_num(v) for v in ms_ssim(x_ref, x_hat)]
    return m


def _groups(images: List[Tuple[str, torch.Tensor]], batch_size: int):
    """Indices of equal-size images in batches of at most ``batch_size`` (first-seen order)."""
    by_shape: Dict[tuple, List[int]] = {}
    for i, (_, t) in enumerate(images):
        by_shape.setdefault(tuple(t.shape), []).append(i)
    for idx in by_shape.values():
        for s in range(0, len(idx), batch_size):
            yield idx[s:s + batch_size]


def evaluate_robustness(model: torch.nn.Module, images: Images,
                        attacks: Sequence[str] = ("psnr", "bpp"), eps: float = 5e-4,
                        iterations: Union[int, Mapping[str, int]] = 100,
                        lr: Optional[float] = None, quant: str = "ste", seed: int = 0,
                        to_uint8: bool = False, name: str = "model", description: str = "",
                        config: Optional[Mapping[str, Any]] = None, dataset: str = "",
                        real: bool = True, progress: bool = True,
                        batch_size: int = 1) -> Dict[str, Any]:
    """Clean and attacked rate-distortion of ``model`` on ``images`` (paper Table 1, Fig. 3).

    Args:
        model: CompressAI codec; put in eval mode for the evaluation and restored after. Its
            entropy tables are rebuilt once (``update_entropy_tables``) when ``real``.
        images: list of ``(name, [3,H,W])`` as from ``nic_core.data.load_images``, or a
            [B,3,H,W] tensor; values in [0, 1]. Sizes may differ.
        attacks: kinds from :data:`nic_core.attacks.ATTACKS`; ``()`` gives a clean R-D
            evaluation only.
        eps, lr, quant, seed, to_uint8: passed to :func:`nic_core.attacks.attack`.
        iterations: attack iterations, or a mapping kind -> iterations (the paper uses
            N_p = N_b = 1000 on Kodak, 500 on DIV2K).
        name, description, dataset: labels stored in the results.
        config: plain-valued settings of the run, stored under ``"config"`` (the evaluation's
            own settings are added under ``config["evaluation"]``).
        real: also code every clean and adversarial image into real bitstreams (``bpp`` is
            then the real rate; otherwise it is the estimate).
        progress: tqdm bar over images.
        batch_size: attack this many equal-size images together (per-image results do not
            depend on it with ``quant="ste"``).

    Returns:
        The results dict described in the module docstring.
    """
    items = _as_images(images)
    attacks = tuple(attacks)
    for k in attacks:
        if k not in _attacks.ATTACKS:
            raise ValueError(f"unknown attack kind {k!r}; choose from {_attacks.ATTACKS}")
    if len(set(attacks)) != len(attacks):
        raise ValueError(f"attacks must not repeat a kind, got {attacks}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    iters = {k: _iterations_for(iterations, k) for k in attacks}
    for _, t in items:
        if not t.is_floating_point():
            raise ValueError(f"images must be float tensors in [0, 1], got {t.dtype}")
    device = next(model.parameters()).device
    modes = [(m, m.training) for m in model.modules()]
    per_image: List[Dict[str, Any]] = [None] * len(items)  # type: ignore[list-item]
    try:
        model.eval()
        if real:
            update_entropy_tables(model)
        bar = tqdm(total=len(items), desc=f"evaluate {name}", disable=not progress)
        for idx in _groups(items, batch_size):
            x = torch.stack([items[i][1] for i in idx]).to(device)
            clean = _measure(model, x, x, real)
            rows = [{"name": items[i][0], "height": int(x.shape[-2]), "width": int(x.shape[-1]),
                     **{k: clean[k][j] for k in CLEAN_KEYS}, "attacks": {}}
                    for j, i in enumerate(idx)]
            for kind in attacks:
                adv = _attacks.attack(model, x, kind, eps=eps, iterations=iters[kind], lr=lr,
                                      quant=quant, seed=seed, to_uint8=to_uint8)
                att = _measure(model, x, adv["x_adv"], real)
                for j, row in enumerate(rows):
                    nmse = float(adv["noise_mse"][j])
                    d_psnr = (None if att["psnr-rgb"][j] is None or row["psnr-rgb"] is None
                              else att["psnr-rgb"][j] - row["psnr-rgb"])
                    row["attacks"][kind] = {
                        "psnr-rgb": att["psnr-rgb"][j], "ms-ssim-rgb": att["ms-ssim-rgb"][j],
                        "bpp": att["bpp"][j], "bpp-est": att["bpp-est"][j],
                        "delta-psnr": d_psnr, "delta-bpp": att["bpp"][j] - row["bpp"],
                        "noise-mse": nmse, "noise-psnr": _num(psnr_from_mse(nmse)),
                        "seconds": adv["seconds"] / len(idx),
                    }
            for j, i in enumerate(idx):
                per_image[i] = rows[j]
            bar.update(len(idx))
        bar.close()
    finally:
        for m, t in modes:
            m.training = t

    settings = {"attacks": list(attacks), "eps": eps, "iterations": iters, "lr": lr,
                "quant": quant, "seed": seed, "to_uint8": to_uint8, "real": real,
                "n_images": len(items), "batch_size": batch_size}
    results = {
        "name": str(name),
        "description": str(description),
        "dataset": str(dataset),
        "config": {**_plain(dict(config or {})), "evaluation": _plain(settings)},
        "results": {k: [_mean(r[k] for r in per_image)] for k in CLEAN_KEYS},
        "attacks": {
            kind: {"eps": _num(eps), "iterations": iters[kind], "lr": _num(lr), "quant": quant,
                   "results": {k: [_mean(r["attacks"][kind][k] for r in per_image)]
                               for k in ATTACK_KEYS}}
            for kind in attacks},
        "per_image": per_image,
    }
    return _plain(results)


def save_results(results: Mapping[str, Any], path) -> Path:
    """Write results as strict JSON (NaN / inf become null), atomically (temp + os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_plain(results), indent=2, allow_nan=False)
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
