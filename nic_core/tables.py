"""The reproduction's tables, from committed results files only (notebook 05, ``make figures``).

:data:`nic_core.registry.RUNS` names every results file a table or figure reads, beside the
command that makes it (:func:`load` turns a missing one into a note naming that command).
Tables 1 and 2 put ours beside the paper's numbers (Cao et al., "Enhancing Adversarial Training
with Prior Knowledge Distillation for Robust Image Compression", arXiv 2403.06700); the verdict
per claim is in :mod:`nic_core.claims`; :func:`seeds` sets the seed-to-seed spread beside the method-to-method differences;
:func:`matched_rate` compares each defended codec with the pretrained R-D curve at its own clean
rate; :func:`codecs` sets every codec against JPEG. Plots are in :mod:`nic_core.figures`, the
tuning on the validation split in :mod:`nic_core.tuning`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pandas as pd

from . import stats
from .jpeg import margin_over_jpeg
from .registry import (JPEG_ON, LABELS, LONG, METHODS, OTHER_RATES, PRETRAINED, RUNS, TABLE1_AT,
                       VARIANTS, WIDE, at_q4long)
from .results import load_results

BLOCKS = (("clean", None), ("psnr attack", "worst-psnr"), ("bpp attack", "worst-bpp"))
# robustness per image: PSNR change under the psnr attack (dB), rate change under the bpp
# attack (% of the clean rate); mean and standard error over the images
DAMAGE = (("dPSNR psnr attack (dB)", "worst-psnr", "delta-psnr", False),
          ("dbpp bpp attack (%)", "worst-bpp", "delta-bpp", True))


def load(root=".") -> Tuple[Dict[str, Dict[str, Any]], List[str]]:
    """The committed results found under ``root`` and a note per missing one."""
    found, notes = {}, []
    for key, (path, cmd) in RUNS.items():
        p = Path(root) / path
        if p.is_file():
            found[key] = load_results(p)
        else:
            notes.append(f"missing {path}: made by `{cmd}`")
    return found, notes


def table_cell(r: Dict[str, Any], kind: Optional[str], key: str) -> Optional[float]:
    res = r["results"] if kind is None else (r.get("attacks", {}).get(kind) or {}).get("results")
    v = (res or {}).get(key, [None])[-1]
    return None if v is None else float(v)


def table(found: Dict[str, Dict[str, Any]], rows, paper: Dict[str, tuple]) -> pd.DataFrame:
    """Ours beside the paper's: one row per (method, source), columns (block, bpp/psnr/±)."""
    records = []
    for key in rows:
        if key in found:
            r = found[key]
            rec = {"method": LABELS[key], "source": "ours (CPU)"}
            for label, kind in BLOCKS:
                rec[(label, "bpp")] = table_cell(r, kind, "bpp")
                rec[(label, "psnr")] = table_cell(r, kind, "psnr-rgb")
            for label, kind, dkey, scale in DAMAGE:
                d = [v * (100 / c if scale else 1) for v, c in zip(
                    stats.per_image_values(r, kind, dkey).values(),
                    stats.per_image_values(r, None, "bpp").values())]
                ms = stats.mean_se(d)
                rec[(label, "mean")], rec[(label, "±")] = ms["mean"], ms["se"]
            records.append(rec)
        if key in paper:
            rec = {"method": LABELS[key], "source": "paper"}
            for (label, _), (b, p) in zip(BLOCKS, paper[key]):
                rec[(label, "bpp")], rec[(label, "psnr")] = b, p
            (_, p0), (_, p1), (b0, _), (b2, _) = paper[key][0], paper[key][1], paper[key][0], \
                paper[key][2]
            rec[(DAMAGE[0][0], "mean")] = p1 - p0
            rec[(DAMAGE[1][0], "mean")] = 100 * (b2 - b0) / b0
            records.append(rec)
    df = pd.DataFrame(records)
    if df.empty:
        return df
    df = df.set_index(["method", "source"])
    df.columns = pd.MultiIndex.from_tuples(df.columns)
    return df


def markdown(df: pd.DataFrame, digits: int = 3) -> str:
    """A table as Markdown (``-`` for a missing cell)."""
    if df.empty:
        return "(no results yet)"
    head = ["method", "source"] + [f"{a} {b}" for a, b in df.columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (m, s), row in df.iterrows():
        cells = ["-" if v != v or v is None else f"{v:.{digits}f}" for v in row.tolist()]
        lines.append("| " + " | ".join([m, s] + cells) + " |")
    return "\n".join(lines)


def per_image_damage(r: Dict[str, Any], side: str, attack: Optional[str] = None) -> Dict[str, float]:
    """Per image: PSNR change (dB) under the quality-side attack, or rate change (% of the
    clean rate) under the rate-side attack (the worst case unless ``attack`` is given)."""
    if side == "psnr":
        return stats.per_image_values(r, attack or "worst-psnr", "delta-psnr")
    clean = stats.per_image_values(r, None, "bpp")
    d = stats.per_image_values(r, attack or "worst-bpp", "delta-bpp")
    return {n: 100 * v / clean[n] for n, v in d.items()}


def codecs(found: Dict[str, Dict[str, Any]], root=".") -> pd.DataFrame:
    """The codecs under attack against JPEG at their own clean rate (log-rate interpolation on
    the JPEG curve of the same images: the first 8 Kodak crops, then every model evaluated on
    the DIV2K images and on all 24 Kodak crops); a codec not yet attacked is shown from its
    clean-only results (``metrics_clean.json`` beside, when present)."""
    rows = []

    def row(r: Dict[str, Any], path: str, label: str, jpeg: str) -> None:
        m = margin_over_jpeg(r, found[jpeg]) if jpeg in found else None
        rows.append({"model": label, "file": path, "bpp": round(r["results"]["bpp"][0], 4),
                     "PSNR (dB)": round(r["results"]["psnr-rgb"][0], 3),
                     "vs JPEG at that rate (dB)": None if m is None else round(m, 2)})

    for key in (*PRETRAINED, *METHODS, "teacher-s1", "pkdt-s1", "adv-s1", "ma2023-s1",
                *(k for q in OTHER_RATES for k in TABLE1_AT[q][1:]), *TABLE1_AT["cheng"],
                *(k for q in LONG for k in TABLE1_AT[q]), *(f"{m}-s1-q4long" for m in METHODS),
                *WIDE):
        path = RUNS[key][0]
        clean = Path(root) / path.replace("metrics_p2.json", "metrics_clean.json")
        r = found.get(key) or (load_results(clean) if clean.is_file() else None)
        if r is not None:
            label = LABELS.get(key, key)
            if key not in found:
                path = str(clean.relative_to(root))
                label += f" (clean only: {r['name']})"
            row(r, path, label, JPEG_ON[""])
    for suffix, jpeg in JPEG_ON.items():
        bases = VARIANTS[suffix[1:]][2] if suffix else ()  # "": the first 8, listed above
        for key in (f"{b}{suffix}" for b in bases):
            if key in found:
                row(found[key], RUNS[key][0], LABELS[key], jpeg)
    return pd.DataFrame(rows)


def flat_markdown(df: pd.DataFrame) -> str:
    """A flat frame as a Markdown table (``-`` for a missing cell)."""
    if df.empty:
        return "(no results yet)"
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join("-" if v is None or v != v else str(v) for v in row)
                     + " |")
    return "\n".join(lines)


# (what, model a, model b): b - a, the seed-to-seed spread first, then the method difference
SEED_PAIRS: Tuple[Tuple[str, str, str], ...] = (("PKDT: seed 1 - seed 0", "pkdt", "pkdt-s1"),
              ("adversarial training: seed 1 - seed 0", "adv", "adv-s1"),
              ("PKDT - adversarial training, seed 0", "adv", "pkdt"),
              ("PKDT - adversarial training, seed 1", "adv-s1", "pkdt-s1"),
              ("Ma2023: seed 1 - seed 0", "ma2023", "ma2023-s1"),
              ("PKDT - Ma2023, seed 0", "ma2023", "pkdt"),
              ("PKDT - Ma2023, seed 1", "ma2023-s1", "pkdt-s1"),
              # Stage II vs Stage I beside the teacher-to-teacher spread (both PKDT seeds
              # distil the seed-0 teacher)
              ("teacher (Stage I): seed 1 - seed 0", "teacher", "teacher-s1"),
              ("PKDT - teacher, seed 0", "teacher", "pkdt"),
              ("PKDT (from teacher seed 0) - teacher seed 1", "teacher-s1", "pkdt"))
# the same pairs from hyper-q4-long (keys "{key}-q4long"; both are "pkdt-q4long" for PKDT seed 0)
SEED_PAIRS += tuple((f"{what}, from {LONG['q4long'][0]}", at_q4long(a), at_q4long(b))
                    for what, a, b in SEED_PAIRS)
SEED_PAIRS += (
              # the same undefended codec trained longer: does a stronger codec break less?
              ("pretrained: hyper-q4-long - hyper-q4 (6000 steps more)", "pretrained-q4",
               "pretrained-q4long"),
              ("pretrained: hyper-q6-long - hyper-q6 (8000 steps more)", "pretrained-q6",
               "pretrained-q6long"),
              ("pretrained: hyper-q6-wide - hyper-q6-long (M 192, 8000 steps more)",
               "pretrained-q6long", "pretrained-q6wide"),
              ("pretrained: hyper-q6-wide-p256 - hyper-q6-wide (256x256 patches, 4000 steps more)",
               "pretrained-q6wide", "pretrained-q6widep256"),
              ("pretrained: hyper-q6-p256-long - hyper-q6-long (256x256 patches, 9000 steps more)",
               "pretrained-q6long", "pretrained-q6p256long"),
              ("pretrained: hyper-q6-n88 - hyper-q6-p256-long (N 88, same 5000 steps)",
               "pretrained-q6p256long", "pretrained-q6n88"),
              ("pretrained: hyper-q4-p256 - hyper-q4-long (256x256 patches, 4000 steps more)",
               "pretrained-q4long", "pretrained-q4p256"))
# ... and each Table 1 row from hyper-q6-wide-p256-long2 against its ancestor's same row
SEED_PAIRS += tuple((f"{LABELS.get(m, m)}: from hyper-q6-wide-p256-long2 - from "
                     "hyper-q6-wide-p256 (7000 steps more)", f"{m}-q6widep256",
                     f"{m}-q6widep256long2") for m in ("pretrained", *METHODS))


def paired_ci_text(a: Dict[str, float], b: Dict[str, float]) -> str:
    ci = stats.bootstrap_ci([b[n] - a[n] for n in b if n in a])
    return f"{ci['mean']:+.2f} [{ci['lo']:+.2f}, {ci['hi']:+.2f}]"


def seeds(found: Dict[str, Dict[str, Any]]) -> pd.DataFrame:
    """Seed-to-seed against method-to-method: per pair, b - a per image (mean and 95 % paired
    bootstrap interval) of the clean PSNR and rate and of the damage of each attack side. A
    method difference no larger than the seed-to-seed one is no ranking."""
    rows = []
    for what, a, b in SEED_PAIRS:
        if a not in found or b not in found:
            rows.append({"difference (b - a)": what, "clean PSNR (dB)": "not run yet"})
            continue
        ra, rb = found[a], found[b]
        ba, bb = (stats.per_image_values(r, None, "bpp") for r in (ra, rb))
        rows.append({
            "difference (b - a)": what,
            "clean PSNR (dB)": paired_ci_text(stats.per_image_values(ra, None, "psnr-rgb"),
                                       stats.per_image_values(rb, None, "psnr-rgb")),
            "clean rate (%)": paired_ci_text({n: 100.0 for n in ba},
                                      {n: 100 * v / ba[n] for n, v in bb.items() if n in ba}),
            "dPSNR psnr attack (dB)": paired_ci_text(per_image_damage(ra, "psnr"), per_image_damage(rb, "psnr")),
            "dbpp bpp attack (% points)": paired_ci_text(per_image_damage(ra, "bpp"), per_image_damage(rb, "bpp")),
        })
    return pd.DataFrame(rows)


def _curve_at(found, image: str, rate: float, kind: Optional[str], what: str) -> Optional[float]:
    """The pretrained curve's value for one image at clean rate ``rate`` (log-rate
    interpolation between its rate points; None outside them). ``what``: "psnr" (PSNR under
    ``kind``) or "gain" (rate gain in % under ``kind``)."""
    pts = []
    for k in PRETRAINED:
        if k not in found:
            continue
        b = stats.per_image_values(found[k], None, "bpp").get(image)
        v = (stats.per_image_values(found[k], kind, "psnr-rgb") if what == "psnr"
             else per_image_damage(found[k], "bpp")).get(image)
        if b is not None and v is not None:
            pts.append((b, v))
    return stats.interpolate_rd(pts, rate) if len(pts) >= 2 else None


MATCHED = ("teacher", "teacher-s1", "pkdt", "pkdt-s1", "adv", "adv-s1", "ma2023", "ma2023-s1", "abl-no-smooth",
           "abl-no-dydx", "abl-no-dbpp", *(k for q in OTHER_RATES for k in TABLE1_AT[q][1:]))


def matched_rate(found: Dict[str, Dict[str, Any]]) -> pd.DataFrame:
    """Each defended codec against the pretrained R-D curve *at its own clean rate*, per image
    (log-rate interpolation between the pretrained rate points): a defence that lowers the
    clean rate moves along the curve, and only what it gains beyond that move is robustness.
    Columns: model - curve, mean and 95 % paired bootstrap interval over the images inside
    the curve's rate range (their number in ``images``); empty without two pretrained rate
    points (no curve)."""
    rows = []
    if sum(k in found for k in PRETRAINED) < 2:
        return pd.DataFrame(rows)
    for key in MATCHED:
        if key not in found:
            continue
        r = found[key]
        rates = stats.per_image_values(r, None, "bpp")
        row = {"model": LABELS[key], "clean bpp": round(sum(rates.values()) / len(rates), 4)}
        for label, kind, what, mine in (
                ("clean PSNR (dB)", None, "psnr", stats.per_image_values(r, None, "psnr-rgb")),
                ("PSNR under psnr attack (dB)", "worst-psnr", "psnr",
                 stats.per_image_values(r, "worst-psnr", "psnr-rgb")),
                ("rate gain under bpp attack (% points)", "worst-bpp", "gain",
                 per_image_damage(r, "bpp"))):
            diffs = [mine[n] - c for n, b in rates.items() if n in mine
                     for c in [_curve_at(found, n, b, kind, what)] if c is not None]
            row["images"] = min(row.get("images", len(diffs)), len(diffs))
            if len(diffs) >= 2:
                ci = stats.bootstrap_ci(diffs)
                row[label] = f"{ci['mean']:+.2f} [{ci['lo']:+.2f}, {ci['hi']:+.2f}]"
            else:
                row[label] = "outside the curve"
        rows.append(row)
    return pd.DataFrame(rows)
