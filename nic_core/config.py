"""Parameters as plain values: defaults per stage, YAML parameter files, validation.

The notebooks' ``parameters`` cell, the YAML files under ``params/`` and a checkpoint's ``config``
hold the same names. papermill casts ``-p`` values itself (``-p alpha 1`` arrives as an int) and
only *warns* about unknown names, so every notebook calls :func:`from_notebook` right after its
parameters cell: unknown names, wrong types and out-of-range values become clear errors there.
"""
from __future__ import annotations

import ast
import difflib
import math
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Set, Tuple

import yaml

# name: (type, default, check, help). type float accepts ints; None is allowed when default is None.
Spec = Tuple[type, Any, Optional[Callable[[Any], bool]], str]

_pos = (lambda v: v > 0, "> 0")
_nonneg = (lambda v: v >= 0, ">= 0")

COMMON: Dict[str, Spec] = {
    "model": (str, "hyper", lambda v: v in ("hyper", "mbt2018-mean", "cheng2020-anchor",
                                            "cheng2020-attn"), "codec architecture"),
    "quality": (int, 1, lambda v: 1 <= v <= 8, "CompressAI quality index (sets N, M when they are None)"),
    "N": (int, 48, lambda v: v >= 8, "channels of the transforms (None: from quality)"),
    "M": (int, 64, lambda v: v >= 8, "latent channels (None: from quality)"),
    "lmbda": (float, 0.0067, _pos[0], "rate-distortion trade-off (CompressAI MSE scale)"),
    "data_root": (str, None, None, "data folder; None: $NIC_DATA, else data/"),
    "train_split": (str, "all", lambda v: v in ("all", "train"),
                    "training images: all, or train (without the validation split, for tuning)"),
    "run_dir": (str, "runs/smoke/01_pretrain", None, "where checkpoint, metrics and plots go"),
    "seed": (int, 0, _nonneg[0], "random seed"),
    "device": (str, "auto", lambda v: v in ("auto", "cpu", "cuda") or v.startswith("cuda:"),
               "auto, cpu or cuda[:i]"),
    "threads": (int, 0, _nonneg[0], "torch CPU threads (0: all cores)"),
    "precision": (str, "fp32", lambda v: v in ("fp32", "bf16"),
                  "training forward: fp32, or bf16 autocast (GPU speed; entropy models and "
                  "every evaluation stay float32)"),
    "cudnn": (str, "default", lambda v: v in ("default", "benchmark", "deterministic"),
              "cuDNN on a GPU: default, benchmark (fastest kernels for fixed crop sizes) or "
              "deterministic (bit-reproducible runs, slower)"),
    "patch_size": (int, 128, lambda v: v >= 64, "training crop size"),
    "batch_size": (int, 8, _pos[0], "training batch size"),
    "lr": (float, 1e-4, _pos[0], "initial learning rate"),
    "aux_lr": (float, 1e-3, _pos[0], "aux (quantiles) learning rate"),
    "clip_max_norm": (float, 1.0, _nonneg[0], "gradient clipping (0: off)"),
    "budget": (int, 150, _pos[0], "training length in budget_unit"),
    "budget_unit": (str, "steps", lambda v: v in ("steps", "epochs"), "steps or epochs"),
    "lr_decay_start": (int, 0, _nonneg[0], "halve lr from here on (budget_unit; 0: never)"),
    "lr_decay_every": (int, 25, _pos[0], "then halve every this many (budget_unit)"),
    "ckpt_every": (int, 0, _nonneg[0], "also checkpoint every this many steps (0: end only)"),
    "resume": (bool, True, None, "continue from run_dir/checkpoint.pt if present"),
    "eval_set": (str, "kodak", lambda v: v in ("kodak", "div2k-valid", "val", "samples"),
                 "test set (val: the validation split of the training folder, for tuning)"),
    "eval_limit": (int, 2, _nonneg[0], "use only the first n test images (0: all)"),
    "eval_crop": (int, 256, _nonneg[0], "centre-crop test images to this size (0: full size)"),
    "eval_batch": (int, 1, _pos[0], "equal-size test images attacked together (speed only)"),
    "eps": (float, 0.0005, _pos[0], "attack budget: mean squared noise per pixel"),
    "attack_iterations": (int, 20, _nonneg[0], "attack iterations at evaluation (0: clean only)"),
    "attack_lr": (float, 0.01, _pos[0], "attack step size (Adam lr)"),
    "attack_quant": (str, "ste", lambda v: v in ("ste", "noise"), "attack gradient path"),
    "eval_attacks": (str, "psnr,bpp", lambda v: bool(attack_list(v)),
                     "attacks of the evaluation: specs kind[@quant][:iterations], comma-separated "
                     "(kinds: nic_core.attacks.ATTACKS; e.g. psnr:400,bpp:200)"),
    "eval_worst_case": (str, "", lambda v: v in ENSEMBLE_NAMES or v == "" or bool(attack_list(v)),
                        "worst case per image over these attack specs ('' off; 'standard' or "
                        "'cpu': nic_core.config.ENSEMBLES)"),
    "eval_restarts": (int, 1, _pos[0], "attack restarts per image at evaluation (best kept)"),
    "eval_uint8": (bool, False, None, "round attacked images to 8 bits (a saved attack image)"),
    "eval_defence": (str, "", lambda v: v == "" or v.split(":")[0] in ("jpeg", "blur"),
                     "input-transformation baseline around the codec at evaluation: '', "
                     "jpeg[:quality] or blur[:sigma] (nic_core.defenses; attacks adapt: BPDA)"),
    "attack_schedule": (str, "cosine", lambda v: v in ("cosine", "constant", "plateau"),
                        "attack step schedule (training and evaluation)"),
    "progress": (bool, True, None, "show progress bars"),
}

STAGE: Dict[str, Dict[str, Spec]] = {
    "pretrain": {
        "init": (str, None, None, "start from this codec's weights (fine-tune another rate "
                 "point from a trained codec; None: from scratch)"),
        "init_widen": (bool, False, None, "init is a Hyper with fewer channels (N and/or M): "
                       "start as it (widen_mode)"),
        "widen_mode": (str, "zero", lambda v: v in ("zero", "split"),
                       "how init_widen grows init: zero (new channels start unused, "
                       "models.widen_hyper) or split (channels split into twins, Net2Net, N only: "
                       "models.split_hyper)"),
        "train_quant": (str, "noise", lambda v: v in ("noise", "ste"),
                        "quantisation of the training forward: noise (Balle et al.), or ste "
                        "(real rounding, straight-through gradient: with freeze g_a, the hard "
                        "stage of Guo et al. 2021's soft-then-hard, trainers.pretrain_objective)"),
        "freeze": (str, "", lambda v: v in ("", "g_a"),
                   "keep these weights fixed: '' (none) or g_a (the analysis transform)"),
    },
    "teacher": {
        "pretrained": (str, "runs/smoke/01_pretrain/checkpoint.pt", None,
                       "pretrained checkpoint (notebook 01)"),
        "alpha": (float, 0.01, _nonneg[0], "weight of smooth_loss (paper: not given; see README)"),
        "smooth_terms": (str, "bpp,y", None, "smooth_loss terms: 'bpp,y', 'bpp', 'y' or ''"),
        "smooth_method": (str, "fused", lambda v: v in ("fused", "fast", "exact"),
                          "smooth_loss implementation (losses.smooth_loss)"),
    },
    "pkdt": {
        "pretrained": (str, "runs/smoke/01_pretrain/checkpoint.pt", None,
                       "pretrained checkpoint (notebook 01)"),
        "teacher": (str, "runs/smoke/02_teacher/checkpoint.pt", None,
                    "teacher checkpoint (notebook 02)"),
        "alpha": (float, 1.0, _nonneg[0], "weight of R_loss (eq. 5)"),
        "beta": (float, 1e-4, _nonneg[0], "weight of smooth_loss (eq. 5; paper: not given)"),
        "smooth_terms": (str, "bpp,y", None, "smooth_loss terms"),
        "smooth_method": (str, "fused", lambda v: v in ("fused", "fast", "exact"),
                          "smooth_loss implementation (losses.smooth_loss)"),
        "teacher_rate": (str, "noise", lambda v: v in ("noise", "round"),
                         "quantisation of the teacher's bpp_tc in R_loss: noise (the student's "
                         "proxy, no offset) or round (the real rate, which lies below the proxy: "
                         "python -m nic_core.diagnostics rate-proxy)"),
        "n_p": (int, 5, _pos[0], "psnr attack iterations (paper 200)"),
        "n_b": (int, 5, _pos[0], "bpp attack iterations (paper 100)"),
        "batch_mix": (str, "psnr,bpp,clean", None, "per-sample role in each batch"),
        "method": (str, "pkdt", lambda v: v in ("pkdt", "adv", "ma2023"),
                   "pkdt (ours), adv (plain adversarial training), ma2023 (Chen & Ma)"),
    },
}

# the committed CPU models (issue 9): a newcomer sees real codecs under attack without training
DEFAULT_CHECKPOINTS = "models/cpu/hyper-q4/model.pt,models/cpu/hyper-q4-pkdt/model.pt"
DEFAULT_EPS_GRID = "0.0001,0.00025,0.0005,0.001,0.002"


def eps_key(eps: float) -> float:
    """eps as a cache key: 6 significant digits, so 5e-4 and 0.0005000000001 coincide."""
    return float(f"{float(eps):.6g}")


def parse_eps_grid(spec) -> List[float]:
    """``"0.0001,0.0005"`` (or a list of numbers) -> sorted unique positive floats."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    try:
        vals = sorted({eps_key(float(str(v).strip())) for v in items if str(v).strip()})
    except ValueError:
        raise ValueError(f"eps_grid must be comma-separated numbers, got {spec!r}") from None
    if not vals or any(not math.isfinite(v) or v <= 0 for v in vals):
        raise ValueError(f"eps_grid must hold positive numbers, got {spec!r}")
    return vals


def _grid_ok(v: str) -> bool:
    try:
        parse_eps_grid(v)
    except ValueError:
        return False
    return True


def _attack_kind_ok(v: str) -> bool:
    from .attacks import ATTACKS  # imported here: config stays importable on its own
    return v in ATTACKS


# The attack explorer (notebook 06): its own names, no training parameters.
EXPLORER: Dict[str, Spec] = {
    "image": (str, "kodim04", None, "test image (file stem); the first one when absent"),
    "test_set": (str, "kodak", lambda v: v in ("kodak", "div2k-valid", "samples"), "test set"),
    "data_root": (str, None, None, "data folder; None: $NIC_DATA, else data/"),
    "crop": (int, 128, lambda v: v == 0 or v >= 16, "centre crop size in px (0: whole image)"),
    "attack": (str, "psnr", _attack_kind_ok, "attack kind (nic_core.attacks.ATTACKS)"),
    "eps": (float, 0.0005, _pos[0], "attack budget: mean squared noise per pixel"),
    "eps_grid": (str, DEFAULT_EPS_GRID, _grid_ok, "comma-separated eps values of the slider"),
    "iterations": (int, 20, lambda v: v >= 1, "attack iterations"),
    "attack_lr": (float, 0.01, _pos[0], "attack step size (Adam lr)"),
    "attack_quant": (str, "ste", lambda v: v in ("ste", "noise"), "attack gradient path"),
    "seed": (int, 0, _nonneg[0], "attack seed"),
    "checkpoints": (str, DEFAULT_CHECKPOINTS, None, "comma-separated checkpoints to compare"),
    "train_if_missing": (bool, True, None,
                         "no checkpoint found: train a tiny codec on the spot"),
    "fallback_steps": (int, 100, lambda v: v >= 1, "training steps of that tiny codec"),
    "fallback_dir": (str, "runs/smoke/06_explorer_fallback", None,
                     "run folder of that tiny codec (reused when present)"),
    "precompute": (bool, True, None, "fill the eps grid in advance (instant slider)"),
    "device": COMMON["device"],
    "threads": (int, 0, _nonneg[0], "torch CPU threads (0: leave as is)"),
    "progress": COMMON["progress"],
}
# The figures and tables (notebook 05): read committed results only.
FIGURES: Dict[str, Spec] = {
    "root": (str, None, None, "repository root holding results/ (None: this checkout)"),
    "out_dir": (str, "figures", None, "where the figures go (PNG and PDF), under root"),
    "tables_dir": (str, "results/cpu/tables", None, "where Tables 1-2 go (CSV, Markdown)"),
    "visual_image": (str, "kodim04", None, "Kodak image of the visual grid ('' : no grid)"),
    "visual_iterations": (int, 50, _pos[0], "psnr-attack iterations of the visual grid"),
}
# schemas that stand alone (not COMMON + a stage's own names)
STANDALONE: Dict[str, Dict[str, Spec]] = {"explorer": EXPLORER, "figures": FIGURES}

# Table 2 (notebook 04): Stage II variants, each a set of overrides of the pkdt parameters
ABLATIONS: Dict[str, Dict[str, Any]] = {
    "best": {},                          # Algorithm 1 as configured
    "no-smooth": {"beta": 0.0},          # w/o smooth_loss in Stage II
    "no-dydx": {"smooth_terms": "bpp"},  # w/o dy/dx
    "no-dbpp": {"smooth_terms": "y"},    # w/o dbpp_main/dx
}


# parameters a tuning variant may not change (they name or place the run, not the method)
_NOT_TUNABLE = ("run_dir", "stage", "resume", "results_dir", "variants")


def variant_overrides(variant: str) -> Dict[str, Any]:
    """The Stage II parameters a variant changes: a Table 2 row of :data:`ABLATIONS`, or a
    tuning variant ``name=value`` (several joined by ``+``, e.g. ``alpha=3+beta=0.001``),
    checked against the pkdt schema (names, types, ranges)."""
    if variant in ABLATIONS:
        return dict(ABLATIONS[variant])
    if "=" not in variant:
        raise ValueError(f"variant {variant!r} is neither a Table 2 row ({sorted(ABLATIONS)}) "
                         f"nor name=value overrides such as beta=0.001 or alpha=3+budget=200")
    spec, out = schema("pkdt"), {}
    for part in variant.split("+"):
        name, _, text = part.partition("=")
        name = name.strip()
        if name not in spec or name in _NOT_TUNABLE:
            hint = difflib.get_close_matches(name, spec, n=1)
            raise ValueError(f"variant {variant!r}: {name!r} is not a tunable Stage II "
                             f"parameter" + (f" (did you mean {hint[0]!r}?)" if hint else ""))
        out[name] = _coerce(name, yaml.safe_load(text), spec[name])
    return out


def ablation_list(spec: str) -> Tuple[str, ...]:
    """The variants of notebook 04, each checked (:func:`variant_overrides`)."""
    names = tuple(v.strip() for v in spec.split(",") if v.strip())
    if not names:
        raise ValueError(f"variants must name Table 2 rows from {sorted(ABLATIONS)} or "
                         f"name=value tuning variants, got {spec!r}")
    for v in names:
        variant_overrides(v)
    return names


STAGE["ablation"] = {
    **STAGE["pkdt"],
    "variants": (str, "no-smooth,no-dydx,no-dbpp", lambda v: bool(ablation_list(v)),
                 "Table 2 rows (nic_core.config.ABLATIONS) or tuning variants name=value[+...], "
                 "each trained in run_dir/<variant>"),
    "results_dir": (str, None, None, "also copy each variant's metrics.json to "
                    "results_dir/<variant>/ (None: only in the run folders)"),
}

# per-stage defaults that differ from COMMON (paper: fine-tuning starts at lr 5e-5)
STAGE_DEFAULTS: Dict[str, Dict[str, Any]] = {
    "pretrain": {},
    "teacher": {"run_dir": "runs/smoke/02_teacher", "lr": 5e-5, "budget": 30},
    "pkdt": {"run_dir": "runs/smoke/03_pkdt", "lr": 5e-5, "budget": 20},
    "ablation": {"run_dir": "runs/smoke/04_ablations", "lr": 5e-5, "budget": 4, "n_p": 2,
                 "n_b": 2, "eval_limit": 1, "attack_iterations": 5},
}

NULLABLE = {"N", "M", "data_root", "pretrained", "teacher", "init", "root", "results_dir"}


def schema(stage: str) -> Dict[str, Spec]:
    """Every parameter of a stage (or of a standalone notebook such as ``explorer``)."""
    if stage in STANDALONE:
        return dict(STANDALONE[stage])
    if stage not in STAGE:
        raise ValueError(f"unknown stage {stage!r}; choose one of "
                         f"{sorted(STAGE) + sorted(STANDALONE)}")
    merged = {**COMMON, **STAGE[stage]}
    for k, v in STAGE_DEFAULTS.get(stage, {}).items():
        typ, _, check, help_ = merged[k]
        merged[k] = (typ, v, check, help_)
    return merged


def defaults(stage: str, **overrides) -> Dict[str, Any]:
    """Default parameters of a stage (smoke-sized), with overrides validated."""
    cfg = {k: spec[1] for k, spec in schema(stage).items()}
    cfg.update(overrides)
    return validate(stage, cfg)


class ParameterError(TypeError, ValueError):
    """A parameter of the wrong type: a TypeError, and a ValueError like every other mistake
    in the parameters, so that command lines report it as one ``error:`` line."""


def _coerce(name: str, value: Any, spec: Spec) -> Any:
    typ, default, check, help_ = spec
    if value is None:
        if name in NULLABLE:
            return None
        raise ParameterError(f"parameter {name!r} ({help_}) must not be None")
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if typ is bool and not isinstance(value, bool):
        raise ParameterError(f"parameter {name!r} ({help_}) must be True or False, got {value!r}")
    if typ is int and (isinstance(value, bool) or not isinstance(value, int)):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise ParameterError(f"parameter {name!r} ({help_}) must be an integer, got {value!r}")
    if not isinstance(value, typ):
        raise ParameterError(f"parameter {name!r} ({help_}) must be {typ.__name__}, "
                             f"got {type(value).__name__} {value!r}")
    if check is not None and not check(value):
        raise ValueError(f"parameter {name!r} ({help_}) has an invalid value {value!r}")
    return value


def validate(stage: str, params: Dict[str, Any]) -> Dict[str, Any]:
    """Check names, types and ranges; return a new dict with every parameter of the stage.

    The result also holds ``"stage"``; a ``"stage"`` key in ``params`` must match ``stage``.
    """
    spec = schema(stage)
    params = dict(params)
    given = params.pop("stage", stage)
    if given != stage:
        raise ValueError(f"parameters are for stage {given!r}, not {stage!r}")
    unknown = [k for k in params if k not in spec]
    if unknown:
        hints = {k: difflib.get_close_matches(k, spec, n=1) for k in unknown}
        msg = ", ".join(f"{k!r}" + (f" (did you mean {h[0]!r}?)" if h else "")
                        for k, h in hints.items())
        raise ValueError(f"unknown parameter(s) for stage {stage!r}: {msg}. "
                         f"Known: {', '.join(sorted(spec))}")
    out = {k: s[1] for k, s in spec.items()}
    for k, v in params.items():
        out[k] = _coerce(k, v, spec[k])
    out["stage"] = stage
    return out


PAPERMILL_MARK = "# Parameters"  # the first line of the cell papermill injects


def assigned_names(source: str) -> List[str]:
    """Names assigned at the top level of a cell's source (``a = 1``, ``a: int = 1``)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    names = []
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else \
            [node.target] if isinstance(node, ast.AnnAssign) else []
        names += [t.id for t in targets if isinstance(t, ast.Name)]
    return names


def injected_names(history: Optional[Iterable[str]]) -> Set[str]:
    """Names the parameter cells assigned: papermill's injected cell (first line exactly
    ``# Parameters``) and the notebook's own parameters cell (first line starting with
    ``# Notebook parameters``), found in IPython's input history ``In``."""
    names: Set[str] = set()
    for src in history or ():
        first = (src or "").lstrip().split("\n", 1)[0].strip()
        if first == PAPERMILL_MARK or first.startswith("# Notebook parameters"):
            names.update(assigned_names(src))
    return names


def from_notebook(stage: str, namespace: Dict[str, Any]) -> Dict[str, Any]:
    """Validate a notebook's parameters (call right after its parameters cell).

    The schema's names are read explicitly from ``namespace`` (the notebook's ``globals()``);
    nothing else in it is looked at, so re-running this cell after later cells defined other
    variables is safe. Names assigned in the parameters cells (papermill's injected one,
    which papermill only warns about, and the notebook's own, both read from IPython's input
    history ``In``) that the schema does not know are errors, with a suggestion.
    """
    spec = schema(stage)
    params = {k: namespace[k] for k in spec if k in namespace}
    for k in sorted(injected_names(namespace.get("In"))):
        if k not in spec:
            params[k] = namespace.get(k)
    return validate(stage, params)


def parameters_source(stage: str) -> str:
    """The source of a notebook's parameters cell for ``stage``: every name with its default
    and help (what ``tests/test_notebooks.py`` compares each notebook's cell with; paste it
    into the notebook after adding a parameter)."""
    cfg = defaults(stage)
    cfg.pop("stage")
    spec = schema(stage)
    width = max(len(f"{k} = {v!r}") for k, v in cfg.items())
    lines = ["# Notebook parameters (smoke-sized defaults; papermill -p NAME VALUE or "
             "-f params/...yaml)"]
    lines += [f"{k} = {v!r}".ljust(width + 2) + f"# {spec[k][3]}" for k, v in cfg.items()]
    return "\n".join(lines)


def load_params(path) -> Dict[str, Any]:
    """Read a YAML parameter file (a flat mapping of plain values)."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of parameter names to values")
    return data


def cli_params(path: Optional[str], pairs) -> Dict[str, Any]:
    """Parameters of a command line: a YAML file (``-f``), then ``-p NAME VALUE`` pairs (YAML
    values, as papermill reads them; an empty value is the empty string), later ones winning."""
    params = load_params(path) if path else {}
    params.update({k: yaml.safe_load(v) if v.strip() else v for k, v in pairs})
    return params


def attack_list(spec: str) -> Tuple[str, ...]:
    """Parse ``"psnr,bpp@noise:200"`` into attack specs (``kind[@quant][:iterations]``); an
    ensemble name (:data:`ENSEMBLES`) expands to its members; bad specs are clear errors."""
    from .attacks import parse_spec  # imported here: config stays importable on its own

    spec = ENSEMBLES.get(spec.strip(), spec)
    specs = tuple(k.strip() for k in spec.split(",") if k.strip())
    for k in specs:
        parse_spec(k)
    return specs


# Worst-case ensembles (eval_worst_case), noise on both sides (noise winning is a finding). "cpu":
# the subset behind the committed reproduction (docs/results.md); "cpu-apgd" adds APGD (issue 32).
ENSEMBLES = {
    "standard": "psnr,psnr/constant,psnr@noise,pgd-l2-psnr,pgd-l2-psnr@noise,pgd-psnr,ma2023,"
                "ma2023@noise,apgd-psnr,apgd-psnr@noise,"
                "bpp,bpp@noise,pgd-l2-bpp,pgd-l2-bpp@noise,apgd-bpp,apgd-bpp@noise,noise",
    "cpu": "psnr,psnr/constant,psnr@noise,ma2023@noise,bpp,bpp@noise,noise",
    "cpu-apgd": "psnr,psnr/constant,psnr@noise,ma2023@noise,apgd-psnr,apgd-psnr@noise,"
                "bpp,bpp@noise,apgd-bpp,apgd-bpp@noise,noise",
}
ENSEMBLE_NAMES = tuple(ENSEMBLES)

# `python -m nic_core.evaluate model ID`: all 24 Kodak images (centre 256), eps 5e-4, 100
# iterations per member (not saturated: docs/protocol.md), worst case over "cpu-apgd"
PROTOCOL = {"eval_set": "kodak", "eval_limit": 0, "eval_crop": 256, "eps": 5e-4, "eval_batch": 8,
            "attack_iterations": 100, "attack_lr": 0.01, "attack_quant": "ste", "eval_restarts": 1,
            "attack_schedule": "cosine", "eval_attacks": "psnr,bpp", "eval_worst_case": "cpu-apgd"}


def smooth_terms(spec: str) -> Tuple[str, ...]:
    """Parse ``"bpp,y"`` into ``("bpp", "y")``; validates the names."""
    terms = tuple(t.strip() for t in spec.split(",") if t.strip())
    bad = [t for t in terms if t not in ("bpp", "y")]
    if bad:
        raise ValueError(f"smooth_terms may only contain 'bpp' and 'y', got {bad}")
    return terms
