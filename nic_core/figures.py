"""The reproduction's tables and figures, from committed results files only.

Notebook ``05_figures`` and ``make figures`` call :func:`build`. :data:`RUNS` names every
results file a figure or table reads, beside the command that makes it; a missing file
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
import pandas as pd  # noqa: E402

from . import checkpoints, stats, viz  # noqa: E402
from .evaluate import load_results  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
REPRO = "scripts/reproduce_cpu.sh"
# key: (results file, the command that makes it)
RUNS: Dict[str, Tuple[str, str]] = {
    "pretrained-q2": ("results/cpu/hyper-q2/metrics_p2.json", f"{REPRO} q2 eval-q2"),
    "pretrained-q4": ("results/cpu/hyper-q4/metrics_p2.json", f"{REPRO} q4 eval-q4"),
    "pretrained-q6": ("results/cpu/hyper-q6/metrics_p2.json", f"{REPRO} q6 eval-q6"),
    "teacher": ("results/cpu/hyper-q4-teacher/metrics_p2.json", f"{REPRO} teacher eval-teacher"),
    "pkdt": ("results/cpu/hyper-q4-pkdt/metrics_p2.json", f"{REPRO} pkdt eval-pkdt"),
    "adv": ("results/cpu/hyper-q4-adv/metrics_p2.json", f"{REPRO} adv eval-adv"),
    "ma2023": ("results/cpu/hyper-q4-ma2023/metrics_p2.json", f"{REPRO} ma2023 eval-ma2023"),
    "jpeg": ("results/cpu/jpeg_kodak8.json", f"{REPRO} jpeg"),
    "abl-no-smooth": ("results/cpu/hyper-q4-ablations/no-smooth/metrics.json",
                      "papermill notebooks/04_ablations.ipynb runs/cpu/04.ipynb "
                      "-f params/cpu/hyper-q4/04_ablations.yaml"),
    "abl-no-dydx": ("results/cpu/hyper-q4-ablations/no-dydx/metrics.json",
                    "papermill notebooks/04_ablations.ipynb runs/cpu/04.ipynb "
                    "-f params/cpu/hyper-q4/04_ablations.yaml"),
    "abl-no-dbpp": ("results/cpu/hyper-q4-ablations/no-dbpp/metrics.json",
                    "papermill notebooks/04_ablations.ipynb runs/cpu/04.ipynb "
                    "-f params/cpu/hyper-q4/04_ablations.yaml"),
}
TABLE1_ROWS = ("pretrained-q4", "teacher", "pkdt", "adv", "ma2023")
TABLE2_ROWS = ("pkdt", "abl-no-smooth", "abl-no-dydx", "abl-no-dbpp")
LABELS = {"pretrained-q4": "pretrained (Hyper)", "pretrained-q2": "pretrained (lmbda 0.0035)",
          "pretrained-q6": "pretrained (lmbda 0.0483)", "teacher": "Ours w/o Stage II (teacher)",
          "pkdt": "Ours (PKDT)", "adv": "adversarial training", "ma2023": "Ma2023",
          "abl-no-smooth": "best w/o smooth_loss", "abl-no-dydx": "best w/o dy/dx",
          "abl-no-dbpp": "best w/o dbpp_main/dx"}
# one colour per method in every figure
PALETTE = {"pretrained": "#4c72b0", "teacher": "#8172b3", "pkdt": "#c44e52", "adv": "#55a868",
           "ma2023": "#dd8452", "jpeg": "#7f7f7f", "abl": "#937860"}

# The paper's Table 1 (Kodak, Hyper, lowest rate point, eps 5e-4): clean, psnr attack, bpp
# attack, each (bpp, PSNR dB); and Table 2 (N_p = 400, N_b = 200).
PAPER_TABLE1 = {
    "pretrained-q4": ((0.4978, 33.0), (0.498, 22.3502), (0.9161, 33.7702)),
    "teacher": ((0.4322, 32.2592), (0.4309, 25.9039), (0.7225, 33.1432)),
    "pkdt": ((0.4323, 32.0802), (0.4286, 28.4039), (0.6822, 32.9933)),
}
PAPER_TABLE2 = {
    "pkdt": ((0.4323, 32.0802), (0.4273, 28.6556), (0.6953, 33.0194)),
    "abl-no-smooth": ((0.4358, 32.1936), (0.4328, 28.4497), (0.7214, 33.0731)),
    "abl-no-dydx": ((0.4355, 32.1549), (0.4301, 28.5293), (0.7075, 33.031)),
    "abl-no-dbpp": ((0.4332, 32.1463), (0.4279, 28.6224), (0.7083, 33.093)),
}
BLOCKS = (("clean", None), ("psnr attack", "worst-psnr"), ("bpp attack", "worst-bpp"))
# robustness per image: PSNR change under the psnr attack (dB), rate change under the bpp
# attack (% of the clean rate); mean and standard error over the images
DAMAGE = (("dPSNR psnr attack (dB)", "worst-psnr", "delta-psnr", False),
          ("dbpp bpp attack (%)", "worst-bpp", "delta-bpp", True))


def colour(key: str) -> str:
    return next((c for k, c in PALETTE.items() if key.startswith(k)), "#333333")


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


def _cell(r: Dict[str, Any], kind: Optional[str], key: str) -> Optional[float]:
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
                rec[(label, "bpp")] = _cell(r, kind, "bpp")
                rec[(label, "psnr")] = _cell(r, kind, "psnr-rgb")
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


def _damage(r: Dict[str, Any], side: str, attack: Optional[str] = None) -> Dict[str, float]:
    """Per image: PSNR change (dB) under the quality-side attack, or rate change (% of the
    clean rate) under the rate-side attack (the worst case unless ``attack`` is given)."""
    if side == "psnr":
        return stats.per_image_values(r, attack or "worst-psnr", "delta-psnr")
    clean = stats.per_image_values(r, None, "bpp")
    d = stats.per_image_values(r, attack or "worst-bpp", "delta-bpp")
    return {n: 100 * v / clean[n] for n, v in d.items()}


# The paper's claims, each as (claim, side, model a, model b, the paper's b - a or a's damage,
# attack). Robustness = damage (a PSNR loss is negative, a rate gain positive); "b more robust
# than a" means a smaller loss / gain. The paper's numbers from Table 1 (and Fig. 5, no number).
CLAIMS = (
    ("the psnr attack damages the pretrained codec", "psnr", None, "pretrained-q4",
     22.3502 - 33.0, None),
    ("the bpp attack damages the pretrained codec", "bpp", None, "pretrained-q4",
     100 * (0.9161 - 0.4978) / 0.4978, None),
    ("Stage I (teacher) is more robust than the pretrained codec", "psnr", "pretrained-q4",
     "teacher", (25.9039 - 32.2592) - (22.3502 - 33.0), None),
    ("Stage I (teacher) is more robust than the pretrained codec", "bpp", "pretrained-q4",
     "teacher", 100 * ((0.7225 - 0.4322) / 0.4322 - (0.9161 - 0.4978) / 0.4978), None),
    ("Stage II (ours) is more robust than Stage I alone", "psnr", "teacher", "pkdt",
     (28.4039 - 32.0802) - (25.9039 - 32.2592), None),
    ("Stage II (ours) is more robust than Stage I alone", "bpp", "teacher", "pkdt",
     100 * ((0.6822 - 0.4323) / 0.4323 - (0.7225 - 0.4322) / 0.4322), None),
    ("ours is more robust than plain adversarial training", "psnr", "adv", "pkdt", None, None),
    ("ours is more robust than plain adversarial training", "bpp", "adv", "pkdt", None, None),
    ("ours is more robust than Ma2023 under the Ma2023 attack (Fig. 5)", "psnr", "ma2023",
     "pkdt", None, "ma2023@noise"),
)


def verdicts(found: Dict[str, Dict[str, Any]]) -> pd.DataFrame:
    """One row per claim and side: the paper's number, ours with a 95 % paired bootstrap
    interval over the images, and the verdict: *confirmed at this scale* (the interval
    excludes 0 in the paper's direction), *not confirmed* (it contains 0), *refuted* (it
    excludes 0 in the other direction), or *not run yet* (a results file is missing)."""
    rows = []
    for claim, side, a, b, paper, attack in CLAIMS:
        unit = "dB" if side == "psnr" else "% rate"
        row = {"claim": claim, "side": f"{side} side ({unit})",
               "paper": None if paper is None else round(paper, 2)}
        if b not in found or (a is not None and a not in found):
            rows.append({**row, "ours": None, "95% CI": "", "verdict": "not run yet"})
            continue
        db = _damage(found[b], side, attack)
        if a is None:
            diffs = list(db.values())
            good = -1 if side == "psnr" else 1  # damage: a PSNR loss, a rate gain
        else:
            da = _damage(found[a], side, attack)
            diffs = [db[n] - da[n] for n in db if n in da]
            good = 1 if side == "psnr" else -1  # b more robust: smaller loss / gain
        ci = stats.bootstrap_ci(diffs)
        if ci["lo"] <= 0 <= ci["hi"]:
            verdict = "not confirmed (interval contains 0)"
        elif (ci["mean"] > 0) == (good > 0):
            verdict = "confirmed at this scale"
        else:
            verdict = "refuted at this scale"
        rows.append({**row, "ours": round(ci["mean"], 2),
                     "95% CI": f"[{ci['lo']:+.2f}, {ci['hi']:+.2f}]", "verdict": verdict})
    return pd.DataFrame(rows)


def codecs(found: Dict[str, Dict[str, Any]], root=".") -> pd.DataFrame:
    """The codecs under attack against JPEG at their own clean rate (log-rate interpolation on
    the JPEG curve of the same images); a codec not yet attacked is shown from its clean-only
    results (``metrics_clean.json`` beside, when present)."""
    from .jpeg import margin_over_jpeg

    rows = []
    for key in ("pretrained-q2", "pretrained-q4", "pretrained-q6", "teacher", "pkdt", "adv",
                "ma2023"):
        path = RUNS[key][0]
        clean = Path(root) / path.replace("metrics_p2.json", "metrics_clean.json")
        r = found.get(key) or (load_results(clean) if clean.is_file() else None)
        if r is not None:
            if key not in found:
                path = str(clean.relative_to(root))
            m = margin_over_jpeg(r, found["jpeg"]) if "jpeg" in found else None
            rows.append({"model": LABELS.get(key, key), "file": path,
                         "bpp": round(r["results"]["bpp"][0], 4),
                         "PSNR (dB)": round(r["results"]["psnr-rgb"][0], 3),
                         "vs JPEG at that rate (dB)": None if m is None else round(m, 2)})
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


def _points(found, keys, kind):
    pts = []
    for k in keys:
        if k in found and k != "jpeg":
            b, p = _cell(found[k], kind, "bpp"), _cell(found[k], kind, "psnr-rgb")
            if b is not None and p is not None:
                pts.append((b, p, viz._se(found[k], kind, "psnr-rgb") or 0.0))
    return sorted(pts)


def clean_only(found: Dict[str, Dict[str, Any]], root=".") -> Dict[str, Dict[str, Any]]:
    """Codecs not attacked yet but measured clean (``metrics_clean.json`` beside their
    protocol-2 file): their clean point still belongs in the clean R-D panel."""
    out = {}
    for key in ("pretrained-q2", "pretrained-q4", "pretrained-q6"):
        p = Path(root) / RUNS[key][0].replace("metrics_p2.json", "metrics_clean.json")
        if key not in found and p.is_file():
            out[key] = load_results(p)
    return out


def fig_rd(found: Dict[str, Dict[str, Any]], clean: Optional[Dict[str, Dict[str, Any]]] = None):
    """Fig. 3 at CPU scale: R-D clean / under the psnr attack / under the bpp attack (worst case
    per image), pretrained curve vs ours, JPEG and the paper's points (hollow). Means over the
    images; the spread of differences is in the tables (``DAMAGE``) and :func:`fig_summary`."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), sharey=False)
    curves = [("pretrained", ("pretrained-q2", "pretrained-q4", "pretrained-q6"), "o-"),
              ("teacher", ("teacher",), "D"), ("adv", ("adv",), "^"),
              ("ma2023", ("ma2023",), "v"), ("pkdt", ("pkdt",), "s")]
    for ax, (label, kind) in zip(axes, BLOCKS):
        for name, keys, style in curves:
            pts = _points({**(clean or {}), **found} if kind is None else found, keys, kind)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], style, color=colour(name),
                        ms=5, lw=1.2,
                        label=LABELS.get(keys[-1] if name != "pretrained" else "pretrained-q4"))
        if kind is None and "jpeg" in found:  # JPEG over the learned codecs' rate range
            top = 1.3 * max([p[0] for p in _points(found, RUNS, None)] or [1.0])
            j = [(b, p) for b, p in zip(found["jpeg"]["results"]["bpp"],
                                        found["jpeg"]["results"]["psnr-rgb"]) if b <= top]
            ax.plot([b for b, _ in j], [p for _, p in j], ".:", color=colour("jpeg"),
                    label="JPEG (Pillow, 4:2:0)")
        for key, vals in PAPER_TABLE1.items():
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
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    return fig


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


def fig_summary(found: Dict[str, Dict[str, Any]]):
    """Fig. 1-style summary: worst-case PSNR loss and rate gain per method at one rate point."""
    rows = [{**found[k], "name": LABELS[k]} for k in TABLE1_ROWS if k in found]
    fig = viz.plot_attack_deltas(rows, psnr_kind="worst-psnr", bpp_kind="worst-bpp")
    for ax in fig.axes:
        for patch, k in zip(ax.patches, [k for k in TABLE1_ROWS if k in found]):
            patch.set_color(colour(k.split("-")[0]))
    return fig


def fig_learning(root, names=("hyper-q4", "hyper-q2", "hyper-q6")):
    """Training PSNR (from the MSE term) and rate of the committed codecs against the step,
    smoothed over 200 steps, so the reader sees where training stopped; None without any."""
    import gzip
    import json
    import math

    runs = []
    for n in names:
        p = Path(root) / "models" / "cpu" / n / "history.jsonl.gz"
        if p.is_file():
            rows = [json.loads(r) for r in gzip.decompress(p.read_bytes()).decode().splitlines()]
            runs.append((n, rows))
    if not runs:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    offset = {"hyper-q2": 11372, "hyper-q6": 16000}  # where each fine-tuning started

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
                              ("table2", TABLE2_ROWS, PAPER_TABLE2)):
        df = table(found, rows, paper)
        tdir.mkdir(parents=True, exist_ok=True)
        df.round(4).to_csv(tdir / f"{name}.csv")
        (tdir / f"{name}.md").write_text(markdown(df) + "\n")
        written += [tdir / f"{name}.csv", tdir / f"{name}.md"]
    for name, df in (("verdicts", verdicts(found)), ("codecs", codecs(found, root))):
        (tdir / f"{name}.md").write_text(flat_markdown(df) + "\n")
        written.append(tdir / f"{name}.md")
    if any(k in found for k in TABLE1_ROWS):
        written += save(fig_rd(found, clean_only(found, root)), out, "fig3_rd_cpu")
        written += save(fig_summary(found), out, "fig1_summary_cpu")
    else:
        notes.append("fig3_rd_cpu, fig1_summary_cpu: no Table 1 results yet")
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
    notes.append("fig4 (eps 1e-3): not run on the strong codecs yet: python -m nic_core.runs "
                 "pretrain -f params/cpu/eval_protocol2.yaml -p eps 0.001 --eval-only "
                 "models/cpu/NAME/model.pt --out results/cpu/NAME/metrics_p2_eps1e-3.json")
    return {"written": written, "notes": notes, "found": sorted(found)}


def main(argv=None) -> int:
    """``python -m nic_core.figures [--root .] [--out figures]``: what ``make figures`` runs."""
    ap = argparse.ArgumentParser(prog="python -m nic_core.figures", description=main.__doc__)
    ap.add_argument("--root", default=".")
    ap.add_argument("--out", default="figures")
    ap.add_argument("--tables", default="results/cpu/tables")
    ap.add_argument("--visual-image", default="kodim04", help="'' for no visual grid")
    ap.add_argument("--visual-iterations", type=int, default=50)
    args = ap.parse_args(argv)
    visual = (dict(image=args.visual_image, iterations=args.visual_iterations)
              if args.visual_image else None)
    res = build(args.root, args.out, args.tables, visual=visual)
    for p in res["written"]:
        print(f"wrote {p}")
    for n in res["notes"]:
        print(f"note: {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
