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

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from . import attacks as _attacks
from . import checkpoints, cli, config, data, explorer_view, runs
from .config import DEFAULT_CHECKPOINTS, eps_key, cli_params, parse_eps_grid
from .explorer_view import ATTACK_LABELS
from .metrics import psnr, psnr_from_mse, real_codec, update_entropy_tables
from .models import codec_forward
from .runs import RUN_NAMES, run_name
from .trainers import resolve_device

__all__ = ["SCHEMA", "defaults", "validate", "from_notebook", "find_checkpoints", "load_models",
           "train_fallback", "Explorer", "setup", "parse_eps_grid", "ATTACK_LABELS"]

REPO_ROOT = Path(__file__).resolve().parents[1]

# --------------------------------------------------------------------------- parameters
# One schema for every notebook: the explorer's lives in nic_core.config (EXPLORER).

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


# --------------------------------------------------------------------------- the explorer


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
            self._images[name] = data.centre_crop(full, self.crop)
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
        return explorer_view._to_png(full, box=box, width=width)

    def _device(self, model):
        return next(model.parameters()).device

    @torch.no_grad()
    def measure_coding(self, model, x: torch.Tensor, x_in: torch.Tensor) -> Dict[str, Any]:
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
            self.clean_cache[key] = self.measure_coding(m, x, x)
            self.n_clean += 1
        return self.clean_cache[key]

    def key(self, name: str, attack: str, eps: float, iterations: int, model: str) -> tuple:
        return (name, attack, eps_key(eps), int(iterations), model)

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
               "attacked": self.measure_coding(m, x, x_adv), "noise_mse": nmse,
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

    # ---- presentation (nic_core.explorer_view) and widget (nic_core.explorer_widgets)
    def table(self, name: str, attack: str, eps: float, iterations: int, models: Sequence[str]):
        """pandas DataFrame: per model, clean and attacked bpp (est., real), PSNR, noise MSE."""
        return explorer_view.table(self, name, attack, eps, iterations, models)

    def table_html(self, name, attack, eps, iterations, models) -> str:
        return explorer_view.table_html(self, name, attack, eps, iterations, models)

    def figure(self, name, attack, eps, iterations, models):
        """The explorer's figure (:func:`nic_core.explorer_view.figure`)."""
        return explorer_view.figure(self, name, attack, eps, iterations, models)

    def figure_png(self, name, attack, eps, iterations, models) -> bytes:
        return explorer_view.figure_png(self, name, attack, eps, iterations, models)

    def show(self, name, attack, eps, iterations, models=None) -> None:
        """Display the static figure and the table (a headless run stores these)."""
        explorer_view.show(self, name, attack, eps, iterations, models)

    def widget(self, image: str, attack: str = "psnr", eps: float = 5e-4,
               iterations: int = 20, models: Optional[Sequence[str]] = None,
               precompute: bool = True):
        """The interactive explorer (ipywidgets): an :class:`nic_core.explorer_widgets.ExplorerUI`."""
        from .explorer_widgets import ExplorerUI  # ipywidgets only when a widget is asked for
        return ExplorerUI(self, image, attack, eps, iterations, models, precompute)


# --------------------------------------------------------------------------- notebook entry


def setup(cfg: Dict[str, Any], log: Callable[[str], None] = print) -> Explorer:
    """Images, models and the :class:`Explorer` for validated parameters ``cfg``."""
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
                    eps_grid=parse_eps_grid(cfg["eps_grid"]) + [eps_key(cfg["eps"])],
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
    sys.exit(cli.run(main))
