"""Parameters as plain values: defaults per stage, YAML parameter files, validation.

The notebooks' ``parameters`` cell, the YAML files under ``params/`` and a checkpoint's ``config``
hold the same names. papermill casts ``-p`` values itself (``-p alpha 1`` arrives as an int) and
only *warns* about unknown names, so every notebook calls :func:`from_notebook` right after its
parameters cell: unknown names, wrong types and out-of-range values become clear errors there.
"""
from __future__ import annotations

import difflib
import types
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

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
    "run_dir": (str, "runs/smoke/01_pretrain", None, "where checkpoint, metrics and plots go"),
    "seed": (int, 0, _nonneg[0], "random seed"),
    "device": (str, "auto", lambda v: v in ("auto", "cpu", "cuda") or v.startswith("cuda:"),
               "auto, cpu or cuda[:i]"),
    "threads": (int, 0, _nonneg[0], "torch CPU threads (0: all cores)"),
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
    "eval_set": (str, "kodak", lambda v: v in ("kodak", "div2k-valid", "samples"),
                 "test set"),
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

# per-stage defaults that differ from COMMON (paper: fine-tuning starts at lr 5e-5)
STAGE_DEFAULTS: Dict[str, Dict[str, Any]] = {
    "pretrain": {},
    "teacher": {"run_dir": "runs/smoke/02_teacher", "lr": 5e-5, "budget": 30},
    "pkdt": {"run_dir": "runs/smoke/03_pkdt", "lr": 5e-5, "budget": 20},
}

_IPY = {"In", "Out", "exit", "quit", "get_ipython", "open"}
NULLABLE = {"N", "M", "data_root", "pretrained", "teacher", "init"}


def schema(stage: str) -> Dict[str, Spec]:
    if stage not in STAGE:
        raise ValueError(f"unknown stage {stage!r}; choose one of {sorted(STAGE)}")
    merged = {**COMMON, **STAGE[stage]}
    for k, v in STAGE_DEFAULTS[stage].items():
        typ, _, check, help_ = merged[k]
        merged[k] = (typ, v, check, help_)
    return merged


def defaults(stage: str, **overrides) -> Dict[str, Any]:
    """Default parameters of a stage (smoke-sized), with overrides validated."""
    cfg = {k: spec[1] for k, spec in schema(stage).items()}
    cfg.update(overrides)
    return validate(stage, cfg)


def _coerce(name: str, value: Any, spec: Spec) -> Any:
    typ, default, check, help_ = spec
    if value is None:
        if name in NULLABLE:
            return None
        raise TypeError(f"parameter {name!r} ({help_}) must not be None")
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if typ is bool and not isinstance(value, bool):
        raise TypeError(f"parameter {name!r} ({help_}) must be True or False, got {value!r}")
    if typ is int and (isinstance(value, bool) or not isinstance(value, int)):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise TypeError(f"parameter {name!r} ({help_}) must be an integer, got {value!r}")
    if not isinstance(value, typ):
        raise TypeError(f"parameter {name!r} ({help_}) must be {typ.__name__}, "
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


def from_notebook(stage: str, namespace: Dict[str, Any]) -> Dict[str, Any]:
    """Collect and validate the parameters a notebook defined (call right after its parameters).

    Every public, non-module, non-callable global counts as a parameter, so a misspelt ``-p``
    name (which papermill only warns about) is an error here.
    """
    params = {k: v for k, v in namespace.items()
              if not k.startswith("_") and k not in _IPY
              and not isinstance(v, (types.ModuleType, types.FunctionType, type))
              and not callable(v)}
    return validate(stage, params)


def load_params(path) -> Dict[str, Any]:
    """Read a YAML parameter file (a flat mapping of plain values)."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of parameter names to values")
    return data


def cli_params(path: Optional[str], pairs) -> Dict[str, Any]:
    """Parameters of a command line: a YAML file (``-f``), then ``-p NAME VALUE`` pairs (YAML
    values, as papermill reads them), later ones winning."""
    params = load_params(path) if path else {}
    params.update({k: yaml.safe_load(v) for k, v in pairs})
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


# Worst-case ensembles (eval_worst_case). Quality side: eq. 6 through both gradient paths and
# with a constant step, PGD in L2 and L-inf, Chen & Ma; rate side: eq. 7 and PGD-L2 through
# both paths; random noise on
# both (a gradient attack weaker than noise is a finding). "cpu" is the affordable subset used
# for the 2-core reproduction (README).
ENSEMBLES = {
    "standard": "psnr,psnr/constant,psnr@noise,pgd-l2-psnr,pgd-l2-psnr@noise,pgd-psnr,ma2023,"
                "ma2023@noise,"
                "bpp,bpp@noise,pgd-l2-bpp,pgd-l2-bpp@noise,noise",
    "cpu": "psnr,psnr/constant,psnr@noise,ma2023@noise,bpp,bpp@noise,noise",
}
ENSEMBLE_NAMES = tuple(ENSEMBLES)


def smooth_terms(spec: str) -> Tuple[str, ...]:
    """Parse ``"bpp,y"`` into ``("bpp", "y")``; validates the names."""
    terms = tuple(t.strip() for t in spec.split(",") if t.strip())
    bad = [t for t in terms if t not in ("bpp", "y")]
    if bad:
        raise ValueError(f"smooth_terms may only contain 'bpp' and 'y', got {bad}")
    return terms
