"""Plots and tables: training curves, R-D plots, Table-1-style frames, image grids."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, List, Optional

import matplotlib.pyplot as plt

from . import cli
from .attacks import parse_spec, side
from .evaluate import load_results
from .runs import comparable
from .stats import interpolate_rd, mean_se, paired_difference


def plot_training_curve(history: List[Dict[str, float]], keys=("loss", "bpp_loss", "mse_loss"),
                        path: Optional[Path] = None, title: str = ""):
    """Loss terms against step (one panel per key present in the history); optionally saved."""
    keys = [k for k in keys if history and k in history[0]]
    if not history or not keys:
        raise ValueError("empty training history: nothing to plot (did training run?)")
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3), squeeze=False)
    steps = [r["step"] for r in history]
    for ax, k in zip(axes[0], keys):
        ax.plot(steps, [r.get(k, float("nan")) for r in history], lw=1)
        ax.set_xlabel("step")
        ax.set_title(k)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig


# --- robustness results (nic_core.evaluate JSON): Table 1 and R-D plots -------------------------

TABLE1_BLOCKS = (("clean", None), ("psnr attack", "psnr"), ("bpp attack", "bpp"))


def _results_list(results_list):
    """Accept one results dict, a list of dicts, or paths to results JSON files."""
    if isinstance(results_list, dict):
        results_list = [results_list]
    out = []
    for r in results_list:
        r = r if isinstance(r, dict) else load_results(r)
        n = len(r["results"].get("bpp", [None]))
        if n > 1 and "attacks" not in r:  # CompressAI's multi-point file (e.g. a JPEG curve)
            out += [{**r, "results": {k: [v[i]] for k, v in r["results"].items()
                                      if isinstance(v, list) and len(v) == n}} for i in range(n)]
        else:
            out.append(r)
    if not out:
        raise ValueError("no results given")
    return out


def table1(results_list, attacks=None, digits: Optional[int] = 4):
    """Rows = model name; columns (clean | psnr attack | bpp attack) x (bpp, psnr): paper Table 1.

    ``bpp`` is each results' ``bpp`` (the real bitstream rate when evaluated with
    ``real=True``); ``psnr`` is ``psnr-rgb`` against the clean image. A missing attack gives
    NaN. ``attacks`` is a sequence of (column label, attack spec or None for clean); default:
    clean, psnr, bpp, and the worst-case columns when any results have them.
    """
    import pandas as pd

    results = _results_list(results_list)
    if attacks is None:
        worst = [k for k in ("worst-psnr", "worst-bpp")
                 if any(k in r.get("attacks", {}) for r in results)]
        attacks = TABLE1_BLOCKS + tuple((k, k) for k in worst)
    rows, index = [], []
    for r in results:
        row = []
        for _, kind in attacks:
            res = r["results"] if kind is None else r.get("attacks", {}).get(kind, {}).get(
                "results")
            for key in ("bpp", "psnr-rgb"):
                v = res.get(key, [None])[-1] if res else None
                row.append(float("nan") if v is None else float(v))
        rows.append(row)
        index.append(r.get("name", "model"))
    cols = pd.MultiIndex.from_tuples([(label, m) for label, _ in attacks for m in ("bpp", "psnr")])
    df = pd.DataFrame(rows, index=pd.Index(index, name="model"), columns=cols)
    return df.round(digits) if digits is not None else df


def plot_rd(results_list, ax=None, attacks: Optional[List[str]] = None, title: str = ""):
    """R-D plot (bpp vs PSNR): clean and attacked points per model; returns the figure.

    Results sharing a ``name`` (several quality points of one model) are joined into a curve
    sorted by bpp, like the paper's Fig. 3; clean is a solid line, each attack dashed.
    """
    results = _results_list(results_list)
    if ax is None:
        fig, ax = plt.subplots(figsize=(5, 4))
    else:
        fig = ax.figure
    kinds = attacks if attacks is not None else sorted(
        {k for r in results for k in r.get("attacks", {})})
    by_name: Dict[str, list] = {}
    for r in results:
        by_name.setdefault(r.get("name", "model"), []).append(r)
    markers = "sv^Dpx*"
    for ci, (name, rs) in enumerate(by_name.items()):
        color = f"C{ci % 10}"
        series = [("clean", None, "-", "o")] + [
            (k, k, "--", markers[i % len(markers)]) for i, k in enumerate(kinds)]
        for label, kind, ls, mk in series:
            pts = []
            for r in rs:
                res = r["results"] if kind is None else r.get("attacks", {}).get(kind, {}).get(
                    "results")
                if not res:
                    continue
                b, p = res.get("bpp", [None])[-1], res.get("psnr-rgb", [None])[-1]
                if b is not None and p is not None:
                    pts.append((b, p))
            if pts:
                pts.sort()
                ax.plot([p[0] for p in pts], [p[1] for p in pts], ls=ls, marker=mk, color=color,
                        label=f"{name}" + ("" if kind is None else f" ({label} attack)"))
    ax.set_xlabel("bpp")
    ax.set_ylabel("PSNR (dB)")
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    return fig


def plot_attack_deltas(results_list, axes=None, psnr_kind: str = "psnr", bpp_kind: str = "bpp"):
    """Bars per model: PSNR change under the psnr attack, rate change (%) under the bpp attack,
    with the standard error over images as error bars (when the results have it).

    The two numbers the paper's attacks aim at (real bitstreams, means over the images), so
    models at different clean rate-distortion points can still be compared on robustness.
    ``psnr_kind`` / ``bpp_kind`` choose the blocks (e.g. ``worst-psnr``, ``worst-bpp``).
    """
    results = _results_list(results_list)
    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    fig = axes[0].figure
    names = [r.get("name", "model") for r in results]

    def block(r, kind, key):
        res = r.get("attacks", {}).get(kind, {}).get("results", {})
        v = res.get(key, [None])[-1]
        return float("nan") if v is None else float(v)

    def se(r, kind, key, scale=1.0):
        v = (r.get("attacks", {}).get(kind, {}).get("stderr") or {}).get(key)
        return 0.0 if v is None else scale * float(v)

    dpsnr = [block(r, psnr_kind, "delta-psnr") for r in results]
    dbpp = [100 * block(r, bpp_kind, "delta-bpp") / r["results"]["bpp"][-1] for r in results]
    epsnr = [se(r, psnr_kind, "delta-psnr") for r in results]
    ebpp = [se(r, bpp_kind, "delta-bpp", 100 / r["results"]["bpp"][-1]) for r in results]
    colors = [f"C{i % 10}" for i in range(len(results))]
    for ax, vals, err, label, fmt in (
            (axes[0], dpsnr, epsnr, f"{psnr_kind}: PSNR change (dB)", "{:+.2f}"),
            (axes[1], dbpp, ebpp, f"{bpp_kind}: rate change (%)", "{:+.1f}")):
        ax.barh(range(len(vals)), vals, color=colors, xerr=err if any(err) else None,
                error_kw={"lw": 0.8, "capsize": 2})
        ax.set_yticks(range(len(vals)), names)
        ax.invert_yaxis()
        ax.axvline(0, color="k", lw=0.8)
        ax.set_title(label, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
        for i, (v, e) in enumerate(zip(vals, err)):
            if v == v:  # the label beyond the error bar
                ax.text(v + (e if v >= 0 else -e), i, " " + fmt.format(v) + " ", va="center",
                        ha="left" if v >= 0 else "right", fontsize=8)
        ends = [v + (e if v >= 0 else -e) for v, e in zip(vals, err) if v == v]
        lo, hi = min([0] + ends), max([0] + ends)
        pad = 0.25 * (hi - lo or 1)
        ax.set_xlim(lo - (pad if lo < 0 else 0), hi + (pad if hi > 0 else 0))
    axes[1].set_yticklabels([])
    fig.tight_layout()
    return fig


def blocks_for(specs: str):
    """``"psnr,bpp"`` -> Table 1 blocks ``(("clean", None), ("psnr attack", "psnr"), ...)``."""
    specs = [k.strip() for k in specs.split(",") if k.strip()]
    return (("clean", None),) + tuple(
        (k if k.startswith("worst-") else f"{k} attack", k) for k in specs)


def _se(r, kind, key) -> Optional[float]:
    """Standard error over images of one Table 1 cell (from ``per_image``; also old files)."""
    vals = []
    for row in r.get("per_image", []):
        src = row if kind is None else (row.get("attacks") or {}).get(kind)
        if src is not None:
            vals.append(src.get(key))
    return mean_se(vals)["se"] if vals else None


def table1_markdown(results_list, attacks=TABLE1_BLOCKS, stderr: bool = False) -> str:
    """:func:`table1` as a Markdown table (bpp to 3 decimals, PSNR to 2), e.g. for the README.

    ``stderr``: each cell as ``mean ± standard error over images``.
    """
    results = _results_list(results_list)
    df = table1(results, attacks, digits=None)
    head = "| model | " + " | ".join(f"{a} bpp | {a} PSNR" for a, _ in attacks) + " |"
    sep = "|---|" + "---:|" * (2 * len(attacks))
    rows = []
    for r, name, vals in zip(results, df.index, df.to_numpy()):
        cells = []
        for i, v in enumerate(vals):
            d = 3 if i % 2 == 0 else 2
            if v != v:
                cells.append("n/a")
                continue
            cell = f"{v:.{d}f}"
            se = _se(r, attacks[i // 2][1], ("bpp", "psnr-rgb")[i % 2]) if stderr else None
            cells.append(cell + (f" ± {se:.{d}f}" if se is not None else ""))
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join([head, sep, *rows])


def differences_markdown(results_list, ref: str, attacks=TABLE1_BLOCKS,
                         deltas: bool = False) -> str:
    """Paired per-image differences to the row named ``ref``: PSNR change (dB) and rate change
    (bpp) under each block, mean and 95 % bootstrap interval; ``≈0`` marks an interval that
    contains zero (no ranking). ``deltas``: compare the attacks' *damage* (attacked minus
    clean, per image) instead of the attacked values, i.e. robustness apart from the clean
    operating point."""
    results = _results_list(results_list)
    base = next((r for r in results if r.get("name") == ref), None)
    if base is None:
        raise ValueError(f"no results named {ref!r}; have {[r.get('name') for r in results]}")
    what = ("d{}" if deltas else "{}")
    head = ("| model - " + ref + " | " + " | ".join(
        f"{a} {what.format('bpp') if k else 'bpp'} | {a} {what.format('PSNR') if k else 'PSNR'}"
        for a, k in attacks) + " |")
    sep = "|---|" + "---:|" * (2 * len(attacks))
    rows = []
    for r in results:
        if r is base:
            continue
        cells = []
        for _, kind in attacks:
            keys = (("delta-bpp", 3), ("delta-psnr", 2)) if deltas and kind else \
                (("bpp", 3), ("psnr-rgb", 2))
            for key, d in keys:
                try:
                    c = paired_difference(base, r, kind, key)
                except ValueError:
                    cells.append("n/a")
                    continue
                mark = " ≈0" if c["zero_in_ci"] else ""
                cells.append(f"{c['mean']:+.{d}f} [{c['lo']:+.{d}f}, {c['hi']:+.{d}f}]{mark}")
        rows.append(f"| {r.get('name')} | " + " | ".join(cells) + " |")
    return "\n".join([head, sep, *rows])


def matched_rate_markdown(curve, results_list, attacks=TABLE1_BLOCKS) -> str:
    """Robustness at a matched operating point: each model against the undefended model's R-D
    curve (``curve``: its results at >= 2 rate points) *at the model's own clean rate*.

    A defence can buy "robustness" by moving along the R-D curve (a lower rate is often less
    fragile); here each PSNR is reported as the difference to the curve's PSNR at the same clean
    bpp (log-rate interpolation, :func:`nic_core.stats.interpolate_rd`), clean and under each
    attack. ``n/a``: the model's rate lies outside the curve.
    """
    curve = _results_list(curve)
    results = _results_list(results_list)

    def block(r, kind):
        res = r["results"] if kind is None else (r.get("attacks", {}).get(kind) or {}).get(
            "results")
        return None if not res else res.get("psnr-rgb", [None])[-1]

    head = "| model | clean bpp | " + " | ".join(f"{a} PSNR - curve" for a, _ in attacks) + " |"
    sep = "|---|---:|" + "---:|" * len(attacks)
    rows = []
    for r in results:
        bpp = r["results"]["bpp"][-1]
        cells = []
        for _, kind in attacks:
            pts = [(c["results"]["bpp"][-1], block(c, kind)) for c in curve]
            pts = [p for p in pts if p[1] is not None]
            ref = interpolate_rd(pts, bpp) if len(pts) >= 2 else None
            v = block(r, kind)
            cells.append("n/a" if ref is None or v is None else f"{v - ref:+.2f}")
        rows.append(f"| {r.get('name')} | {bpp:.3f} | " + " | ".join(cells) + " |")
    return "\n".join([head, sep, *rows])


def protocols_markdown(pairs) -> str:
    """Protocol 1 (last iterate) against protocol 2 (strongest iterate, worst case) for the same
    models: ``pairs`` of (old results, new results). Mean PSNR change (dB) under the psnr
    attack and rate change (%) under the bpp attack, each attack's own row and the worst case."""
    def delta(r, kind, rate):
        block = (r.get("attacks", {}).get(kind) or {}).get("results")
        if not block:
            return "n/a"
        if rate:
            return f"{100 * block['delta-bpp'][0] / r['results']['bpp'][0]:+.1f} %"
        return f"{block['delta-psnr'][0]:+.2f}"

    head = ("| model | psnr attack dPSNR, protocol 1 | protocol 2 | worst case | "
            "bpp attack rate, protocol 1 | protocol 2 | worst case |")
    rows = [head, "|---|---:|---:|---:|---:|---:|---:|"]
    for old, new in pairs:
        old, new = _results_list([old])[0], _results_list([new])[0]
        if old.get("name") != new.get("name"):
            raise ValueError(f"pair of different models: {old.get('name')!r} / {new.get('name')!r}")
        rows.append(f"| {new.get('name')} | {delta(old, 'psnr', False)} | "
                    f"{delta(new, 'psnr', False)} | {delta(new, 'worst-psnr', False)} | "
                    f"{delta(old, 'bpp', True)} | {delta(new, 'bpp', True)} | "
                    f"{delta(new, 'worst-bpp', True)} |")
    return "\n".join(rows)


def plot_saturation(sweeps, ax=None):
    """Attacked PSNR (psnr-side) or rate (bpp-side) against attack iterations, one line per
    sweep of :func:`nic_core.transfer.saturation`; the saturation point is marked."""
    sweeps = [sweeps] if isinstance(sweeps, dict) else list(sweeps)
    if ax is None:
        fig, ax = plt.subplots(figsize=(5, 3.5))
    for sw in sweeps:
        rate = side(parse_spec(sw["attack"])[0]) == "bpp"
        xs = [r["iterations"] for r in sw["rows"]]
        ys = [r["bpp"] if rate else r["psnr-rgb"] for r in sw["rows"]]
        line, = ax.plot(xs, ys, "o-", label=f"{sw['name']} ({sw['attack']})")
        if sw["saturated_at"] is not None:
            i = xs.index(sw["saturated_at"])
            ax.plot([xs[i]], [ys[i]], "s", ms=11, mfc="none", color=line.get_color())
        ax.set_ylabel("attacked bpp" if rate else "attacked PSNR (dB)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("attack iterations")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("attack saturation (square: < 0.1 dB / 1 % per doubling from here)", fontsize=8)
    return ax.figure


def plot_transfer(matrix, key: str = "delta-psnr", ax=None):
    """Heat map of :func:`nic_core.transfer.transfer_matrix` (rows: crafted on; columns: coded
    by); the diagonal is white-box."""
    names = matrix["models"]
    vals = matrix[key]
    if ax is None:
        fig, ax = plt.subplots(figsize=(1.2 * len(names) + 2, 1.0 * len(names) + 1.5))
    im = ax.imshow(vals, cmap="viridis" if key == "delta-psnr" else "magma_r")
    for i in range(len(names)):
        for j in range(len(names)):
            light = sum(im.cmap(im.norm(vals[i][j]))[:3]) > 1.8  # dark text on light cells
            ax.text(j, i, f"{vals[i][j]:+.2f}" if key == "delta-psnr" else f"{vals[i][j]:+.3f}",
                    ha="center", va="center", color="k" if light else "w", fontsize=8)
    for f in matrix.get("masking", []):  # flagged: hurt more by this transfer than white-box
        if f.get("key") == key:
            i, j = names.index(f["source"]), names.index(f["target"])
            ax.add_patch(plt.Rectangle((j - 0.47, i - 0.47), 0.94, 0.94, fill=False,
                                       ec="red", lw=2))
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel("coded by (target)")
    ax.set_ylabel("attack crafted on (source)")
    unit = "dB" if key == "delta-psnr" else "bpp"
    ax.set_title(f"{matrix['attack']} transfer: {key} ({unit}); red: hurt more than by "
                 "its own white-box attack", fontsize=8)
    ax.figure.colorbar(im, ax=ax, shrink=0.8)
    return ax.figure


def main(argv=None) -> int:
    """``python -m nic_core.viz table METRICS.json ... [--plot FIG.png]``: Table 1 in Markdown;
    ``python -m nic_core.viz protocols OLD.json NEW.json ...``: protocol 1 against 2."""
    ap = argparse.ArgumentParser(prog="python -m nic_core.viz", description=main.__doc__)
    ap.add_argument("command", choices=["table", "protocols"],
                    help="table: Table 1; protocols: pairs OLD.json NEW.json of one model each, "
                         "protocol 1 against protocol 2")
    ap.add_argument("results", nargs="+", help="metrics.json files (nic_core.evaluate format)")
    ap.add_argument("--names", default=None,
                    help="comma-separated row names replacing the files' own, in order")
    ap.add_argument("--plot", default=None, help="also save an R-D plot (clean and attacked)")
    ap.add_argument("--deltas", default=None,
                    help="also save bars of the PSNR / rate change under each attack")
    ap.add_argument("--attacks", default="psnr,bpp",
                    help="comma-separated attack specs / worst-psnr, worst-bpp as columns")
    ap.add_argument("--stderr", action="store_true", help="cells as mean ± standard error")
    ap.add_argument("--vs", default=None, metavar="NAME",
                    help="also print paired differences to this row with 95 %% bootstrap CIs")
    ap.add_argument("--diff-only", action="store_true", help="with --vs: only the differences")
    ap.add_argument("--damage", action="store_true",
                    help="with --vs: compare attacked minus clean (robustness), not attacked values")
    args = ap.parse_args(argv)
    blocks = blocks_for(args.attacks)
    if args.command == "protocols":
        if len(args.results) % 2:
            ap.error("protocols takes pairs: OLD.json NEW.json ...")
        print(protocols_markdown(list(zip(args.results[::2], args.results[1::2]))))
        return 0
    results = _results_list(args.results)
    if args.names:
        names = [n.strip() for n in args.names.split(",")]
        if len(names) != len(results):
            ap.error(f"--names has {len(names)} names for {len(results)} results")
        results = [{**r, "name": n} for r, n in zip(results, names)]
    results = comparable(results)
    if not (args.vs and args.diff_only):
        print(table1_markdown(results, blocks, stderr=args.stderr))
    if args.vs:
        if not args.diff_only:
            print()
        print(differences_markdown(results, args.vs, blocks, deltas=args.damage))
    if args.plot:
        fig = plot_rd(results, title="clean and attacked (real bpp)")
        fig.savefig(args.plot, dpi=120, bbox_inches="tight")
        print(f"saved {args.plot}")
    if args.deltas:
        side_kinds = [k for _, k in blocks if k]
        pk = next((k for k in side_kinds if "psnr" in k), "psnr")
        bk = next((k for k in side_kinds if "bpp" in k), "bpp")
        fig = plot_attack_deltas(results, psnr_kind=pk, bpp_kind=bk)
        fig.savefig(args.deltas, dpi=120, bbox_inches="tight")
        print(f"saved {args.deltas}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
