"""Tuning what the paper leaves open (alpha, beta, the Stage II length) on the validation split.

Each tuning folder (``results/cpu/hyper-q4-tune``, and :data:`TUNE_DIR_AT` from the codecs
trained longer) holds one ``<variant>/metrics.json`` per Stage II variant of its params file
(notebook 04, ``scripts/reproduce_cpu.sh tune``), ``best`` the configured run, and reference
rows (:data:`TUNE_REFERENCES`: the pretrained codec, the teacher). :func:`tuning` is the table,
:func:`tuning_intervals` the paired differences to ``best`` it shows, :func:`tuning_rule` the
decision rule fixed before looking, :func:`fig_tuning` the figure. Cao et al., arXiv
2403.06700, give alpha and beta only at their GPU scale (eq. 5).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

import pandas as pd

from . import config, stats
from .results import load_results
from .tables import table_cell, per_image_damage

TUNE_DIR = "results/cpu/hyper-q4-tune"  # params/cpu/hyper-q4/04_tune.yaml, `reproduce_cpu.sh tune`
# the same from hyper-q4-long (params/cpu/hyper-q4-long/04_tune.yaml, `reproduce_cpu.sh tune-q4long`)
TUNE_DIR_AT = {"q4long": "results/cpu/hyper-q4-long-tune"}
# rows of a tuning folder that are no variant of Stage II but references for it (no rule)
TUNE_REFERENCES = ("pretrained", "teacher")
# the tuning rule, fixed before looking: which sign of "variant - best" is better, per column
TUNE_BETTER = {"vs best: clean PSNR (dB)": +1, "vs best: clean rate (%)": -1,
               "vs best: dPSNR (dB)": +1, "vs best: dbpp (% points)": -1}


def tuning_rule(cis: Dict[str, Dict[str, Any]]) -> str:
    """The tuning rule on a variant's paired intervals against ``best`` (columns of
    :data:`TUNE_BETTER`): it replaces the configured values only if it shows less damage on
    one attack side (interval excluding 0 on the good side), no more on the other, and no worse
    clean point (no interval excluding 0 on the bad side of PSNR or rate). Returns ``"passes"``
    or ``"fails: <the columns that are worse>"`` (``"fails: no side better"``)."""
    worse = [k.split(": ", 1)[1].split(" (")[0] for k, sign in TUNE_BETTER.items()
             if (cis[k]["hi"] if sign > 0 else -cis[k]["lo"]) < 0]
    better = [k for k in ("vs best: dPSNR (dB)", "vs best: dbpp (% points)")
              if (cis[k]["lo"] if TUNE_BETTER[k] > 0 else -cis[k]["hi"]) > 0]
    if worse:
        return "fails: " + ", ".join(f"{w} worse" for w in worse)
    return "passes" if better else "fails: no side better"


def _tuning_found(root, tune_dir: str) -> Dict[str, Dict[str, Any]]:
    folder = Path(root) / tune_dir
    found = {p.parent.name: load_results(p) for p in sorted(folder.glob("*/metrics.json"))}
    order = (*TUNE_REFERENCES, "best")
    return dict(sorted(found.items(), key=lambda kv: (
        order.index(kv[0]) if kv[0] in order else len(order), kv[0])))


def tuning_intervals(root=".", tune_dir: str = TUNE_DIR) -> Dict[str, Dict[str, Dict[str, Any]]]:
    """Per variant of ``tune_dir`` other than ``best`` (the references, the pretrained codec
    and the teacher, included): the paired differences to ``best`` over the images,
    ``{column of TUNE_BETTER: bootstrap_ci}`` (clean PSNR, clean rate in % of best's, damage
    of the single psnr / bpp attacks). Empty without a ``best``."""
    found = _tuning_found(root, tune_dir)
    base = found.get("best")
    if base is None:
        return {}
    out = {}
    for name, r in found.items():
        if name == "best":
            continue
        b0, b1 = (stats.per_image_values(x, None, "bpp") for x in (base, r))
        pairs = {"vs best: clean PSNR (dB)": (stats.per_image_values(base, None, "psnr-rgb"),
                                              stats.per_image_values(r, None, "psnr-rgb")),
                 "vs best: clean rate (%)": ({n: 100.0 for n in b0},
                                             {n: 100 * v / b0[n] for n, v in b1.items() if n in b0}),
                 "vs best: dPSNR (dB)": (per_image_damage(base, "psnr", "psnr"), per_image_damage(r, "psnr", "psnr")),
                 "vs best: dbpp (% points)": (per_image_damage(base, "bpp", "bpp"), per_image_damage(r, "bpp", "bpp"))}
        out[name] = {k: stats.bootstrap_ci([b[n] - a[n] for n in b if n in a])
                     for k, (a, b) in pairs.items()}
    return out


TUNE_LABELS = {"pretrained": "pretrained (no Stage I / II)",
               "teacher": "teacher (Stage I, the model best distils)",
               "best": "best (as configured)"}


SEED_SPREAD = "seed-to-seed spread (not a candidate)"


def tuning_verdict(name: str, cis: Dict[str, Dict[str, Any]]) -> str:
    """:func:`tuning_rule` for a tuning variant; a variant that only changes the training
    ``seed`` is no candidate but the seed-to-seed spread (:data:`SEED_SPREAD`) the other rows'
    differences are to be read against (the intervals over the images do not contain it)."""
    return SEED_SPREAD if set(config.variant_overrides(name)) == {"seed"} else tuning_rule(cis)


def tuning(root=".", tune_dir: str = TUNE_DIR) -> pd.DataFrame:
    """Stage II tuning on the validation split (never Kodak): per variant of
    ``params/cpu/hyper-q4/04_tune.yaml`` (or ``tune_dir``'s) and per reference
    (:data:`TUNE_REFERENCES`: the pretrained codec, the teacher) its clean point and damage,
    the difference to the ``best`` (as configured) variant per image: mean and 95 % paired
    bootstrap interval (:func:`tuning_intervals`), and for the variants the verdict of the
    tuning rule (:func:`tuning_verdict`). A variant is better only where its interval
    excludes 0."""
    found, intervals = _tuning_found(root, tune_dir), tuning_intervals(root, tune_dir)
    rows = []
    for name, r in found.items():
        row = {"variant": TUNE_LABELS.get(name, f"best, {name}"),
               "clean bpp": round(table_cell(r, None, "bpp"), 4),
               "clean PSNR (dB)": round(table_cell(r, None, "psnr-rgb"), 2)}
        for side, label in (("psnr", "dPSNR psnr attack (dB)"), ("bpp", "dbpp bpp attack (%)")):
            ms = stats.mean_se(list(per_image_damage(r, side, attack=side).values()))
            row[label] = f"{ms['mean']:+.2f}" + (f" ± {ms['se']:.2f}" if ms["se"] else "")
        cis = intervals.get(name)
        if cis:
            row.update({k: f"{c['mean']:+.2f} [{c['lo']:+.2f}, {c['hi']:+.2f}]"
                        for k, c in cis.items()})
            if name not in TUNE_REFERENCES:
                row["tuning rule"] = tuning_verdict(name, cis)
        rows.append(row)
    return pd.DataFrame(rows)


def fig_tuning(tunings: Dict[str, Dict[str, Dict[str, Dict[str, Any]]]]):
    """The tuning on the validation split as intervals (``{label: tuning_intervals(...)}``, one
    marker per tuning, e.g. from hyper-q4 and from hyper-q4-long): one panel per paired
    difference to ``best`` (clean PSNR, clean rate, damage of each attack), a row per variant,
    the 95 % interval as a bar; green where the variant is better than ``best`` on that
    column, red where worse, grey where the interval contains 0; the tuning rule's verdict
    beside each row; a second training seed of the configured run in black (the seed-to-seed
    spread, no candidate). The references (pretrained codec, teacher) are left out: the table
    has them."""
    import matplotlib.pyplot as plt  # figures.py has chosen the backend for make figures
    cols = list(TUNE_BETTER)
    names = list(dict.fromkeys(n for cis in tunings.values() for n in cis
                               if n not in TUNE_REFERENCES))
    markers = dict(zip(tunings, "osD^"))
    fig, axes = plt.subplots(1, len(cols), figsize=(13, 0.55 * len(names) + 1.8), sharey=True)
    off = {t: (k - (len(tunings) - 1) / 2) * 0.25 for k, t in enumerate(tunings)}
    for ax, col in zip(axes, cols):
        ax.axvline(0, color="black", lw=0.8)
        for t, cis in tunings.items():
            for i, n in enumerate(names):
                if n not in cis:
                    continue
                c, sign = cis[n][col], TUNE_BETTER[col]
                good, bad = (c["lo"], c["hi"]) if sign > 0 else (-c["hi"], -c["lo"])
                colour_ = "#2e8b2e" if good > 0 else "#c03030" if bad < 0 else "#909090"
                if tuning_verdict(n, cis[n]) == SEED_SPREAD:
                    colour_ = "black"  # no candidate: the spread the others are read against
                y = i + off[t]
                ax.plot([c["lo"], c["hi"]], [y, y], color=colour_, lw=2)
                ax.plot(c["mean"], y, markers[t], color=colour_, ms=6)
        ax.set_title(col.replace("vs best: ", "variant - best: ") +
                     ("\n(higher is better)" if TUNE_BETTER[col] > 0 else "\n(lower is better)"),
                     fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(names)), [n.replace("+", "\n+") for n in names], fontsize=8)
    axes[0].set_ylim(len(names) - 0.5, -0.5)
    for i, n in enumerate(names):
        text = "\n".join(f"{tuning_verdict(n, cis[n]).split(':')[0].split(' (')[0]} "
                          f"({t.replace('from ', '')})"
                          for t, cis in tunings.items() if n in cis)
        axes[-1].annotate(text, (1.02, i), xycoords=("axes fraction", "data"), fontsize=7.5,
                          va="center")
    handles = [plt.Line2D([], [], marker=markers[t], color="#555555", ls="", label=t)
               for t in tunings]
    axes[0].legend(handles=handles, fontsize=8, loc="lower left")
    fig.suptitle("Tuning Stage II on the validation split (24 crops, never Kodak): each variant "
                 "minus the configured run, 95 % paired bootstrap over the crops; green better, "
                 "red worse, grey interval contains 0,\nblack: a second training seed of the "
                 "configured run (the seed-to-seed spread); right: the tuning rule", fontsize=9)
    fig.tight_layout()
    return fig
