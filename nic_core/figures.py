"""The reproduction's tables and figures, from committed results files only.

Notebook ``05_figures`` and ``make figures`` call :func:`build`. :data:`nic_core.registry.RUNS`
names every results file a figure or table reads, beside the command that makes it; a missing file
becomes a note naming that command (and the figure is drawn from what exists), never a
silent gap. Every figure uses one colour per method (:data:`PALETTE`) and shows the paper's
numbers (Cao et al., arXiv 2403.06700, Tables 1-2) as hollow markers beside ours; the
paper's points are full Kodak images and a full-width codec, ours the CPU scale stated in
each results file, so compare differences, not absolute values.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from . import bd, checkpoints, cli, stats, viz  # noqa: E402
from .readme_includes import refresh_includes  # noqa: E402
from .results import load_results  # noqa: E402
from .registry import (LABELS, LONG, LONGER, PAPER_K24, PAPER_TABLE1, PAPER_TABLE2,  # noqa: E402
                       PAPER_TABLE2_AT, PRETRAINED, RUNS, TABLE1_AT, TABLE1_K24, TABLE1_K24_AT,
                       TABLE1_ROWS, TABLE2_AT, TABLE2_ROWS, at_q4long)
from .tables import (BLOCKS, table_cell, per_image_damage, codecs, flat_markdown, load, markdown,  # noqa: E402
                     matched_rate, seeds, table)
from .strength import codec_steps, fig_codec_steps, read_history  # noqa: E402
from .tuning import TUNE_DIR, TUNE_DIR_AT, fig_tuning, tuning, tuning_intervals  # noqa: E402
from .claims import (GRID_COMPARISONS, MARK, grid, grid_markdown, sensitivity,  # noqa: E402
                     sensitivity_markdown, verdicts)

REPO = Path(__file__).resolve().parents[1]
# one colour per method in every figure
PALETTE = {"pretrained": "#4c72b0", "teacher": "#8172b3", "pkdt": "#c44e52", "adv": "#55a868",
           "ma2023": "#dd8452", "jpeg": "#7f7f7f", "abl": "#937860", "cheng": "#da8bc3"}



def colour(key: str) -> str:
    return next((c for k, c in PALETTE.items() if key.startswith(k)), "#333333")


def _points(found, keys, kind):
    pts = []
    for k in keys:
        if k in found and k != "jpeg":
            b, p = table_cell(found[k], kind, "bpp"), table_cell(found[k], kind, "psnr-rgb")
            if b is not None and p is not None:
                pts.append((b, p, viz._se(found[k], kind, "psnr-rgb") or 0.0))
    return sorted(pts)


def clean_only(found: Dict[str, Dict[str, Any]], root=".") -> Dict[str, Dict[str, Any]]:
    """Codecs not attacked yet but measured clean (``metrics_clean.json`` beside their
    protocol-2 file): their clean point still belongs in the clean R-D panel."""
    out = {}
    for key, (path, _) in RUNS.items():
        p = Path(root) / path.replace("metrics_p2.json", "metrics_clean.json")
        if key not in found and path.endswith("metrics_p2.json") and p.is_file():
            out[key] = load_results(p)
    return out


def fig_rd(found: Dict[str, Dict[str, Any]], clean: Optional[Dict[str, Dict[str, Any]]] = None,
           paper: bool = True, title: Optional[str] = None):
    """Fig. 3 at CPU scale: R-D clean / under the psnr attack / under the bpp attack (worst case
    per image), pretrained curve vs ours, JPEG and (``paper``) the paper's points (hollow). Means
    over the images; the spread of differences is in the tables (``DAMAGE``) and
    :func:`fig_summary`. Another image set: pass its results under the Kodak keys
    (:func:`on_images`)."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.6), sharey=False)
    # (colour, keys, style, label): one curve per method over the rate points where it ran,
    # the second training seed as hollow markers, the Cheng codec as its own point
    curves = [("pretrained", PRETRAINED, "o-", LABELS["pretrained-q4"])]
    for m, style in (("teacher", "D--"), ("adv", "^--"), ("ma2023", "v--"), ("pkdt", "s-")):
        curves.append((m, (f"{m}-q1", f"{m}-q2", m, f"{m}-q6"), style, LABELS[m]))
    curves += [(m, (f"{m}-s1",), style, LABELS[f"{m}-s1"])
               for m, style in (("adv", "^"), ("ma2023", "v"), ("pkdt", "s"))]
    curves += [("cheng", (k,), style, LABELS[k]) for k, style in zip(
        TABLE1_AT["cheng"], ("P", "d", "X", "<", ">"))]
    # the codecs trained longer and Stage I / II from them: black-edged markers, no line (two
    # of them share a rate point: they are separate codecs, not one R-D curve)
    curves.append(("pretrained", LONGER, "o", "pretrained, trained longer "
                   "(hyper-q4/q6-long, -q4-p256, -q6-wide-p256(-long2))"))
    curves += [(m, tuple(f"{m}-{q}" for q in LONG), style, f"{LABELS[m]}, from those trained longer")
               for m, style in (("teacher", "D"), ("pkdt", "s"), ("adv", "^"), ("ma2023", "v"))]
    for ax, (label, kind) in zip(axes, BLOCKS):
        for name, keys, style, text in curves:
            pts = _points({**(clean or {}), **found} if kind is None else found, keys, kind)
            if pts:
                edge = ({"mfc": "none"} if keys[0].endswith("-s1") else
                        {"mec": "k", "mew": 1.0} if "long" in keys[0] else {})
                ax.plot([p[0] for p in pts], [p[1] for p in pts], style, color=colour(name),
                        ms=5, lw=1.2, label=text, **edge)
        if kind is None and "jpeg" in found:  # JPEG over the learned codecs' rate range
            codecs_ = [k for k in RUNS if not k.startswith("jpeg")]
            top = 1.3 * max([p[0] for p in _points(found, codecs_, None)] or [1.0])
            j = [(b, p) for b, p in zip(found["jpeg"]["results"]["bpp"],
                                        found["jpeg"]["results"]["psnr-rgb"]) if b <= top]
            ax.plot([b for b, _ in j], [p for _, p in j], ".:", color=colour("jpeg"),
                    label="JPEG (Pillow, 4:2:0)")
        for key, vals in (PAPER_TABLE1 if paper else {}).items():
            b, p = vals[[k for _, k in BLOCKS].index(kind)]
            base = "pretrained" if key.startswith("pretrained") else key
            ax.plot([b], [p], "o", mfc="none", color=colour(base), ms=8,
                    label=f"paper: {LABELS[key]}")
        ax.set_title(label)
        ax.set_xlabel("rate (bpp, real bitstreams)")
        ax.set_ylabel("PSNR (dB) vs the original")
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=5, fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=9)
    rows = -(-len(labels) // 5)  # the legend's rows below the panels
    fig.tight_layout(rect=(0, 0.03 + 0.035 * rows, 1, 1))
    return fig


def on_images(found: Dict[str, Dict[str, Any]], suffix: str) -> Dict[str, Dict[str, Any]]:
    """The results on another image set (keys ending in ``suffix``, e.g. ``"-div2k"``) under the
    Kodak keys, so that :func:`fig_rd` draws them the same way."""
    return {k[:-len(suffix)]: v for k, v in found.items() if k.endswith(suffix)}


def fig_ma2023(found: Dict[str, Dict[str, Any]]):
    """Fig. 5 at CPU scale: PSNR change under Chen & Ma's attack (noise path), per image and
    mean with 95 % bootstrap interval, for every model with that attack."""
    keys = [k for k in ("pretrained-q4", "teacher", "adv", "ma2023", "pkdt") if k in found
            and "ma2023@noise" in found[k].get("attacks", {})]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for i, k in enumerate(keys):
        vals = list(stats.per_image_values(found[k], "ma2023@noise", "delta-psnr").values())
        ci = stats.bootstrap_ci(vals)
        ax.plot([i] * len(vals), vals, ".", color=colour(k.split("-")[0]), alpha=0.5)
        ax.errorbar([i + 0.15], [ci["mean"]], yerr=[[ci["mean"] - ci["lo"]], [ci["hi"] - ci["mean"]]],
                    fmt="s", color=colour(k.split("-")[0]), capsize=3)
    ax.set_xticks(range(len(keys)), [LABELS[k] for k in keys], rotation=20, ha="right",
                  fontsize=8)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_ylabel("PSNR change (dB)")
    ax.set_title("under the Ma2023 attack (eps 5e-4): images and mean, 95 % CI", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


EPS_MODELS = (("pretrained", "pretrained (Hyper)"), ("teacher", "Stage I (teacher)"),
              ("pkdt", "Ours (PKDT)"), ("adv", "adversarial training"), ("ma2023", "Ma2023"))
EPS_ROWS = (("pretrained-q4", *(m for m, _ in EPS_MODELS[1:])),
            ("pretrained-q4-eps1e-3", *(f"{m}-eps1e-3" for m, _ in EPS_MODELS[1:])))
# the same from hyper-q4-long and its Stage I / II models
EPS_ROWS_Q4LONG = tuple(tuple(at_q4long(k) for k in row) for row in EPS_ROWS)


def fig_eps(found: Dict[str, Dict[str, Any]], rows=EPS_ROWS, title: Optional[str] = None):
    """Fig. 4 at CPU scale: the damage of the worst-case attacks at eps 5e-4 and 1e-3 (the
    paper's two budgets; at 1e-3 the worst case over both, :mod:`nic_core.budgets`),
    pretrained vs Stage I vs PKDT vs the two baselines; mean over the images, standard-error
    bars. ``rows``: the keys at each budget (:data:`EPS_ROWS`, from hyper-q4, or
    :data:`EPS_ROWS_Q4LONG`)."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.2))
    for ax, side, unit in ((axes[0], "psnr", "PSNR change under the psnr attack (dB)"),
                           (axes[1], "bpp", "rate gain under the bpp attack (%)")):
        for j, (eps, keys) in enumerate(zip(("5e-4", "1e-3 (nested over 5e-4)"), rows)):
            for i, k in enumerate(keys):
                if k not in found:
                    continue
                ms = stats.mean_se(list(per_image_damage(found[k], side).values()))
                ax.bar(i + 0.38 * j, ms["mean"], 0.36, yerr=ms["se"] or 0, capsize=3,
                       color=colour(EPS_MODELS[i][0]), alpha=1.0 if j == 0 else 0.55,
                       label=f"eps {eps}" if i == 0 else None)
        ax.set_xticks([i + 0.19 for i in range(len(EPS_MODELS))],
                      [label for _, label in EPS_MODELS], fontsize=8)
        ax.axhline(0, color="k", lw=0.8)
        ax.set_ylabel(unit, fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8, title="budget (light: 1e-3)", title_fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def fig_summary(found: Dict[str, Dict[str, Any]]):
    """Fig. 1-style summary: worst-case PSNR loss and rate gain per method at one rate point."""
    rows = [{**found[k], "name": LABELS[k]} for k in TABLE1_ROWS if k in found]
    fig = viz.plot_attack_deltas(rows, psnr_kind="worst-psnr", bpp_kind="worst-bpp")
    for ax in fig.axes:
        for patch, k in zip(ax.patches, [k for k in TABLE1_ROWS if k in found]):
            patch.set_color(colour(k.split("-")[0]))
    return fig


def fig_learning(root, names=("hyper-q4", "hyper-q4-long", "hyper-q2", "hyper-q6",
                              "hyper-q6-long", "hyper-q1", "cheng-q4")):
    """Training PSNR (from the MSE term) and rate of the CPU codecs against the step, smoothed
    over 200 steps, so the reader sees where training stopped; None without any. The log is
    ``models/cpu/NAME/history.jsonl.gz`` for a committed model, ``results/cpu/NAME/`` for one
    whose weights are not committed."""
    import math

    runs = []
    for n in names:
        for d in ("models", "results"):
            p = Path(root) / d / "cpu" / n / "history.jsonl.gz"
            if p.is_file():
                runs.append((n, read_history(p)))
                break
    if not runs:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    # where each fine-tuning started: q2 from q4 at 11372, q6 and q4-long from the final q4,
    # q1 from q2, q6-long from the final q6
    offset = {"hyper-q2": 11372, "hyper-q6": 16000, "hyper-q4-long": 16000,
              "hyper-q1": 11372 + 4000, "hyper-q6-long": 16000 + 4000}

    def smooth(v, k=200):
        out, acc = [], 0.0
        for i, x in enumerate(v):
            acc += x - (v[i - k] if i >= k else 0.0)
            out.append(acc / min(i + 1, k))
        return out
    for n, rows in runs:
        steps = [r["step"] + offset.get(n, 0) for r in rows]
        psnr = smooth([-10 * math.log10(max(r["mse_loss"], 1e-12)) for r in rows])
        bpp = smooth([r["bpp_loss"] for r in rows])
        axes[0].plot(steps, psnr, lw=1, label=n)
        axes[1].plot(steps, bpp, lw=1, label=n)
    for ax, yl in ((axes[0], "training PSNR (dB, 128px crops)"), (axes[1], "training rate (bpp)")):
        ax.set_xlabel("step (fine-tunings placed after their start)")
        ax.set_ylabel(yl)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def fig_visual(root, image: str = "kodim04", attack: str = "psnr", eps: float = 5e-4,
               iterations: int = 50, crop: int = 256,
               names=("hyper-q4", "hyper-q4-pkdt")) -> Tuple[Optional[Any], str]:
    """The visual grid: original | adversarial | noise (amplified) | reconstruction of the clean
    and of the attacked image, one row per committed model (the attack explorer's figure,
    white-box per model, seed 0). Returns (figure or None, a note)."""
    from . import data, explorer

    models = {LABELS.get(k, k): checkpoints.load_model(Path(root) / "models" / "cpu" / n /
                                                       "model.pt")
              for k, n in zip(("pretrained-q4", "pkdt"), names)
              if (Path(root) / "models" / "cpu" / n / "model.pt").is_file()}
    if not models:
        return None, f"visual grid: none of models/cpu/{{{','.join(names)}}} committed yet"
    try:
        paths, desc = data.find_test_set("kodak", None)
    except FileNotFoundError as e:
        return None, f"visual grid: {e}"
    images = {Path(p).stem: p for p in paths}
    if image not in images or desc.startswith("FALLBACK"):
        return None, f"visual grid: {image} not found ({desc}); set $NIC_DATA"
    ex = explorer.Explorer(models, {image: images[image]}, crop=crop, eps_grid=[eps])
    return ex.figure(image, attack, eps, iterations, list(models)), \
        f"visual grid: {image}, {attack} attack, eps {eps:g}, {iterations} iterations"


VERDICT_COLOUR = {"confirmed at this scale": "#8fd18f",
                  "not confirmed (not significant at FDR 5 %)": "#e0e0e0",
                  "refuted at this scale": "#f0a0a0"}


def fig_verdicts(g, ruler: str = "damage"):
    """The verdict grid (:func:`nic_core.claims.grid`) as two coloured panels, quality side and
    rate side: settings down, Table 1's comparisons across, each cell the mean paired
    difference over the images, green where it is significant at FDR 5 % (sign-flip test,
    Benjamini-Hochberg over the grid) in the paper's direction, red the other way, grey not.
    ``ruler``: the cells' ruler, "damage" or "absolute" (PSNR and rate under attack)."""
    settings = list(dict.fromkeys(g["setting"]))
    comps = [w for w, _, _ in GRID_COMPARISONS]
    fig, axes = plt.subplots(1, 2, figsize=(13, 0.42 * len(settings) + 1.6))
    titles = (("psnr", "quality side: dB less PSNR loss"),
              ("bpp", "rate side: % points of rate gain"))
    if ruler == "absolute":
        titles = (("psnr", "PSNR under the worst psnr attack, b - a (dB)"),
                  ("bpp", "rate under the worst bpp attack, b vs a (%)"))
    for ax, (side, unit) in zip(axes, titles):
        for i, setting in enumerate(settings):
            for j, what in enumerate(comps):
                r = g[(g.setting == setting) & (g.comparison == what) & (g.side == side)]
                if r.empty:
                    colour_, text = "white", "not run"
                else:
                    colour_ = VERDICT_COLOUR[r.iloc[0]["verdict"]]
                    text = f"{r.iloc[0]['mean']:+.2f} {MARK[r.iloc[0]['verdict']]}"
                ax.add_patch(plt.Rectangle((j, i), 1, 1, color=colour_, ec="white", lw=1.5))
                ax.text(j + 0.5, i + 0.5, text, ha="center", va="center", fontsize=7.5)
        ax.set_xlim(0, len(comps))
        ax.set_ylim(len(settings), 0)
        ax.set_xticks([j + 0.5 for j in range(len(comps))], comps, rotation=20, ha="right",
                      fontsize=8)
        ax.set_yticks([i + 0.5 for i in range(len(settings))], settings, fontsize=8)
        ax.tick_params(length=0)
        ax.set_title(unit, fontsize=9)
        for spine in ax.spines.values():
            spine.set_visible(False)
    axes[1].set_yticklabels([])
    what = "more robust than" if ruler == "damage" else "better under attack than"
    fig.suptitle(f"b > a: b {what} a (paired over the images; sign-flip test, "
                 "Benjamini-Hochberg over the grid): green confirmed, grey not significant at "
                 "FDR 5 %, red refuted", fontsize=9)
    fig.tight_layout()
    return fig


def _verdict_grid(found, out: Path, tdir: Path) -> List[Path]:
    """The verdict grid on both rulers, its rate-hold sensitivity, the BD ruler under attack."""
    g = grid(found)
    (tdir / "verdict_grid.md").write_text(grid_markdown(g) + "\n")
    (tdir / "verdict_grid_absolute.md").write_text(grid_markdown(g, "absolute") + "\n")
    g.round(4).to_csv(tdir / "verdict_grid.csv", index=False)  # each cell's interval too
    (tdir / "sensitivity_rate_tol.md").write_text(sensitivity_markdown(sensitivity(found)) + "\n")
    (tdir / "bd_under_attack.md").write_text(flat_markdown(bd.table(found)) + "\n")
    names = ("verdict_grid", "verdict_grid_absolute", "sensitivity_rate_tol", "bd_under_attack")
    written = [tdir / f"{n}.md" for n in names] + [tdir / "verdict_grid.csv"]
    if not g.empty:
        written += save(fig_verdicts(g[g.ruler == "damage"]), out, "fig_verdicts_cpu")
        written += save(fig_verdicts(g[g.ruler == "absolute"], "absolute"), out,
                        "fig_verdicts_absolute_cpu")
    return written


def save(fig, out_dir: Path, name: str) -> List[Path]:
    """PNG and PDF without timestamps or version strings (rebuilt byte-for-byte on one setup)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.png", out_dir / f"{name}.pdf"]
    fig.savefig(paths[0], dpi=110, bbox_inches="tight", metadata={"Software": None})
    fig.savefig(paths[1], bbox_inches="tight", metadata={"Creator": None, "Producer": None,
                                                         "CreationDate": None})
    plt.close(fig)
    return paths


def build(root=".", out_dir="figures", tables_dir="results/cpu/tables",
          visual: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Every figure and table that its results allow; returns ``written`` paths and ``notes``.
    ``visual``: keyword arguments of :func:`fig_visual` (``None``: no visual grid)."""
    found, notes = load(root)
    out, tdir = Path(root) / out_dir, Path(root) / tables_dir
    written: List[Path] = []
    for name, rows, paper in (("table1", TABLE1_ROWS, PAPER_TABLE1),
                              *((f"table1_{q}", rows, {}) for q, rows in TABLE1_AT.items()),
                              ("table1_kodak24", TABLE1_K24, PAPER_K24),
                              *((f"table1_kodak24_{q}", rows, {})
                                for q, rows in TABLE1_K24_AT.items()),
                              ("table2", TABLE2_ROWS, PAPER_TABLE2),
                              *((f"table2_{q}", rows, PAPER_TABLE2_AT[q])
                                for q, rows in TABLE2_AT.items())):
        df = table(found, rows, paper)
        tdir.mkdir(parents=True, exist_ok=True)
        df.round(4).to_csv(tdir / f"{name}.csv")
        (tdir / f"{name}.md").write_text(markdown(df) + "\n")
        written += [tdir / f"{name}.csv", tdir / f"{name}.md"]
    written += _verdict_grid(found, out, tdir)
    for name, df in (("verdicts", verdicts(found)), ("codecs", codecs(found, root)),
                     ("codec_steps", codec_steps(root)),
                     ("seeds", seeds(found)), ("matched_rate", matched_rate(found)),
                     # the same on the other image sets, against their own pretrained curve
                     *((f"matched_rate_{s}", matched_rate(on_images(found, f"-{s}")))
                       for s in ("div2k", "kodak24")),
                     ("tuning", tuning(root)),
                     *((f"tuning_{q}", tuning(root, d)) for q, d in TUNE_DIR_AT.items())):
        (tdir / f"{name}.md").write_text(flat_markdown(df) + "\n")
        written.append(tdir / f"{name}.md")
    tunings = {label: cis for label, cis in
               (("from hyper-q4", tuning_intervals(root, TUNE_DIR)),
                *((f"from {LONG[q][0]}", tuning_intervals(root, d)) for q, d in TUNE_DIR_AT.items()))
               if cis}
    if tunings:
        written += save(fig_tuning(tunings), out, "fig_tuning_cpu")
    fig, _ = fig_codec_steps(root)  # what lifts a codec over JPEG
    if fig is not None:
        written += save(fig, out, "fig_codec_steps_cpu")
    if any(k in found for k in TABLE1_ROWS):
        written += save(fig_rd(found, clean_only(found, root)), out, "fig3_rd_cpu")
        written += save(fig_summary(found), out, "fig1_summary_cpu")
    else:
        notes.append("fig3_rd_cpu, fig1_summary_cpu: no Table 1 results yet")
    for name, suffix, paper, title in (  # Fig. 3 on the other image sets, Fig. 4 as R-D curves
            ("fig3_rd_div2k_cpu", "-div2k", False,
             "the DIV2K validation images at hand (4 LR x4 images, 256x256 crops)"),
            ("fig3_rd_kodak24_cpu", "-kodak24", True, "all 24 Kodak images (256x256 centre crops)"),
            ("fig4_rd_cpu", "-eps1e-3", False, "Fig. 4: eps 1e-3 (worst case nested over the eps "
             "5e-4 attacks), the first 8 Kodak crops")):
        other = on_images(found, suffix)
        if sum(k in other for k in PRETRAINED) >= 2:
            written += save(fig_rd(other, paper=paper, title=title), out, name)
        else:
            notes.append(f"{name}: fewer than two pretrained rate points on those images")
    if visual is not None:
        fig, note = fig_visual(root, **visual)
        notes.append(note)
        if fig is not None:
            written += save(fig, out, "visual_grid_cpu")
    learning = fig_learning(root)
    if learning is not None:
        written += save(learning, out, "learning_curves_cpu")
    if any("ma2023@noise" in r.get("attacks", {}) for r in found.values()):
        written += save(fig_ma2023(found), out, "fig5_ma2023_cpu")
    for name, rows, title in (("fig4_eps_cpu", EPS_ROWS, None),
                              ("fig4_eps_q4long_cpu", EPS_ROWS_Q4LONG,
                               f"from {LONG['q4long'][0]} (22000 steps) and its Stage I / II")):
        if any(k in found for k in rows[1]):
            written += save(fig_eps(found, rows, title), out, name)
        else:
            notes.append(f"{name}: no eps 1e-3 results yet")
    return {"written": written, "notes": notes, "found": sorted(found)}


def main(argv=None) -> int:
    """``python -m nic_core.figures [--root .] [--out figures] [--readme-only]``: what ``make
    figures`` runs (the notebook, then ``--readme-only`` to paste the tables into README.md)."""
    ap = argparse.ArgumentParser(prog="python -m nic_core.figures", description=main.__doc__)
    ap.add_argument("--root", default=".")
    ap.add_argument("--out", default="figures")
    ap.add_argument("--tables", default="results/cpu/tables")
    ap.add_argument("--visual-image", default="kodim04", help="'' for no visual grid")
    ap.add_argument("--visual-iterations", type=int, default=50)
    ap.add_argument("--readme-only", action="store_true",
                    help="only refresh the include blocks of README.md and docs/*.md from the table files")
    args = ap.parse_args(argv)
    if args.readme_only:
        root = Path(args.root)
        for page in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
            for f in refresh_includes(page):
                print(f"{page.relative_to(root)}: block of {f} updated")
        return 0
    visual = (dict(image=args.visual_image, iterations=args.visual_iterations)
              if args.visual_image else None)
    res = build(args.root, args.out, args.tables, visual=visual)
    for p in res["written"]:
        print(f"wrote {p}")
    for n in res["notes"]:
        print(f"note: {n}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
