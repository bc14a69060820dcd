"""Interactive attack explorer: one image, one attack, a budget slider, one or more codecs.

The logic behind ``notebooks/06_attack_explorer.ipynb``. For a test image (a centre crop), an
attack kind of :data:`nic_core.attacks.ATTACKS`, a budget ``eps`` (mean squared noise per
pixel, arXiv 2403.06700 sec. 2.3; the paper uses 0.0005 and 0.001) and a number of iterations,
each selected codec is attacked white-box, and the explorer shows the original, the adversarial
image, its noise amplified to be visible, the codec's reconstruction of the clean and of the
attacked image, a table of estimated / real (bitstream) bpp and PSNR clean vs attacked with the
achieved noise MSE, and PSNR / bpp against eps.

Responsiveness:

* :class:`Explorer` caches every attack result by ``(image, attack, eps, iterations, model)``
  (and every clean measurement by ``(image, model)``); a cache hit never recomputes
  (``Explorer.n_attacks`` / ``n_clean`` count the real computations).
* :meth:`Explorer.precompute` fills an eps grid in advance (tqdm progress), so moving the eps
  slider over the grid is instant.
* In the widget (:meth:`Explorer.widget`) the slow controls use ``continuous_update=False``,
  the current eps is computed and drawn first, the rest of the grid after it (when the
  "precompute" box is ticked), with a progress bar and a status line.

The same figure function (:meth:`Explorer.figure_png`) feeds the widget and the static figure
of a headless run (papermill / nbval store no widget output, so the notebook also displays one
static figure at the default eps).

Checkpoints are found relative to the working directory, then relative to the repository
root (a notebook opened in JupyterLab runs in ``notebooks/``). When none exists the explorer
says which notebook makes it and, with ``train_if_missing``, trains a tiny codec on the spot
(about a hundred steps, seconds) so that a newcomer sees something.
"""
from __future__ import annotations

import io
import math
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from . import attacks as _attacks
from . import checkpoints, config, data
from .config import DEFAULT_CHECKPOINTS, _eps_key, parse_eps_grid
from .metrics import psnr, psnr_from_mse, real_codec, update_entropy_tables
from .models import codec_forward

__all__ = ["SCHEMA", "defaults", "validate", "from_notebook", "find_checkpoints", "load_models",
           "train_fallback", "Explorer", "setup", "parse_eps_grid", "ATTACK_LABELS"]

REPO_ROOT = Path(__file__).resolve().parents[1]

# --------------------------------------------------------------------------- parameters
# One schema for every notebook: the explorer's lives in nic_core.config (EXPLORER).

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
SCHEMA = config.EXPLORER

# notebook that writes the checkpoint of a run folder
PRODUCED_BY = {"01_pretrain": "notebooks/01_pretrain.ipynb",
               "02_teacher": "notebooks/02_teacher.ipynb",
               "03_pkdt": "notebooks/03_pkdt.ipynb (after 01_pretrain and 02_teacher)"}


def validate(params: Dict[str, Any]) -> Dict[str, Any]:
    """Check names, types and ranges of the explorer's parameters (``config.EXPLORER``)."""
    out = config.validate("explorer", params)
    out.pop("stage")
    return out


def defaults(**overrides) -> Dict[str, Any]:
    """The explorer's default (smoke-sized) parameters, with overrides validated."""
    return validate(overrides)


def from_notebook(namespace: Dict[str, Any]) -> Dict[str, Any]:
    """The explorer's parameters from a notebook (:func:`nic_core.config.from_notebook`)."""
    out = config.from_notebook("explorer", namespace)
    out.pop("stage")
    return out


# --------------------------------------------------------------------------- models


def _resolve(path: str) -> Optional[Path]:
    """An existing file: ``path`` itself, else relative to the repository root."""
    p = Path(path).expanduser()
    if p.is_file():
        return p
    if not p.is_absolute() and (REPO_ROOT / p).is_file():
        return REPO_ROOT / p
    return None


def _hint(path: str) -> str:
    run = Path(path).parent.name
    nb = PRODUCED_BY.get(run)
    return f"run {nb} first" if nb else "train it first (notebooks/01_pretrain.ipynb ...)"


def find_checkpoints(spec: str) -> Tuple[List[Path], List[str]]:
    """Split ``"a.pt,b.pt"``; return (existing files, one message per missing one)."""
    found, missing = [], []
    for item in [s.strip() for s in spec.split(",") if s.strip()]:
        p = _resolve(item)
        if p is None:
            missing.append(f"checkpoint {item} not found: {_hint(item)} "
                           f"(looked in {Path.cwd()} and {REPO_ROOT})")
        else:
            found.append(p)
    return found, missing


def _label(path: Path, ckpt: Dict[str, Any]) -> str:
    """The run's model name (``runs.run_name``, as in its metrics.json), else the folder name."""
    from .runs import RUN_NAMES, run_name

    cfg = {**(ckpt.get("config") or {}), "stage": ckpt.get("stage")
           or (ckpt.get("config") or {}).get("stage")}
    name = run_name(cfg)
    return name if name in RUN_NAMES.values() else path.parent.name


def train_fallback(run_dir, steps: int = 100, data_root=None, progress: bool = True,
                   device: str = "auto") -> Tuple[torch.nn.Module, Path]:
    """Train a tiny hyperprior codec (N=32, M=48, 64 px patches) for ``steps`` steps.

    Uses :func:`nic_core.runs.run_training` (so an existing run folder is resumed: a second
    call with the same ``steps`` trains nothing). Seconds on a CPU; only for a first look.
    """
    from . import config, runs

    cfg = config.defaults("pretrain", model="hyper", N=32, M=48, lmbda=0.013, patch_size=64,
                          batch_size=4, lr=1e-3, budget=int(steps), budget_unit="steps",
                          run_dir=str(run_dir), data_root=data_root, progress=progress,
                          device=device, threads=0, attack_iterations=0)
    model, _ = runs.run_training("pretrain", cfg)
    return model.eval(), Path(run_dir) / "checkpoint.pt"


def load_models(spec: str = DEFAULT_CHECKPOINTS, train_if_missing: bool = True,
                fallback_steps: int = 100, fallback_dir="runs/smoke/06_explorer_fallback",
                data_root=None, device="cpu", progress: bool = True,
                log: Callable[[str], None] = print) -> Dict[str, torch.nn.Module]:
    """Load the checkpoints of ``spec`` as {label: model}; say what is missing and why.

    Raises:
        FileNotFoundError: no checkpoint exists and ``train_if_missing`` is False; the
            message names the notebook that makes it.
    """
    found, missing = find_checkpoints(spec)
    for m in missing:
        log(m)
    models: Dict[str, torch.nn.Module] = {}
    for p in found:
        ckpt = checkpoints.load_checkpoint(p)
        label = _label(p, ckpt)
        while label in models:
            label += "'"
        models[label] = checkpoints.load_model(p, device=device)
        log(f"{label}: {p}")
    if models:
        return models
    if not train_if_missing:
        raise FileNotFoundError(
            "no trained checkpoint found: " + "; ".join(missing or [f"{spec!r} is empty"])
            + ". Run notebooks/01_pretrain.ipynb (and 02_teacher, 03_pkdt for the PKDT "
              "model) first, or set train_if_missing=True for a tiny codec trained on the spot.")
    log(f"No trained checkpoint: training a tiny codec on the spot ({fallback_steps} steps, "
        f"into {fallback_dir}) so there is something to look at. For real results run "
        "notebooks/01_pretrain.ipynb (and 03_pkdt) first.")
    model, path = train_fallback(fallback_dir, fallback_steps, data_root=data_root,
                                 progress=progress, device=str(device))
    models[f"tiny, on-the-spot ({fallback_steps} steps)"] = model.to(device).eval()
    return models


# --------------------------------------------------------------------------- images


def centre_crop(t: torch.Tensor, size: int) -> torch.Tensor:
    """Centre ``size`` x ``size`` crop of a [3,H,W] image (the whole image when size is 0)."""
    if not size:
        return t
    h, w = t.shape[-2:]
    top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return t[:, top:top + size, left:left + size].contiguous()


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


# --------------------------------------------------------------------------- the explorer


def _img(t: torch.Tensor):
    return t.detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy()


class Explorer:
    """Cached attack results for a set of images and codecs, plus figure, table and widget.

    Args:
        models: {label: codec}; put in eval mode, CDF tables rebuilt once.
        image_paths: {name: path} of the test images (loaded and cropped lazily).
        crop: centre crop size (0: whole image).
        lr, quant, seed: passed to :func:`nic_core.attacks.attack`.
        eps_grid: the eps values of the slider and of :meth:`precompute`.
        dataset: a description of the test set, shown in the widget.
    """

    def __init__(self, models: Dict[str, torch.nn.Module], image_paths: Dict[str, Any],
                 crop: int = 128, lr: Optional[float] = None, quant: str = "ste",
                 seed: int = 0, eps_grid: Sequence[float] = (1e-4, 2.5e-4, 5e-4, 1e-3, 2e-3),
                 dataset: str = ""):
        if not models:
            raise ValueError("no models to explore")
        if not image_paths:
            raise ValueError("no images to explore")
        self.models = dict(models)
        for m in self.models.values():
            m.eval()
            update_entropy_tables(m)
        self.image_paths = dict(image_paths)
        self.crop, self.lr, self.quant, self.seed = int(crop), lr, quant, int(seed)
        self.eps_grid = parse_eps_grid(list(eps_grid))
        self.dataset = dataset
        self.cache: Dict[tuple, Dict[str, Any]] = {}
        self.clean_cache: Dict[tuple, Dict[str, Any]] = {}
        self._images: Dict[str, torch.Tensor] = {}
        self._full: Dict[str, torch.Tensor] = {}
        self.n_attacks = 0  # attack computations (cache misses)
        self.n_clean = 0  # clean measurements (cache misses)

    # ---- data
    def image(self, name: str) -> torch.Tensor:
        """The (cropped) test image [3,H,W] in [0,1]."""
        if name not in self.image_paths:
            raise ValueError(f"unknown image {name!r}; choose one of {sorted(self.image_paths)}")
        if name not in self._images:
            full = data.load_image(self.image_paths[name])
            self._full[name] = full
            self._images[name] = centre_crop(full, self.crop)
        return self._images[name]

    def thumbnail_png(self, name: str, width: int = 180) -> bytes:
        """The whole image, downscaled, with the crop drawn as a red box."""
        self.image(name)
        full = self._full[name]
        h, w = full.shape[-2:]
        box = None
        if self.crop:
            top, left = max(0, (h - self.crop) // 2), max(0, (w - self.crop) // 2)
            box = (left, top, min(w, left + self.crop) - 1, min(h, top + self.crop) - 1)
        return _to_png(full, box=box, width=width)

    def _device(self, model):
        return next(model.parameters()).device

    @torch.no_grad()
    def _measure(self, model, x: torch.Tensor, x_in: torch.Tensor) -> Dict[str, Any]:
        """Estimated and real (bitstream) bpp of coding ``x_in``; PSNR against ``x``."""
        est = codec_forward(model, x_in, quant="round")
        rc = real_codec(model, x_in, update=False)
        return {"bpp_est": float(est["bpp"][0]), "bpp_real": float(rc["bpp"][0]),
                "psnr_est": float(psnr(x, est["x_hat"])[0]), "psnr": float(psnr(x, rc["x_hat"])[0]),
                "x_hat": rc["x_hat"][0].cpu()}

    # ---- cached computations
    def clean(self, name: str, model: str) -> Dict[str, Any]:
        """Clean measurement of ``model`` on image ``name`` (cached by (image, model))."""
        key = (name, model)
        if key not in self.clean_cache:
            m = self.models[model]
            x = self.image(name)[None].to(self._device(m))
            self.clean_cache[key] = self._measure(m, x, x)
            self.n_clean += 1
        return self.clean_cache[key]

    def key(self, name: str, attack: str, eps: float, iterations: int, model: str) -> tuple:
        return (name, attack, _eps_key(eps), int(iterations), model)

    def cached(self, name, attack, eps, iterations, model) -> bool:
        return self.key(name, attack, eps, iterations, model) in self.cache

    def result(self, name: str, attack: str, eps: float, iterations: int,
               model: str) -> Dict[str, Any]:
        """Attack ``model`` on image ``name``; cached by (image, attack, eps, iterations, model).

        Returns a dict with ``clean`` / ``attacked`` measurements (``bpp_est``, ``bpp_real``,
        ``psnr_est``, ``psnr`` against the clean image, ``x_hat``), ``x`` and ``x_adv``
        [3,H,W], ``noise_mse`` (achieved), ``noise_psnr`` (dB) and ``seconds``.
        """
        if attack not in _attacks.ATTACKS:
            raise ValueError(f"unknown attack {attack!r}; choose one of {_attacks.ATTACKS}")
        if model not in self.models:
            raise ValueError(f"unknown model {model!r}; choose one of {list(self.models)}")
        k = self.key(name, attack, eps, iterations, model)
        if k in self.cache:
            return self.cache[k]
        m = self.models[model]
        x = self.image(name)[None].to(self._device(m))
        clean = self.clean(name, model)
        t0 = time.perf_counter()
        adv = _attacks.attack(m, x, attack, eps=k[2], iterations=k[3], lr=self.lr,
                              quant=self.quant, seed=self.seed)
        seconds = time.perf_counter() - t0
        x_adv = adv["x_adv"]
        nmse = float(adv["noise_mse"][0])
        res = {"image": name, "attack": attack, "eps": k[2], "iterations": k[3], "model": model,
               "x": x[0].cpu(), "x_adv": x_adv[0].cpu(), "clean": clean,
               "attacked": self._measure(m, x, x_adv), "noise_mse": nmse,
               "noise_psnr": psnr_from_mse(nmse), "seconds": seconds}
        self.cache[k] = res
        self.n_attacks += 1
        return res

    def missing(self, name: str, attack: str, eps_values: Sequence[float], iterations: int,
                models: Sequence[str]) -> List[tuple]:
        """The (eps, model) pairs not cached yet, in order."""
        return [(e, m) for e in eps_values for m in models
                if not self.cached(name, attack, e, iterations, m)]

    def precompute(self, name: str, attack: str, iterations: int,
                   models: Optional[Sequence[str]] = None,
                   eps_values: Optional[Sequence[float]] = None, progress: bool = True,
                   callback: Optional[Callable[[int, int, str], None]] = None) -> int:
        """Fill the cache over the eps grid (tqdm progress); returns how many were computed."""
        from tqdm.auto import tqdm

        models = list(models) if models is not None else list(self.models)
        todo = self.missing(name, attack, eps_values or self.eps_grid, iterations, models)
        bar = tqdm(total=len(todo), desc=f"precompute {attack} on {name}",
                   disable=not progress or not todo)
        try:
            for i, (e, m) in enumerate(todo):
                if callback:
                    callback(i, len(todo), f"{ATTACK_LABELS.get(attack, attack)}, eps={e:g}, {m}")
                self.result(name, attack, e, iterations, m)
                bar.update(1)
        finally:
            bar.close()
        if callback:
            callback(len(todo), len(todo), "done")
        return len(todo)

    def curve(self, name: str, attack: str, iterations: int, model: str) -> List[Dict[str, Any]]:
        """The cached results of one (image, attack, iterations, model) sorted by eps."""
        rows = [r for (n, a, e, it, m), r in self.cache.items()
                if (n, a, it, m) == (name, attack, int(iterations), model)]
        return sorted(rows, key=lambda r: r["eps"])

    # ---- presentation
    def table(self, name: str, attack: str, eps: float, iterations: int,
              models: Sequence[str]):
        """pandas DataFrame: per model, clean and attacked bpp (est., real), PSNR, noise MSE."""
        import pandas as pd

        rows, index = [], []
        for m in models:
            r = self.result(name, attack, eps, iterations, m)
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

    def table_html(self, name, attack, eps, iterations, models) -> str:
        df = self.table(name, attack, eps, iterations, models)
        fmt = {"bpp est.": "{:.4f}", "bpp real": "{:.4f}", "PSNR est. (dB)": "{:.2f}",
               "PSNR real (dB)": "{:.2f}", "noise MSE": "{:.2e}", "noise PSNR (dB)": "{:.2f}"}
        body = df.to_html(formatters={k: (lambda v, f=f: "" if v != v else f.format(v))
                                      for k, f in fmt.items()},
                          na_rep="", classes="nic-explorer-metrics", border=0)
        style = ("<style>.nic-explorer-metrics td, .nic-explorer-metrics th "
                 "{padding: 1px 9px; text-align: right;}</style>")
        return (f"{style}<div class='nic-metrics'><b>{ATTACK_LABELS.get(attack, attack)}</b>, "
                f"eps = {_eps_key(eps):g}, {int(iterations)} iterations, image {name}"
                f"{body}</div>")

    def figure(self, name: str, attack: str, eps: float, iterations: int,
               models: Sequence[str]):
        """The explorer's figure (a matplotlib Figure, not registered with pyplot).

        One row per model: original | adversarial | noise (amplified) | reconstruction of the
        clean image | reconstruction of the attacked image; last row: PSNR and bpp (real)
        against eps for every cached eps (clean dashed), the current eps marked.
        """
        from matplotlib.figure import Figure
        from matplotlib.gridspec import GridSpec

        models = list(models)
        results = [self.result(name, attack, eps, iterations, m) for m in models]
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
            pts = self.curve(name, attack, iterations, m)
            es = [p["eps"] for p in pts]
            ax_p.plot(es, [p["attacked"]["psnr"] for p in pts], "o-", color=c, label=m)
            ax_b.plot(es, [p["attacked"]["bpp_real"] for p in pts], "o-", color=c, label=m)
            clean = self.clean(name, m)
            ax_p.axhline(clean["psnr"], color=c, ls="--", lw=1, label=f"{m} clean")
            ax_b.axhline(clean["bpp_real"], color=c, ls="--", lw=1, label=f"{m} clean")
        for ax, yl in ((ax_p, "PSNR (dB) vs original"), (ax_b, "bpp (real)")):
            ax.set_xscale("log")
            ax.axvline(_eps_key(eps), color="k", alpha=0.3, lw=3)
            ax.set_xlabel("eps (mean squared noise)")
            ax.set_ylabel(yl)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        h, w = results[0]["x"].shape[-2:]
        fig.suptitle(f"{ATTACK_LABELS.get(attack, attack)} on {name} ({h}x{w} px), "
                     f"eps = {_eps_key(eps):g}, {int(iterations)} iterations", fontsize=11)
        return fig

    def figure_png(self, name, attack, eps, iterations, models) -> bytes:
        """The figure as PNG bytes (what both the widget and the static output show)."""
        fig = self.figure(name, attack, eps, iterations, models)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", bbox_inches="tight")
        return buf.getvalue()

    def show(self, name, attack, eps, iterations, models=None) -> None:
        """Display the static figure and the table (a headless run stores these)."""
        from IPython.display import HTML, Image, display

        models = list(models) if models is not None else list(self.models)
        display(Image(data=self.figure_png(name, attack, eps, iterations, models)))
        display(HTML(self.table_html(name, attack, eps, iterations, models)))

    # ---- widget
    def widget(self, image: str, attack: str = "psnr", eps: float = 5e-4,
               iterations: int = 20, models: Optional[Sequence[str]] = None,
               precompute: bool = True):
        """The interactive explorer (ipywidgets). Returns an :class:`ExplorerUI`."""
        return ExplorerUI(self, image, attack, eps, iterations, models, precompute)


class ExplorerUI:
    """The widgets of :meth:`Explorer.widget`; ``.box`` is what a notebook displays.

    Controls: ``image`` (Dropdown + thumbnail), ``attack`` (Dropdown), ``eps``
    (SelectionSlider over the eps grid), ``iterations`` (IntSlider), ``models``
    (SelectMultiple), ``precompute`` (Checkbox). Output: ``progress`` (IntProgress),
    ``status`` (HTML), ``metrics`` (HTML table), ``figure`` (Image).
    """

    def __init__(self, ex: Explorer, image, attack, eps, iterations, models, precompute):
        import ipywidgets as W

        self.ex = ex
        grid = list(ex.eps_grid)
        if _eps_key(eps) not in grid:
            grid = sorted(set(grid) | {_eps_key(eps)})
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
                                     value=_eps_key(eps), description="eps (MSE)", style=style,
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
        self.thumb.value = self.ex.thumbnail_png(change["new"])
        self.refresh()

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
        except Exception as e:  # shown in the widget: observers' errors are otherwise hidden
            self.error = e
            self.status.value = f"<b style='color:#c00'>error: {type(e).__name__}: {e}</b>"
            raise


# --------------------------------------------------------------------------- notebook entry


def setup(cfg: Dict[str, Any], log: Callable[[str], None] = print) -> Explorer:
    """Images, models and the :class:`Explorer` for validated parameters ``cfg``."""
    from .trainers import resolve_device

    if cfg["threads"]:
        torch.set_num_threads(cfg["threads"])
    device = resolve_device(cfg["device"])
    paths, desc = data.find_test_set(cfg["test_set"], cfg["data_root"])
    images = {Path(p).stem: p for p in paths}
    log(f"test images: {desc}")
    models = load_models(cfg["checkpoints"], cfg["train_if_missing"], cfg["fallback_steps"],
                         cfg["fallback_dir"], cfg["data_root"], device, cfg["progress"], log)
    return Explorer(models, images, crop=cfg["crop"], lr=cfg["attack_lr"],
                    quant=cfg["attack_quant"], seed=cfg["seed"],
                    eps_grid=parse_eps_grid(cfg["eps_grid"]) + [_eps_key(cfg["eps"])],
                    dataset=desc)


def pick_image(ex: Explorer, name: str, log: Callable[[str], None] = print) -> str:
    """``name`` if the test set has it, else its first image (said so)."""
    if name in ex.image_paths:
        return name
    first = sorted(ex.image_paths)[0]
    log(f"image {name!r} is not in this test set; using {first!r} "
        f"(available: {', '.join(sorted(ex.image_paths))})")
    return first


def main(argv=None) -> int:
    """``python -m nic_core.explorer -f params.yaml [-p NAME VALUE ...] --out FIG.png``.

    The explorer's figure without a browser: the chosen image, attack, eps and iterations for
    every checkpoint, with PSNR / bpp against eps over ``eps_grid`` when ``precompute`` is on.
    """
    import argparse

    from .config import cli_params

    ap = argparse.ArgumentParser(prog="python -m nic_core.explorer", description=main.__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-f", "--params", help="YAML parameter file (e.g. params/cpu/06_...yaml)")
    ap.add_argument("-p", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    ap.add_argument("--out", required=True, help="PNG to write")
    args = ap.parse_args(argv)
    cfg = validate(cli_params(args.params, args.p))
    ex = setup(cfg)
    name = pick_image(ex, cfg["image"])
    if cfg["precompute"]:
        ex.precompute(name, cfg["attack"], cfg["iterations"], progress=cfg["progress"])
    png = ex.figure_png(name, cfg["attack"], cfg["eps"], cfg["iterations"], list(ex.models))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(png)
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
