"""Uncertainty of the numbers in the tables: standard errors, paired bootstrap intervals.

A difference between two models evaluated on the same images is judged on the per-image paired
differences (the images are the dominant source of spread). The verdicts use
:func:`paired_test`: a Student-t interval and a sign-flip permutation p-value (both honest for
the 4-24 images of this study, where a percentile bootstrap is too narrow), then
Benjamini-Hochberg over every comparison of a table (:func:`fdr`). :func:`bootstrap_ci`
(percentile bootstrap, Efron & Tibshirani 1993) remains for the descriptive tables.
"""
from __future__ import annotations

import math
import random
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
import scipy.stats

__all__ = ["mean_se", "bootstrap_ci", "paired_test", "fdr", "paired_difference",
           "per_image_values", "interpolate_rd", "format_ci"]

EXACT_UP_TO = 16  # images: the sign-flip p-value enumerates all 2^n flips up to here
SIGN_FLIPS = 20000  # random sign flips beyond (seeded; Monte Carlo error ~0.002 at p = 0.05)


def mean_se(values: Sequence[Optional[float]]) -> Dict[str, Optional[float]]:
    """Mean and standard error of the mean (sample std / sqrt(n)); ``None`` entries skipped."""
    vals = [float(v) for v in values if v is not None]
    n = len(vals)
    if n == 0:
        return {"mean": None, "se": None, "n": 0}
    m = sum(vals) / n
    se = math.sqrt(sum((v - m) ** 2 for v in vals) / (n - 1) / n) if n > 1 else None
    return {"mean": m, "se": se, "n": n}


def bootstrap_ci(values: Sequence[float], level: float = 0.95, n_boot: int = 10000,
                 seed: int = 0) -> Dict[str, Any]:
    """Mean of ``values`` with a percentile bootstrap interval (resampling the values)."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        raise ValueError("no values to bootstrap")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level!r}")
    rng = random.Random(seed)
    n = len(vals)
    means = sorted(sum(rng.choice(vals) for _ in range(n)) / n for _ in range(n_boot))
    lo = means[int(math.floor((1 - level) / 2 * (n_boot - 1)))]
    hi = means[int(math.ceil((1 + level) / 2 * (n_boot - 1)))]
    ms = mean_se(vals)
    return {"mean": ms["mean"], "se": ms["se"], "lo": lo, "hi": hi, "level": level, "n": n,
            "zero_in_ci": lo <= 0 <= hi}


def paired_test(diffs: Sequence[float], level: float = 0.95, seed: int = 0) -> Dict[str, Any]:
    """Mean of paired differences with a Student-t interval (``scipy.stats.ttest_1samp``) and
    a two-sided sign-flip p-value (``scipy.stats.permutation_test``, the differences' signs
    flipped: exact over all 2^n flips for n <= :data:`EXACT_UP_TO`, else :data:`SIGN_FLIPS`
    seeded random flips). With 4 images the sign-flip p-value cannot go below 0.125.

    Raises:
        ValueError: fewer than 2 differences.
    """
    d = np.asarray([float(v) for v in diffs if v is not None], dtype=float)
    if len(d) < 2:
        raise ValueError(f"a paired test needs at least 2 differences, got {len(d)}")
    n = len(d)
    if np.ptp(d) == 0:  # no spread: t is undefined, every flip of equal values is as extreme
        lo = hi = float(d[0])
        p_t = 0.0 if d[0] != 0 else 1.0
    else:
        t = scipy.stats.ttest_1samp(d, 0.0)
        ci = t.confidence_interval(level)
        lo, hi, p_t = float(ci.low), float(ci.high), float(t.pvalue)
    exact = n <= EXACT_UP_TO
    perm = scipy.stats.permutation_test(
        (d,), np.mean, permutation_type="samples", vectorized=True, alternative="two-sided",
        n_resamples=np.inf if exact else SIGN_FLIPS, random_state=seed)
    mean = float(d.mean())
    return {"mean": mean, "se": float(d.std(ddof=1) / math.sqrt(n)), "lo": lo, "hi": hi,
            "level": level, "n": n, "p_t": p_t, "p": float(perm.pvalue), "exact": exact,
            "zero_in_ci": lo <= 0 <= hi}


def fdr(p_values: Sequence[float]) -> List[float]:
    """Benjamini-Hochberg adjusted p-values (``scipy.stats.false_discovery_control``): a
    comparison is a discovery at FDR 5 % when its value is below 0.05."""
    if len(p_values) == 0:
        return []
    return [float(q) for q in scipy.stats.false_discovery_control(np.asarray(p_values),
                                                                   method="bh")]


def per_image_values(results: Mapping[str, Any], attack: Optional[str] = None,
                     key: str = "psnr-rgb") -> Dict[str, float]:
    """``{image name: value}`` of one results file, clean (``attack=None``) or under an attack."""
    out = {}
    for row in results.get("per_image", []):
        src = row if attack is None else (row.get("attacks") or {}).get(attack)
        if src is None:
            raise ValueError(f"{results.get('name')!r} has no attack {attack!r} for image "
                             f"{row.get('name')!r}")
        if src.get(key) is not None:
            out[row["name"]] = float(src[key])
    return out


def paired_difference(a: Mapping[str, Any], b: Mapping[str, Any], attack: Optional[str] = None,
                      key: str = "psnr-rgb", level: float = 0.95, n_boot: int = 10000,
                      seed: int = 0) -> Dict[str, Any]:
    """``b - a`` per image (matched by name) for one attack and key, with a bootstrap interval.

    Raises:
        ValueError: when the two results share no image.
    """
    va, vb = per_image_values(a, attack, key), per_image_values(b, attack, key)
    common = [n for n in va if n in vb]
    if not common:
        raise ValueError(f"{a.get('name')!r} and {b.get('name')!r} share no image")
    diffs = [vb[n] - va[n] for n in common]
    return {**bootstrap_ci(diffs, level, n_boot, seed), "a": a.get("name"), "b": b.get("name"),
            "attack": attack, "key": key, "images": common}


def interpolate_rd(points: Sequence[Sequence[float]], bpp: float) -> Optional[float]:
    """Quality at rate ``bpp`` on a piecewise-linear curve in log(bpp) through ``points``
    ``[(bpp, quality), ...]`` (>= 2 points); ``None`` outside their range (no extrapolation).

    The matched-operating-point view: a defence that lowers the clean rate moves along the R-D
    curve, so its robustness is compared with the undefended curve *at its own clean rate*.
    """
    pts = sorted((float(r), float(q)) for r, q in points)
    if len(pts) < 2:
        raise ValueError("an R-D curve needs at least 2 points")
    if not pts[0][0] <= bpp <= pts[-1][0]:
        return None
    for (r0, q0), (r1, q1) in zip(pts, pts[1:]):
        if r0 <= bpp <= r1:
            if r1 == r0:
                return q0
            t = (math.log(bpp) - math.log(r0)) / (math.log(r1) - math.log(r0))
            return q0 + t * (q1 - q0)
    return None  # pragma: no cover


def format_ci(d: Mapping[str, Any], digits: int = 2) -> str:
    """``-0.42 [-0.61, -0.20]`` (or ``... (CI contains 0)``) for a paired difference."""
    s = f"{d['mean']:+.{digits}f} [{d['lo']:+.{digits}f}, {d['hi']:+.{digits}f}]"
    return s + (" (CI contains 0)" if d["zero_in_ci"] else "")


