"""What the attack explorer shows: its figure, metrics table and PNG helpers.

Functions of an :class:`nic_core.explorer.Explorer` (``ex``), which computes and caches the
results; the widgets (:mod:`nic_core.explorer_widgets`) and the static output of notebook 06
both draw through here.
"""
from __future__ import annotations

import io
from typing import Optional, Sequence, Tuple

import torch

from .config import eps_key

ATTACK_LABELS = {
    "psnr": "psnr attack (eq. 6)",
    "bpp": "bpp attack (eq. 7)",
    "ma2023": "Ma2023 (Chen & Ma)",
    "pgd-psnr": "PGD L-inf, psnr",
    "pgd-bpp": "PGD L-inf, bpp",
    "pgd-l2-psnr": "PGD L2, psnr",
    "pgd-l2-bpp": "PGD L2, bpp",
    "fgsm-psnr": "FGSM, psnr",
    "fgsm-bpp": "FGSM, bpp",
    "noise": "random noise",
}


def _to_png(t: torch.Tensor, box: Optional[Tuple[int, int, int, int]] = None,
            width: Optional[int] = None) -> bytes:
    from PIL import Image, ImageDraw

    arr = (t.detach().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy())
    im = Image.fromarray(arr)
    scale = 1.0
    if width and im.width > width:
        scale = width / im.width
        im = im.resize((width, max(1, round(im.height * scale))))
    if box is not None:
        d = ImageDraw.Draw(im)
        d.rectangle([round(c * scale) for c in box], outline=(255, 40, 40), width=2)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()




def _img(t: torch.Tensor):
    return t.detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy()


def table(ex, name: str, attack: str, eps: float, iterations: int,
          models: Sequence[str]):
    """pandas DataFrame: per model, clean and attacked bpp (est., real), PSNR, noise MSE."""
    import pandas as pd

    rows, index = [], []
    for m in models:
        r = ex.result(name, attack, eps, iterations, m)
        for which in ("clean", "attacked"):
            s = r[which]
            rows.append({"bpp est.": s["bpp_est"], "bpp real": s["bpp_real"],
                         "PSNR est. (dB)": s["psnr_est"], "PSNR real (dB)": s["psnr"],
                         "noise MSE": (float("nan") if which == "clean"
                                       else r["noise_mse"]),
                         "noise PSNR (dB)": (float("nan") if which == "clean"
                                             else r["noise_psnr"])})
            index.append((m, which))
    df = pd.DataFrame(rows, index=pd.MultiIndex.from_tuples(index, names=["model", "input"]))
    return df

def table_html(ex, name, attack, eps, iterations, models) -> str:
    df = table(ex, name, attack, eps, iterations, models)
    fmt = {"bpp est.": "{:.4f}", "bpp real": "{:.4f}", "PSNR est. (dB)": "{:.2f}",
           "PSNR real (dB)": "{:.2f}", "noise MSE": "{:.2e}", "noise PSNR (dB)": "{:.2f}"}
    body = df.to_html(formatters={k: (lambda v, f=f: "" if v != v else f.format(v))
                                  for k, f in fmt.items()},
                      na_rep="", classes="nic-explorer-metrics", border=0)
    style = ("<style>.nic-explorer-metrics td, .nic-explorer-metrics th "
             "{padding: 1px 9px; text-align: right;}</style>")
    return (f"{style}<div class='nic-metrics'><b>{ATTACK_LABELS.get(attack, attack)}</b>, "
            f"eps = {eps_key(eps):g}, {int(iterations)} iterations, image {name}"
            f"{body}</div>")

def figure(ex, name: str, attack: str, eps: float, iterations: int,
           models: Sequence[str]):
    """The explorer's figure (a matplotlib Figure, not registered with pyplot).

    One row per model: original | adversarial | noise (amplified) | reconstruction of the
    clean image | reconstruction of the attacked image; last row: PSNR and bpp (real)
    against eps for every cached eps (clean dashed), the current eps marked.
    """
    from matplotlib.figure import Figure
    from matplotlib.gridspec import GridSpec

    models = list(models)
    results = [ex.result(name, attack, eps, iterations, m) for m in models]
    n = len(models)
    fig = Figure(figsize=(13, 2.75 * n + 3.0), dpi=80)
    gs = GridSpec(n + 1, 5, figure=fig, height_ratios=[1] * n + [1.15], hspace=0.45,
                  wspace=0.08)
    for i, (m, r) in enumerate(zip(models, results)):
        noise = r["x_adv"] - r["x"]
        peak = float(noise.abs().flatten().quantile(0.99)) if noise.numel() else 0.0
        gain = 0.5 / peak if peak > 0 else 1.0
        panels = [
            (r["x"], "original"),
            (r["x_adv"], f"adversarial\nnoise MSE {r['noise_mse']:.2e} "
                         f"({r['noise_psnr']:.1f} dB)"),
            (0.5 + gain * noise, f"noise x{gain:.0f}\n(grey = 0)"),
            (r["clean"]["x_hat"], f"reconstruction of clean\n"
                                  f"{r['clean']['bpp_real']:.3f} bpp, "
                                  f"{r['clean']['psnr']:.2f} dB"),
            (r["attacked"]["x_hat"], f"reconstruction of attacked\n"
                                     f"{r['attacked']['bpp_real']:.3f} bpp, "
                                     f"{r['attacked']['psnr']:.2f} dB"),
        ]
        for j, (t, title) in enumerate(panels):
            ax = fig.add_subplot(gs[i, j])
            ax.imshow(_img(t), interpolation="nearest")
            ax.set_title(title, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(m, fontsize=9, fontweight="bold")
    ax_p = fig.add_subplot(gs[n, 0:2])
    ax_b = fig.add_subplot(gs[n, 3:5])
    for ci, m in enumerate(models):
        c = f"C{ci % 10}"
        pts = ex.curve(name, attack, iterations, m)
        es = [p["eps"] for p in pts]
        ax_p.plot(es, [p["attacked"]["psnr"] for p in pts], "o-", color=c, label=m)
        ax_b.plot(es, [p["attacked"]["bpp_real"] for p in pts], "o-", color=c, label=m)
        clean = ex.clean(name, m)
        ax_p.axhline(clean["psnr"], color=c, ls="--", lw=1, label=f"{m} clean")
        ax_b.axhline(clean["bpp_real"], color=c, ls="--", lw=1, label=f"{m} clean")
    for ax, yl in ((ax_p, "PSNR (dB) vs original"), (ax_b, "bpp (real)")):
        ax.set_xscale("log")
        ax.axvline(eps_key(eps), color="k", alpha=0.3, lw=3)
        ax.set_xlabel("eps (mean squared noise)")
        ax.set_ylabel(yl)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    h, w = results[0]["x"].shape[-2:]
    fig.suptitle(f"{ATTACK_LABELS.get(attack, attack)} on {name} ({h}x{w} px), "
                 f"eps = {eps_key(eps):g}, {int(iterations)} iterations", fontsize=11)
    return fig

def figure_png(ex, name, attack, eps, iterations, models) -> bytes:
    """The figure as PNG bytes (what both the widget and the static output show)."""
    fig = figure(ex, name, attack, eps, iterations, models)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()

def show(ex, name, attack, eps, iterations, models=None) -> None:
    """Display the static figure and the table (a headless run stores these)."""
    from IPython.display import HTML, Image, display

    models = list(models) if models is not None else list(ex.models)
    display(Image(data=figure_png(ex, name, attack, eps, iterations, models)))
    display(HTML(table_html(ex, name, attack, eps, iterations, models)))
