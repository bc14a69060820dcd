"""The worst case over an attack ensemble, and what a reviewer must see of an evaluation.

Per image, :func:`worst` takes the lowest PSNR (``psnr``) or highest rate (``bpp``) over the
ensemble's members among the results that *held* the other quantity (:func:`held`: the rate
within ``rate_tol`` for the quality side, the PSNR drop within ``psnr_tol`` dB for the rate
side, as eq. 6 / eq. 7 of arXiv 2403.06700 demand); :func:`findings` lists unused budget,
results that did not hold and random noise beating the gradient attacks (gradient masking?);
:func:`attack_blocks` / :func:`summarise` are the results file's ``"attacks"`` summaries.
:func:`nic_core.evaluate.evaluate_robustness` calls them.
"""
from __future__ import annotations

import copy
from typing import Any, Dict, List, Mapping, Optional, Sequence

from . import attacks as _attacks
from . import stats
from .results import ATTACK_KEYS, mean_or_none, plain_number

Spec = tuple  # (kind, quant, iterations, schedule), as nic_core.evaluate.parse_attacks gives


def held(kind: str, att: Mapping[str, Any], clean: Mapping[str, Any], rate_tol: float,
          psnr_tol: float) -> bool:
    """Did this attacked result hold the other quantity (real bitstream rate, PSNR)?"""
    side = _attacks.side(kind)
    if side == "psnr" and clean["bpp"]:
        return abs(att["bpp"] / clean["bpp"] - 1) <= rate_tol
    if side == "bpp" and att["psnr-rgb"] is not None and clean["psnr-rgb"] is not None:
        return clean["psnr-rgb"] - att["psnr-rgb"] <= psnr_tol
    return True


def worst(row: Dict[str, Any], members: Sequence[str], kinds: Mapping[str, str],
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


def findings(per_image, specs, members) -> List[str]:
    """What a reviewer must see: unused budget, results that did not hold, noise beating the
    gradient attacks (a sign of gradient masking)."""
    notes = []
    for row in per_image:
        for key, (kind, *_) in specs.items():
            a = row["attacks"][key]
            if kind in ("psnr", "bpp", "pgd-l2-psnr", "pgd-l2-bpp", "apgd-psnr", "apgd-bpp") and a["budget-use"] < 0.95:
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


def add_worst(rows: List[Dict[str, Any]], members: Sequence[str],
               specs: Mapping[str, Spec]) -> None:
    """Each row's ``worst-psnr`` / ``worst-bpp`` over the ensemble ``members`` (if any)."""
    kinds = {k: v[0] for k, v in specs.items()}
    for row in rows:
        for which in ("psnr", "bpp"):
            w = worst(row, members, kinds, which) if members else None
            if w is not None:
                row["attacks"][f"worst-{which}"] = w


def attack_blocks(per_image: List[Dict[str, Any]], specs: Mapping[str, Spec],
                   members: List[str], eps: float, lr: Optional[float]) -> Dict[str, Any]:
    """The ``"attacks"`` summary: settings, means, standard errors and held count per attack,
    and the worst-case rows with how often each member won."""
    blocks = {key: {"eps": plain_number(eps), "iterations": it, "lr": plain_number(lr), "quant": q,
                    "kind": kind, "schedule": sch} for key, (kind, q, it, sch) in specs.items()}
    for which in ("psnr", "bpp"):
        wk = f"worst-{which}"
        if members and all(wk in r["attacks"] for r in per_image):
            wins = {m: sum(r["attacks"][wk]["winner"] == m for r in per_image) for m in members}
            blocks[wk] = {"eps": plain_number(eps), "members": members, "wins": wins, "quant": "worst",
                          "iterations": max(specs[m][2] for m in members), "lr": plain_number(lr)}
    for key, block in blocks.items():
        block.update(summarise([r["attacks"][key] for r in per_image]))
    return blocks


def summarise(vals: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
    """An attack block's ``results`` (means), ``stderr`` and ``held`` count over the images'
    attacked rows ``vals`` (one per image)."""
    return {"results": {k: [mean_or_none(v[k] for v in vals)] for k in ATTACK_KEYS},
            "stderr": {k: stats.mean_se([v[k] for v in vals])["se"]
                       for k in ("psnr-rgb", "bpp", "delta-psnr", "delta-bpp")},
            "held": sum(bool(v["held"]) for v in vals)}


def rejudge(results: Mapping[str, Any], rate_tol: float,
            psnr_tol: Optional[float] = None) -> Dict[str, Any]:
    """``results`` with every member's ``held`` and each image's worst case taken again under
    another acceptance rule (issue 33's sensitivity: does the 5 % rate hold decide a verdict?).

    Each member keeps the iterate its attack chose under the original rule; only which members
    count as held changes (a looser rule may also have let the attack keep a stronger iterate:
    the sensitivity is a lower bound on what the rule moves). The worst-case blocks' means,
    errors and wins are recomputed; ``config.evaluation`` records the new rule.

    Raises:
        ValueError: a file without a worst case, or one nested over two budgets
            (:func:`nic_core.budgets.nest`: rejudge both files, then nest them again).
    """
    ev = (results.get("config") or {}).get("evaluation") or {}
    if ev.get("nested"):
        raise ValueError(f"{results.get('name')!r} is nested over two budgets: rejudge its two "
                         "files and nest them again")
    members = (results.get("attacks", {}).get("worst-psnr") or {}).get("members")
    if not members:
        raise ValueError(f"{results.get('name')!r} has no worst case to rejudge")
    psnr_tol = ev.get("psnr_tol", 1.0) if psnr_tol is None else psnr_tol
    out = copy.deepcopy(dict(results))
    kinds = {m: _attacks.parse_spec(m)[0] for m in members}
    for row in out["per_image"]:
        for m in members:
            row["attacks"][m]["held"] = held(kinds[m], row["attacks"][m], row, rate_tol, psnr_tol)
        for which in ("psnr", "bpp"):
            row["attacks"][f"worst-{which}"] = worst(row, members, kinds, which)
    for which in ("psnr", "bpp"):
        block, rows = out["attacks"][f"worst-{which}"], out["per_image"]
        block["wins"] = {m: sum(r["attacks"][f"worst-{which}"]["winner"] == m for r in rows)
                         for m in members}
        block.update(summarise([r["attacks"][f"worst-{which}"] for r in rows]))
    out["config"] = {**out.get("config", {}), "evaluation": {**ev, "rate_tol": rate_tol,
                                                             "psnr_tol": psnr_tol}}
    return out
