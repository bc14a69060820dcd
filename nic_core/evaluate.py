"""Robustness evaluation: clean rate-distortion plus psnr / bpp attacks, in one JSON format.

:func:`evaluate_robustness` reproduces the measurements behind Table 1 and Fig. 3-5 of
arXiv 2403.06700: per image the clean estimated and real (bitstream) bpp, PSNR and MS-SSIM,
then for each attack the same quantities on the adversarial image, with PSNR / MS-SSIM taken
against the ORIGINAL clean image (as in the paper), the deltas to clean and the noise achieved.

The result is CompressAI's ``eval_model`` JSON, extended (``results`` holds one value per key,
as CompressAI writes one entry per model point, so its plotting tool reads it unchanged)::

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

An attack spec is ``kind[@quant][:iterations][/schedule]`` (``attacks.parse_spec``); the
worst-case rows take, per image, the lowest PSNR (highest rate) over the ensemble among the
results that *held* the other quantity (rate within ``RATE_TOL``, PSNR within ``PSNR_TOL``).
Protocol 1 files (before the strongest-iterate attacks) have no ``config.evaluation.protocol``.

``bpp`` is the real bitstream rate when ``real=True`` (default) and the estimated one otherwise
(``config["evaluation"]["real"]`` says which). Undefined values (MS-SSIM under 161 px, the
times without real coding, the PSNR of zero noise) are ``None`` in the dict and ``null`` in the
file, never NaN: the file is strict JSON and ``load_results(save_results(r)) == r`` exactly.
Means skip ``None`` (all ``None`` gives ``None``).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from tqdm.auto import tqdm

from . import attacks as _attacks
from . import distributed, stats
from .metrics import ms_ssim, psnr, psnr_from_mse, real_codec, update_entropy_tables
from .models import codec_forward

__all__ = ["evaluate_robustness", "transfer_matrix", "saturation", "parse_attacks", "save_results",
           "load_results", "CLEAN_KEYS", "ATTACK_KEYS"]

CLEAN_KEYS = ("psnr-rgb", "ms-ssim-rgb", "bpp", "bpp-est", "bpp_main-est", "encoding_time",
              "decoding_time")
ATTACK_KEYS = ("psnr-rgb", "ms-ssim-rgb", "bpp", "bpp-est", "delta-psnr", "delta-bpp",
               "noise-mse", "noise-psnr", "budget-use", "seconds")
RATE_TOL = 0.05  # a psnr-side result "held" the rate: |bpp / bpp_clean - 1| <= 5 %
PSNR_TOL = 1.0   # a bpp-side result "held" the PSNR: drop <= 1 dB
# 2: strongest iterate, cosine step, restarts, attack specs, worst case (1: last iterate)
PROTOCOL = 2
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


Spec = Tuple[str, str, int, str]  # kind, quant, iterations, schedule


def parse_attacks(specs: Sequence[str], quant: str = "ste",
                  iterations: Union[int, Mapping[str, int]] = 100,
                  schedule: str = "cosine") -> Dict[str, Spec]:
    """``{key: (kind, quant, iterations, schedule)}`` for specs
    ``kind[@quant][:iterations][/schedule]``; the key leaves out the parts that are defaults.

    ``iterations`` is the default count, or a mapping kind -> count (older callers). Specs that
    name the same attack twice are an error (they would be computed twice).
    """
    out: Dict[str, Spec] = {}
    for spec in specs:
        kind, q, it, sch = _attacks.parse_spec(spec, quant, schedule=schedule)
        default_it = iterations.get(kind) if isinstance(iterations, Mapping) else iterations
        if it is None:
            if default_it is None:
                raise ValueError(f"iterations has no entry for attack {kind!r}")
            it = int(default_it)
        key = (kind + (f"@{q}" if q != quant else "")
               + (f":{it}" if default_it is None or it != int(default_it) else "")
               + (f"/{sch}" if sch != schedule else ""))
        if key in out or (kind, q, it, sch) in out.values():
            raise ValueError(f"attack {spec!r} is listed twice")
        out[key] = (kind, q, it, sch)
    return out


def _held(kind: str, att: Mapping[str, Any], clean: Mapping[str, Any], rate_tol: float,
          psnr_tol: float) -> bool:
    """Did this attacked result hold the other quantity (real bitstream rate, PSNR)?"""
    side = _attacks.side(kind)
    if side == "psnr" and clean["bpp"]:
        return abs(att["bpp"] / clean["bpp"] - 1) <= rate_tol
    if side == "bpp" and att["psnr-rgb"] is not None and clean["psnr-rgb"] is not None:
        return clean["psnr-rgb"] - att["psnr-rgb"] <= psnr_tol
    return True


def _worst(row: Dict[str, Any], members: Sequence[str], kinds: Mapping[str, str],
           which: str) -> Optional[Dict[str, Any]]:
    """The worst member result of one image: lowest PSNR (``psnr``) or highest rate (``bpp``)
    among those that held the other quantity (all of them when none did); random noise counts on
    both sides (a gradient attack weaker than noise is a finding)."""
    cands = [m for m in members if _attacks.side(kinds[m]) in (which, None)]
    if not cands:
        return None
    held = [m for m in cands if row["attacks"][m]["held"]] or cands
    key = (lambda m: row["attacks"][m]["psnr-rgb"]) if which == "psnr" else \
        (lambda m: -row["attacks"][m]["bpp"])
    win = min(held, key=key)
    return {**row["attacks"][win], "winner": win}


def _findings(per_image, specs, members) -> List[str]:
    """What a reviewer must see: unused budget, results that did not hold, noise beating the
    gradient attacks (a sign of gradient masking)."""
    notes = []
    for row in per_image:
        for key, (kind, *_) in specs.items():
            a = row["attacks"][key]
            if kind in ("psnr", "bpp", "pgd-l2-psnr", "pgd-l2-bpp") and a["budget-use"] < 0.95:
                notes.append(f"{row['name']}: {key} used only {a['budget-use']:.0%} of the budget")
            if not a["held"]:
                notes.append(f"{row['name']}: {key} did not hold the "
                             f"{'rate' if _attacks.side(kind) == 'psnr' else 'PSNR'}")
        for which in ("psnr", "bpp"):
            w = row["attacks"].get(f"worst-{which}")
            if w is not None and specs[w["winner"]][0] == "noise":
                notes.append(f"{row['name']}: random noise beat every gradient attack on "
                             f"{which} (gradient masking?)")
    return notes


def evaluate_robustness(model: torch.nn.Module, images: Images,
                        attacks: Sequence[str] = ("psnr", "bpp"), eps: float = 5e-4,
                        iterations: Union[int, Mapping[str, int]] = 100,
                        lr: Optional[float] = None, quant: str = "ste", seed: int = 0,
                        to_uint8: bool = False, name: str = "model", description: str = "",
                        config: Optional[Mapping[str, Any]] = None, dataset: str = "",
                        real: bool = True, progress: bool = True, batch_size: int = 1,
                        worst_case: Sequence[str] = (), restarts: int = 1,
                        schedule: str = "cosine", keep_best: bool = True,
                        rate_tol: float = RATE_TOL, psnr_tol: float = PSNR_TOL,
                        adversarial: Optional[Dict[str, Dict[str, torch.Tensor]]] = None
                        ) -> Dict[str, Any]:
    """Clean and attacked rate-distortion of ``model`` on ``images`` (paper Table 1, Fig. 3).

    Every attack keeps its strongest iterate (``keep_best``) under a decaying step
    (``schedule``), with ``restarts`` starts per image; ``worst_case`` adds, per image, the
    worst result over an ensemble of attacks for the quality side (``worst-psnr``) and the rate
    side (``worst-bpp``), each reported beside the members' own rows with how often each won.

    Args:
        model: CompressAI codec; put in eval mode for the evaluation and restored after. Its
            entropy tables are rebuilt once (``update_entropy_tables``) when ``real``.
        images: list of ``(name, [3,H,W])`` as from ``nic_core.data.load_images``, or a
            [B,3,H,W] tensor; values in [0, 1]. Sizes may differ.
        attacks: attack specs ``kind[@quant][:iterations][/schedule]`` (kinds of
            :data:`nic_core.attacks.ATTACKS`, e.g. ``"psnr:400"``, ``"bpp@noise"``); ``()``
            gives a clean R-D evaluation only. Results are keyed by the spec, with the default
            quant and iterations left out (``"psnr"``).
        eps, lr, quant, seed, to_uint8, restarts, schedule, keep_best, rate_tol, psnr_tol:
            passed to :func:`nic_core.attacks.attack` (``quant`` is the default path).
        iterations: default attack iterations, or a mapping kind -> iterations (the paper uses
            N_p = N_b = 1000 on Kodak, 500 on DIV2K).
        worst_case: attack specs of the ensemble (may repeat ``attacks``; computed once).
        name, description, dataset: labels stored in the results.
        config: plain-valued settings of the run, stored under ``"config"`` (the evaluation's
            own settings are added under ``config["evaluation"]``).
        real: also code every clean and adversarial image into real bitstreams (``bpp`` is
            then the real rate; otherwise it is the estimate).
        progress: tqdm bar over attack iterations (with an ETA).
        batch_size: attack this many equal-size images together; every attack of one gradient
            path and schedule runs as samples of one batch (per-image results do not depend on either with
            ``quant="ste"``).
        adversarial: if a dict is given, it receives ``{spec: {image name: x_adv [3,H,W]}}``
            (e.g. for :func:`transfer_matrix`).

    Returns:
        The results dict described in the module docstring, plus ``"findings"`` (list of str).
    """
    items = _as_images(images)
    specs = parse_attacks(list(attacks), quant, iterations, schedule)
    extra = parse_attacks(list(worst_case), quant, iterations, schedule) if worst_case else {}
    members = []
    for key, spec in extra.items():
        same = [k for k, v in specs.items() if v == spec]
        members.append(same[0] if same else key)
        if not same:
            specs[key] = spec
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    for _, t in items:
        if not t.is_floating_point():
            raise ValueError(f"images must be float tensors in [0, 1], got {t.dtype}")
    kinds = {k: v[0] for k, v in specs.items()}
    device = next(model.parameters()).device
    modes = [(m, m.training) for m in model.modules()]
    per_image: List[Dict[str, Any]] = [None] * len(items)  # type: ignore[list-item]
    by_call: Dict[Tuple[str, str], List[str]] = {}  # one batched call per (path, schedule)
    for key, (_, q, _, sch) in specs.items():
        by_call.setdefault((q, sch), []).append(key)
    # under torchrun each rank takes every size-th group of images; rows are gathered below,
    # so the results equal a single process's (the same groups, seeds and batches)
    rank, size = distributed.world()
    mine = list(_groups(items, batch_size))[rank::size]
    total = sum(map(len, mine)) * restarts * sum(v[2] for v in specs.values())
    try:
        model.eval()
        if real:
            update_entropy_tables(model)
        bar = tqdm(total=total, desc=f"evaluate {name}", unit="it",
                   disable=not progress or rank > 0)
        for idx in mine:
            x = torch.stack([items[i][1] for i in idx]).to(device)
            n = len(idx)
            clean = _measure(model, x, x, real)
            rows = [{"name": items[i][0], "height": int(x.shape[-2]), "width": int(x.shape[-1]),
                     **{k: clean[k][j] for k in CLEAN_KEYS}, "attacks": {}}
                    for j, i in enumerate(idx)]
            for (q, sch), keys in by_call.items():
                adv = _attacks.attack(
                    model, x.repeat(len(keys), 1, 1, 1), [specs[k][0] for k in keys for _ in idx],
                    eps=eps, iterations=[specs[k][2] for k in keys for _ in idx], lr=lr, quant=q,
                    seed=seed, to_uint8=to_uint8, schedule=sch, keep_best=keep_best,
                    restarts=restarts, rate_tol=rate_tol, psnr_tol=psnr_tol)
                att = _measure(model, x.repeat(len(keys), 1, 1, 1), adv["x_adv"], real)
                for s, key in enumerate(keys):
                    for j, row in enumerate(rows):
                        b = s * n + j
                        nmse = float(adv["noise_mse"][b])
                        r = {"psnr-rgb": att["psnr-rgb"][b], "ms-ssim-rgb": att["ms-ssim-rgb"][b],
                             "bpp": att["bpp"][b], "bpp-est": att["bpp-est"][b],
                             "delta-psnr": (None if att["psnr-rgb"][b] is None
                                            or row["psnr-rgb"] is None
                                            else att["psnr-rgb"][b] - row["psnr-rgb"]),
                             "delta-bpp": att["bpp"][b] - row["bpp"],
                             "noise-mse": nmse, "noise-psnr": _num(psnr_from_mse(nmse)),
                             "budget-use": nmse / eps,
                             "best-iteration": int(adv["best_iteration"][b]),
                             "restart": int(adv["restart"][b]),
                             "seconds": adv["seconds"] / (n * len(keys))}
                        r["held"] = _held(specs[key][0], r, row, rate_tol, psnr_tol)
                        row["attacks"][key] = r
                        if adversarial is not None:
                            adversarial.setdefault(key, {})[row["name"]] = \
                                adv["x_adv"][b].detach().cpu()
                bar.update(n * restarts * sum(specs[k][2] for k in keys))
            for row in rows:
                for which in ("psnr", "bpp"):
                    w = _worst(row, members, kinds, which) if members else None
                    if w is not None:
                        row["attacks"][f"worst-{which}"] = w
            for j, i in enumerate(idx):
                per_image[i] = rows[j]
        bar.close()
    finally:
        for m, t in modes:
            m.training = t
    if size > 1:
        for part in distributed.gather({i: per_image[i] for idx in mine for i in idx}):
            for i, row in part.items():
                per_image[i] = row
        if adversarial is not None:
            for part in distributed.gather(dict(adversarial)):
                for key, imgs in part.items():
                    adversarial.setdefault(key, {}).update(imgs)

    blocks = {key: {"eps": _num(eps), "iterations": it, "lr": _num(lr), "quant": q,
                    "kind": kind, "schedule": sch} for key, (kind, q, it, sch) in specs.items()}
    for which in ("psnr", "bpp"):
        wk = f"worst-{which}"
        if members and all(wk in r["attacks"] for r in per_image):
            wins = {m: sum(r["attacks"][wk]["winner"] == m for r in per_image) for m in members}
            blocks[wk] = {"eps": _num(eps), "members": members, "wins": wins, "quant": "worst",
                          "iterations": max(specs[m][2] for m in members), "lr": _num(lr)}
    for key, block in blocks.items():
        vals = [r["attacks"][key] for r in per_image]
        block["results"] = {k: [_mean(v[k] for v in vals)] for k in ATTACK_KEYS}
        block["stderr"] = {k: stats.mean_se([v[k] for v in vals])["se"]
                           for k in ("psnr-rgb", "bpp", "delta-psnr", "delta-bpp")}
        block["held"] = sum(bool(v["held"]) for v in vals)
    findings = _findings(per_image, specs, members)
    if findings and progress:
        print(f"{name}: {len(findings)} finding(s):\n  " + "\n  ".join(findings))
    settings = {"attacks": list(specs), "worst_case": members, "eps": eps,
                "iterations": {k: v[2] for k, v in specs.items()}, "lr": lr, "quant": quant,
                "seed": seed, "to_uint8": to_uint8, "real": real, "n_images": len(items),
                "batch_size": batch_size, "restarts": restarts, "schedule": schedule,
                "keep_best": keep_best, "rate_tol": rate_tol, "psnr_tol": psnr_tol,
                "protocol": PROTOCOL}
    results = {
        "name": str(name),
        "description": str(description),
        "dataset": str(dataset),
        "config": {**_plain(dict(config or {})), "evaluation": _plain(settings)},
        "results": {k: [_mean(r[k] for r in per_image)] for k in CLEAN_KEYS},
        "stderr": {k: stats.mean_se([r[k] for r in per_image])["se"] for k in ("psnr-rgb", "bpp")},
        "attacks": blocks,
        "per_image": per_image,
        "findings": findings,
    }
    return _plain(results)


def transfer_matrix(models: Mapping[str, torch.nn.Module], images: Images, attack: str = "psnr",
                    eps: float = 5e-4, iterations: int = 100, quant: str = "ste", seed: int = 0,
                    adversarial: Optional[Mapping[str, Mapping[str, torch.Tensor]]] = None,
                    progress: bool = True, tol_db: float = 0.1, tol_rate: float = 0.01,
                    **attack_kw) -> Dict[str, Any]:
    """Transfer attacks: images attacked on each source model, coded by every target model.

    Entry ``[s][t]`` is the mean change (real bitstreams) of target ``t`` under the attack
    crafted on source ``s``; the diagonal is the white-box attack. A target hurt *more* by a
    transferred attack than by the white-box attack on itself (paired per image, the 95 %
    bootstrap interval of the difference excluding zero, and the mean difference at least
    ``tol_db`` dB or ``tol_rate`` of the target's clean rate) is flagged as likely gradient
    masking (Athalye et al. 2018): its own gradients mislead the attack.

    Args:
        models: ``{name: codec}``, sources and targets alike.
        images: as for :func:`evaluate_robustness`.
        attack: one attack spec (``kind[@quant][:iterations]``).
        adversarial: optional precomputed ``{source name: {image name: x_adv}}`` (e.g. filled
            by :func:`evaluate_robustness` with the same spec); missing sources are attacked.
        attack_kw: further arguments of :func:`nic_core.attacks.attack` (restarts, ...).

    Returns:
        ``{"attack", "eps", "models", "delta-psnr": [[...]], "delta-bpp": [[...]],
        "per_image": {source: {target: {image: {"delta-psnr", "delta-bpp"}}}}, "masking": [...]}``
    """
    items = _as_images(images)
    kind, q, it, sch = _attacks.parse_spec(attack, quant, iterations)
    if sch is not None:
        attack_kw["schedule"] = sch
    names = list(models)
    if not names:
        raise ValueError("transfer_matrix needs at least one model")
    adv_by_source: Dict[str, Dict[str, torch.Tensor]] = {}
    bar = tqdm(total=len(names) * len(items), desc=f"transfer {attack}", disable=not progress)
    for src in names:
        given = (adversarial or {}).get(src)
        if given is not None:
            missing = [n for n, _ in items if n not in given]
            if missing:
                raise ValueError(f"adversarial images of {src!r} lack {missing}")
            adv_by_source[src] = {n: given[n] for n, _ in items}
        else:
            m = models[src]
            dev = next(m.parameters()).device
            adv_by_source[src] = {}
            for n, t in items:
                out = _attacks.attack(m, t[None].to(dev), kind, eps=eps, iterations=it, quant=q,
                                      seed=seed, **attack_kw)
                adv_by_source[src][n] = out["x_adv"][0].detach().cpu()
        bar.update(len(items))
    bar.close()
    per: Dict[str, Dict[str, Dict[str, Dict[str, float]]]] = {}
    clean_bpp: Dict[str, float] = {}
    for tgt in names:
        m = models[tgt]
        dev = next(m.parameters()).device
        modes = [(mod, mod.training) for mod in m.modules()]
        m.eval()
        update_entropy_tables(m)
        try:
            for n, t in items:
                x = t[None].to(dev)
                c = _measure(m, x, x, True)
                clean_bpp[tgt] = clean_bpp.get(tgt, 0.0) + c["bpp"][0] / len(items)
                for src in names:
                    a = _measure(m, x, adv_by_source[src][n][None].to(dev), True)
                    per.setdefault(src, {}).setdefault(tgt, {})[n] = {
                        "delta-psnr": a["psnr-rgb"][0] - c["psnr-rgb"][0],
                        "delta-bpp": a["bpp"][0] - c["bpp"][0]}
        finally:
            for mod, tr in modes:
                mod.training = tr
    mat = {k: [[_mean(v[k] for v in per[s][t].values()) for t in names] for s in names]
           for k in ("delta-psnr", "delta-bpp")}
    masking = []
    side = _attacks.side(kind)
    key = "delta-psnr" if side == "psnr" else "delta-bpp"
    sign = 1.0 if side == "psnr" else -1.0  # more harm: lower delta-psnr / higher delta-bpp
    for tgt in names:
        own = per[tgt][tgt]
        for src in names:
            if src == tgt or side is None:
                continue
            diffs = [sign * (per[src][tgt][n][key] - own[n][key]) for n in own]
            ci = stats.bootstrap_ci(diffs)
            tol = tol_db if side == "psnr" else tol_rate * clean_bpp[tgt]
            if ci["hi"] < 0 and ci["mean"] <= -tol:
                masking.append({"target": tgt, "source": src, "key": key,
                                "transfer": _mean(per[src][tgt][n][key] for n in own),
                                "white-box": _mean(own[n][key] for n in own),
                                "ci": sorted([sign * ci["lo"], sign * ci["hi"]])})
    for f in masking:
        print(f"GRADIENT MASKING? {f['target']!r} is hurt more by the {attack} attack crafted on "
              f"{f['source']!r} ({f['key']} {f['transfer']:+.3f}) than by the white-box attack "
              f"on itself ({f['white-box']:+.3f})")
    return _plain({"attack": attack, "eps": eps, "iterations": it, "quant": q, "models": names,
                   **mat, "clean-bpp": clean_bpp, "tol_db": tol_db, "tol_rate": tol_rate,
                   "per_image": per, "masking": masking})


def saturation(model: torch.nn.Module, images: Images, attack: str = "psnr",
               iterations: Sequence[int] = (50, 100, 200, 400), eps: float = 5e-4,
               tol_db: float = 0.1, tol_rate: float = 0.01, **kw) -> Dict[str, Any]:
    """Attack strength against its number of iterations (one evaluation, all counts batched).

    ``saturated_at`` is the first count after which the next one (e.g. a doubling) changes the
    mean attacked PSNR by less than ``tol_db`` (psnr-side) or the mean rate by less than
    ``tol_rate`` relative (bpp-side); ``None`` when the sweep never gets there: the attack is
    not saturated and more iterations are needed for a trustworthy number.
    """
    counts = sorted({int(i) for i in iterations})
    if len(counts) < 2:
        raise ValueError("a saturation sweep needs at least 2 iteration counts")
    kind, q, _, sch = _attacks.parse_spec(attack, kw.pop("quant", "ste"))
    specs = [f"{kind}@{q}:{n}" + (f"/{sch}" if sch else "") for n in counts]
    res = evaluate_robustness(model, images, attacks=specs, eps=eps, quant=q, iterations=counts[0],
                              **kw)
    keys = list(res["attacks"])
    rows = [{"iterations": n, **{k: res["attacks"][key]["results"][k][0]
                                 for k in ("psnr-rgb", "bpp", "delta-psnr", "delta-bpp")}}
            for n, key in zip(counts, keys)]
    sat = _saturated_at(rows, _attacks.side(kind), tol_db, tol_rate)
    return {"name": res["name"], "attack": attack, "eps": eps, "rows": rows,
            "saturated_at": sat, "tol_db": tol_db, "tol_rate": tol_rate,
            "clean": {k: res["results"][k][0] for k in ("psnr-rgb", "bpp")},
            "n_images": len(res["per_image"])}


def _saturated_at(rows, side, tol_db: float, tol_rate: float) -> Optional[int]:
    """The smallest count from which every further step of the sweep changes the mean attacked
    PSNR by less than ``tol_db`` (rate: relatively by less than ``tol_rate``)."""
    sat = None
    for a, b in reversed(list(zip(rows, rows[1:]))):
        if side == "bpp":
            ok = abs(b["bpp"] / a["bpp"] - 1) < tol_rate
        else:
            ok = abs(b["psnr-rgb"] - a["psnr-rgb"]) < tol_db
        if not ok:
            break
        sat = a["iterations"]
    return sat


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


def _named_paths(pairs: Sequence[str], what: str) -> Dict[str, str]:
    out = {}
    for p in pairs:
        name, sep, path = p.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise SystemExit(f"{what} must be NAME=PATH, got {p!r}")
        if not Path(path).is_file():
            raise SystemExit(f"{what} {name!r}: file not found: {path}")
        out[name.strip()] = path.strip()
    return out


def main(argv=None) -> int:
    """``python -m nic_core.evaluate transfer|saturation ...`` (evaluation settings from ``-f`` /
    ``-p`` like ``python -m nic_core.runs``: eval_set, eval_limit, eval_crop, eps, ...).

    transfer: ``--model NAME=CHECKPOINT`` (two or more) ``[--adversarial NAME=ADV.pt]`` (saved
    by ``python -m nic_core.runs ... --eval-only --adversarial``) ``--attack SPEC``.
    saturation: ``--model NAME=CHECKPOINT`` (one or more) ``--attack SPEC --iterations 50,100,...``.
    """
    from . import checkpoints, config, runs, viz  # CLI only: runs and viz import this module

    ap = argparse.ArgumentParser(prog="python -m nic_core.evaluate", description=main.__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["transfer", "saturation"])
    ap.add_argument("--model", action="append", default=[], metavar="NAME=CHECKPOINT")
    ap.add_argument("--adversarial", action="append", default=[], metavar="NAME=ADV.pt")
    ap.add_argument("--attack", default="psnr", help="attack spec kind[@quant][:iters][/schedule]")
    ap.add_argument("--iterations", default="50,100,200,400", help="saturation: counts")
    ap.add_argument("-f", "--params", help="YAML parameter file (evaluation settings)")
    ap.add_argument("-p", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    ap.add_argument("--out", required=True, help="results JSON")
    ap.add_argument("--plot", help="also save a figure (PNG)")
    args = ap.parse_args(argv)
    cfg = config.validate("pretrain", config.cli_params(args.params, args.p))
    device = runs.setup(cfg)
    ckpts = _named_paths(args.model, "--model")
    if not ckpts or (args.command == "transfer" and len(ckpts) < 2):
        ap.error("transfer needs two or more --model NAME=CHECKPOINT; saturation one or more")
    models = {n: checkpoints.load_model(p, device=device) for n, p in ckpts.items()}
    images, desc = runs.test_images(cfg)
    kw = dict(eps=cfg["eps"], quant=cfg["attack_quant"], seed=cfg["seed"])
    if args.command == "transfer":
        adv = {n: torch.load(p, weights_only=True) for n, p in
               _named_paths(args.adversarial, "--adversarial").items()}
        spec_key = args.attack
        given = {n: a[spec_key] for n, a in adv.items() if spec_key in a}
        for n, a in adv.items():
            if spec_key not in a:
                raise SystemExit(f"{n}'s adversarial file has no {spec_key!r} (has {list(a)})")
        res = transfer_matrix(models, images, args.attack, iterations=cfg["attack_iterations"],
                              adversarial=given, progress=cfg["progress"],
                              schedule=cfg["attack_schedule"], lr=cfg["attack_lr"], **kw)
        res["dataset"] = desc
        fig = viz.plot_transfer(res) if args.plot else None
    else:
        counts = [int(c) for c in args.iterations.split(",") if c.strip()]
        res = {"dataset": desc, "sweeps": [
            {**saturation(m, images, args.attack, counts, name=n, progress=cfg["progress"],
                          schedule=cfg["attack_schedule"], lr=cfg["attack_lr"],
                          batch_size=cfg["eval_batch"], **kw), "name": n}
            for n, m in models.items()]}
        fig = viz.plot_saturation(res["sweeps"]) if args.plot else None
    save_results(res, args.out)
    print(f"saved {args.out}")
    if fig is not None:
        fig.savefig(args.plot, dpi=120, bbox_inches="tight")
        print(f"saved {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
