"""The attack explorer's widgets (ipywidgets): controls, progress and the figure.

:meth:`nic_core.explorer.Explorer.widget` builds an :class:`ExplorerUI`; everything it shows
is drawn by :mod:`nic_core.explorer_view` from the explorer's cache.
"""
from __future__ import annotations

import html
import time
from typing import Optional

import ipywidgets as W

from . import attacks as _attacks
from .config import eps_key
from .data import DataError
from .explorer_view import ATTACK_LABELS
from .metrics import psnr_from_mse


class ExplorerUI:
    """The widgets of :meth:`Explorer.widget`; ``.box`` is what a notebook displays.

    Controls: ``image`` (Dropdown + thumbnail), ``attack`` (Dropdown), ``eps``
    (SelectionSlider over the eps grid), ``iterations`` (IntSlider), ``models``
    (SelectMultiple), ``precompute`` (Checkbox). Output: ``progress`` (IntProgress),
    ``status`` (HTML), ``metrics`` (HTML table), ``figure`` (Image).
    """

    def __init__(self, ex, image, attack, eps, iterations, models, precompute):
        self.ex = ex
        grid = list(ex.eps_grid)
        if eps_key(eps) not in grid:
            grid = sorted(set(grid) | {eps_key(eps)})
            ex.eps_grid = grid
        models = list(models) if models is not None else list(ex.models)
        slow = dict(continuous_update=False)
        style = {"description_width": "80px"}
        self.image = W.Dropdown(options=sorted(ex.image_paths), value=image,
                                description="image", style=style,
                                layout=W.Layout(width="230px"))
        self.thumb = W.Image(value=ex.thumbnail_png(image), format="png",
                             layout=W.Layout(width="180px"))
        self.attack = W.Dropdown(options=[(ATTACK_LABELS.get(k, k), k) for k in _attacks.ATTACKS],
                                 value=attack, description="attack", style=style,
                                 layout=W.Layout(width="300px"))
        self.eps = W.SelectionSlider(options=[(f"{e:g}", e) for e in grid],
                                     value=eps_key(eps), description="eps (MSE)", style=style,
                                     layout=W.Layout(width="420px"), **slow)
        self.eps.add_class("nic-eps")
        self.eps_db = W.HTML()
        self.iterations = W.IntSlider(value=int(iterations), min=1,
                                      max=max(200, int(iterations)), description="iterations",
                                      style=style, layout=W.Layout(width="420px"), **slow)
        self.models = W.SelectMultiple(options=list(ex.models), value=tuple(models),
                                       description="models", rows=max(2, min(4, len(ex.models))),
                                       style=style, layout=W.Layout(width="330px"))
        self.precompute = W.Checkbox(value=bool(precompute),
                                     description="precompute the eps grid (instant slider)",
                                     indent=False)
        self.progress = W.IntProgress(value=0, min=0, max=1, description="",
                                      layout=W.Layout(width="300px"))
        self.status = W.HTML()
        self.status.add_class("nic-status")
        self.metrics = W.HTML()
        self.metrics.add_class("nic-metrics-box")
        self.figure = W.Image(format="png", layout=W.Layout(max_width="100%"))
        self.figure.add_class("nic-figure")
        header = W.HTML(f"<b>Attack explorer</b> - {ex.dataset}; centre crop "
                        f"{ex.crop or 'none'}; results cached per (image, attack, eps, "
                        "iterations, model)")
        controls = W.HBox([
            W.VBox([self.image, self.thumb]),
            W.VBox([self.attack, W.HBox([self.eps, self.eps_db]), self.iterations]),
            W.VBox([self.models, self.precompute]),
        ])
        self.box = W.VBox([header, controls, W.HBox([self.progress, self.status]),
                           self.metrics, self.figure])
        self.box.add_class("nic-explorer")
        self.n_renders = 0
        self.error: Optional[BaseException] = None
        self.image.observe(self._on_image, names="value")
        for w in (self.attack, self.eps, self.iterations, self.models, self.precompute):
            w.observe(self._on_change, names="value")
        self.refresh()

    # the selection as plain values
    def selection(self):
        return (self.image.value, self.attack.value, self.eps.value, self.iterations.value,
                list(self.models.value))

    def _on_image(self, change):
        try:
            self.thumb.value = self.ex.thumbnail_png(change["new"])
        except DataError as e:  # an unreadable file: say which, show nothing stale
            self._show_error(e)
            return
        self.refresh()

    def _show_error(self, e: BaseException) -> None:
        """The error in the status line; the previous image's table and figure cleared."""
        self.error = e
        self.status.value = f"<b style='color:#c00'>error: {html.escape(str(e))}</b>"
        self.metrics.value = ""
        self.figure.value = b""

    def _on_change(self, change):
        self.refresh()

    def _progress(self, i, n, what):
        self.progress.max = max(1, n)
        self.progress.value = i
        self.status.value = (f"computing {i + 1}/{n}: {what} ..." if i < n
                             else f"computed {n}")

    def _render(self, sel, note=""):
        name, attack, eps, iters, models = sel
        self.eps_db.value = f"noise PSNR {psnr_from_mse(eps):.1f} dB"
        self.metrics.value = self.ex.table_html(name, attack, eps, iters, models)
        self.figure.value = self.ex.figure_png(name, attack, eps, iters, models)
        self.n_renders += 1
        self.status.value = note

    def refresh(self) -> None:
        """Compute what the selection needs (current eps first), then draw; errors shown."""
        sel = self.selection()
        name, attack, eps, iters, models = sel
        if not models:
            self.status.value = "<b>select at least one model</b>"
            return
        try:
            t0 = time.perf_counter()
            now = self.ex.missing(name, attack, [eps], iters, models)
            if now:
                self.ex.precompute(name, attack, iters, models, [eps], progress=False,
                                   callback=self._progress)
            later = (self.ex.missing(name, attack, self.ex.eps_grid, iters, models)
                     if self.precompute.value else [])
            note = ("cached" if not now else f"computed in {time.perf_counter() - t0:.1f} s")
            self._render(sel, note + (f"; filling the eps grid ({len(later)} more) ..."
                                      if later else ""))
            if later:
                self.ex.precompute(name, attack, iters, models, progress=False,
                                   callback=self._progress)
                self._render(sel, f"eps grid filled in {time.perf_counter() - t0:.1f} s")
            self.error = None
        except DataError as e:  # the user's data (an unreadable image): shown, not raised
            self._show_error(e)
        except Exception as e:  # shown in the widget: observers' errors are otherwise hidden
            self._show_error(e)
            self.status.value = (f"<b style='color:#c00'>error: {type(e).__name__}: "
                                 f"{html.escape(str(e))}</b>")
            raise
