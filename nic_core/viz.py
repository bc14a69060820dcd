"""Plots and tables: training curves, R-D plots, Table-1-style frames, image grids."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional

import matplotlib.pyplot as plt


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
