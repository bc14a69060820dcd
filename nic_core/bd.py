"""Matched-rate rulers under attack (issue 33, ruler b): each method's R-D curve *under attack*
against another's, as Bjontegaard deltas (the ``bjontegaard`` package, Akima interpolation),
per image and then paired over the images.

A defence that moves its clean point along the R-D curve changes its damage without being more
robust; comparing whole curves at the rates both cover removes that. For each method the curve
is its four rate points (lmbda 0.0018, 0.0035, 0.013, 0.0483: each Stage I / II model and
baseline trained from the pretrained codec of that rate, :data:`CURVES`). Per image:

* BD-PSNR under the psnr attack: PSNR under the worst quality-side attack against the real rate
  of the attacked image (held within 5 % of clean), b's curve minus a's, in dB;
* BD-rate under the bpp attack: rate under the worst rate-side attack against its PSNR, b's
  curve against a's, in % (negative: b's attacked rate lower at equal quality);
* the clean BD-rate beside them: the clean cost of the defence.

Each is then :func:`nic_core.stats.paired_test` over the images, with Benjamini-Hochberg over
every row of the table (:func:`nic_core.claims.decide`).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import bjontegaard
import pandas as pd

from . import claims, stats

RATES = ("q1", "q2", "q4", "q6")  # lmbda 0.0018, 0.0035, 0.013, 0.0483
CURVES = {"pretrained": [f"pretrained-{q}" for q in RATES],
          **{m: [m if q == "q4" else f"{m}-{q}" for q in RATES]
             for m in ("teacher", "pkdt", "adv", "ma2023")}}
RULERS = (("BD-PSNR under the psnr attack (dB)", "worst-psnr", "psnr"),
          ("BD-rate under the bpp attack (%)", "worst-bpp", "rate"),
          ("clean BD-rate (%)", None, "rate"))


def _points(found, keys: List[str], attack: Optional[str]) -> Dict[str, List[Tuple[float, float]]]:
    """Per image, the curve's (rate, PSNR) points, clean or under ``attack``."""
    per: Dict[str, List[Tuple[float, float]]] = {}
    for key in keys:
        bpp = stats.per_image_values(found[key], attack, "bpp")
        q = stats.per_image_values(found[key], attack, "psnr-rgb")
        for n in bpp:
            per.setdefault(n, []).append((bpp[n], q[n]))
    return {n: sorted(p) for n, p in per.items() if len(p) == len(keys)}


def per_image_bd(found, a: str, b: str, attack: Optional[str], what: str) -> Dict[str, float]:
    """``{image: BD}`` of method ``b``'s curve against ``a``'s (``what``: "psnr" in dB or
    "rate" in %), clean (``attack=None``) or under ``attack``; images whose curves overlap too
    little for ``bjontegaard`` are left out."""
    pa, pb = _points(found, CURVES[a], attack), _points(found, CURVES[b], attack)
    fn = bjontegaard.bd_psnr if what == "psnr" else bjontegaard.bd_rate
    out = {}
    for n in pa:
        if n not in pb:
            continue
        (ra, da), (rb, db) = zip(*pa[n]), zip(*pb[n])
        try:
            out[n] = float(fn(list(ra), list(da), list(rb), list(db), method="akima",
                              require_matching_points=False))
        except (ValueError, AssertionError):
            continue  # too little overlap between the two curves on this image
    return out


def table(found: Dict[str, Dict[str, Any]]) -> pd.DataFrame:
    """One row per comparison (:data:`nic_core.claims.GRID_COMPARISONS`) and ruler: the mean
    per-image Bjontegaard delta, its 95 % t-interval, sign-flip p, BH q over the table and the
    verdict (in the paper's direction: higher BD-PSNR, lower BD-rate under attack); the clean
    BD-rate rows carry no verdict. Comparisons missing a curve point are left out."""
    rows, tests = [], []
    for what, a, b in claims.GRID_COMPARISONS:
        if not all(k in found for k in CURVES[a] + CURVES[b]):
            continue
        for ruler, attack, unit in RULERS:
            d = per_image_bd(found, a, b, attack, unit)
            if len(d) < 2:
                continue
            rows.append({"comparison": what, "ruler": ruler})
            tests.append({**stats.paired_test(list(d.values())),
                          "good": 1 if unit == "psnr" else -1, "clean": attack is None})
    judged = claims.decide([t for t in tests if not t["clean"]])
    it = iter(judged)
    out = []
    for r, t in zip(rows, tests):
        v = t if t["clean"] else next(it)
        out.append({**r, "images": v["n"], "mean": round(v["mean"], 2),
                    "95% CI": f"[{v['lo']:+.2f}, {v['hi']:+.2f}]", "p": f"{v['p']:.3g}",
                    "q (BH)": "" if t["clean"] else f"{v['q']:.3g}",
                    "verdict": "(the clean cost)" if t["clean"] else v["verdict"]})
    return pd.DataFrame(out)
