"""Run folders: what a notebook (or ``python -m nic_core.runs``) does for one stage.

A run folder ``run_dir`` holds ``checkpoint.pt`` (resumable), ``history.jsonl`` (one row per
step), ``config.yaml`` (the validated parameters), ``metrics.json`` (CompressAI eval shape plus
the attack block, see ``evaluate``) and plots. Notebooks call :func:`run_training` and
:func:`evaluate_run`; everything here is a few calls into the other modules.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch
import yaml

from . import checkpoints, cli, config, data, defenses, distributed, evaluate, journal, zoo
from .models import build_model, split_hyper, widen_hyper
from .trainers import make_objective, resolve_device, seed_everything, train

PRODUCED_BY = {"pretrained": "notebooks/01_pretrain.ipynb", "teacher": "notebooks/02_teacher.ipynb"}

# the name of a run's model in results, tables and the explorer (one place)
RUN_NAMES = {"pretrain": "pretrained", "teacher": "teacher (Stage I)", "pkdt": "Ours (PKDT)",
             "adv": "adversarial training", "ma2023": "Ma2023"}
# training-curve panels per stage / Stage II method
CURVE_KEYS = {"pretrain": ("loss", "bpp_loss", "mse_loss"),
              "teacher": ("loss", "smooth_loss", "bpp_loss", "mse_loss"),
              "pkdt": ("loss", "d_loss", "r_loss", "smooth_loss"),
              "adv": ("loss", "bpp_loss", "mse_loss"), "ma2023": ("loss", "bpp_loss", "mse_loss")}


def _kind(cfg: Dict[str, Any]) -> str:
    """``pretrain``, ``teacher``, or the Stage II method (``pkdt``, ``adv``, ``ma2023``)."""
    stage = cfg.get("stage")
    return cfg.get("method", "pkdt") if stage == "pkdt" else stage


def run_name(cfg: Dict[str, Any]) -> str:
    """The model's name for a run's (validated or checkpoint) config, e.g. ``Ours (PKDT)``."""
    return RUN_NAMES.get(_kind(cfg), str(cfg.get("stage", "model")))


def curve_keys(cfg: Dict[str, Any]) -> Tuple[str, ...]:
    """The ``history.jsonl`` columns worth plotting for this run."""
    return CURVE_KEYS.get(_kind(cfg), ("loss",))


def setup(cfg: Dict[str, Any]) -> torch.device:
    """Threads and device from the parameters; under torchrun, join the process group
    (:mod:`nic_core.distributed`) and take this rank's device."""
    if cfg["threads"]:
        torch.set_num_threads(cfg["threads"])
    device = resolve_device(cfg["device"])
    set_cudnn(cfg.get("cudnn", "default"))
    distributed.init_from_env(device)
    return distributed.local_device(device)


def set_cudnn(mode: str) -> None:
    """cuDNN's speed / determinism trade-off (no effect without a GPU): ``benchmark`` times
    the kernels once per input shape and keeps the fastest (fixed training crops: faster);
    ``deterministic`` picks reproducible kernels only (two runs give the same weights, slower);
    ``default`` leaves PyTorch's choice (neither)."""
    if mode not in ("default", "benchmark", "deterministic"):
        raise ValueError(f"cudnn must be default, benchmark or deterministic, got {mode!r}")
    torch.backends.cudnn.benchmark = mode == "benchmark"
    torch.backends.cudnn.deterministic = mode == "deterministic"


def load_required(cfg: Dict[str, Any], key: str, device) -> torch.nn.Module:
    """Load the checkpoint named by ``cfg[key]``; say which notebook makes it when missing."""
    path = cfg.get(key)
    if not path or not Path(path).is_file():
        raise FileNotFoundError(
            f"{key} checkpoint {path!r} not found: run {PRODUCED_BY[key]} first "
            f"(its run_dir/checkpoint.pt), or set the {key!r} parameter to an existing file")
    return checkpoints.load_model(path, device=device)


def build_student(cfg: Dict[str, Any], device) -> torch.nn.Module:
    """The model a stage trains: a new codec, ``init``'s weights (pretraining another rate point)
    or the ``pretrained`` checkpoint (Stages I and II). An existing run_dir checkpoint then
    replaces the weights when resuming (``trainers.train``)."""
    if cfg["stage"] != "pretrain":
        return load_required(cfg, "pretrained", device)
    model = build_model(cfg["model"], quality=cfg["quality"], N=cfg["N"], M=cfg["M"]).to(device)
    if cfg.get("init"):
        if not Path(cfg["init"]).is_file():
            raise FileNotFoundError(f"init checkpoint {cfg['init']!r} not found")
        start = checkpoints.load_model(cfg["init"], device=device)
        if cfg.get("init_widen"):  # a wider Hyper that starts as init (ValueError if not)
            if cfg.get("widen_mode", "zero") == "split":
                return split_hyper(start, model, seed=cfg["seed"]).train()
            return widen_hyper(start, model).train()
        theirs, ours = dict(start.named_parameters()), dict(model.named_parameters())
        wrong = [k for k in ours if k not in theirs or theirs[k].shape != ours[k].shape]
        if wrong:
            raise ValueError(f"init {cfg['init']!r} does not fit model={cfg['model']!r} N={cfg['N']}"
                             f" M={cfg['M']}: {len(wrong)} tensors differ, e.g. {wrong[:3]} "
                             "(a Hyper with a larger N or M: set init_widen true)")
        model = start.train()
    if cfg.get("freeze"):  # e.g. g_a: the hard stage of soft-then-hard (pretrain_objective)
        getattr(model, cfg["freeze"]).requires_grad_(False)
    return model


def run_training(stage: str, cfg: Dict[str, Any]) -> Tuple[torch.nn.Module, list]:
    """Build (or load) the model, train it for ``stage`` and save into ``cfg["run_dir"]``."""
    cfg = {**cfg, "stage": stage}
    device = setup(cfg)
    run_dir = checkpoints.check_writable(cfg["run_dir"])
    if distributed.is_main():
        (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=True))
    seed_everything(cfg["seed"])  # the initial weights too: two runs of one config are identical
    model = build_student(cfg, device)
    teacher = load_required(cfg, "teacher", device) if stage == "pkdt" and cfg["method"] == "pkdt" \
        else None
    paths, desc = data.find_train_set(cfg["data_root"], cfg["train_split"])
    print(f"training data: {desc}")
    dataset = data.ImageFolderDataset(paths, patch_size=cfg["patch_size"], train=True)
    history = train(model, dataset, make_objective(cfg, teacher), cfg, run_dir, device)
    return model, history


ABLATION_NAMES = {"best": "best", "no-smooth": "best w/o smooth_loss",
                  "no-dydx": "best w/o dy/dx", "no-dbpp": "best w/o dbpp_main/dx"}


def run_ablations(cfg: Dict[str, Any]) -> list:
    """Table 2 and tuning: train and evaluate each Stage II variant of ``cfg["variants"]``
    (a row of :data:`nic_core.config.ABLATIONS` or ``name=value`` overrides,
    :func:`nic_core.config.variant_overrides`) in ``run_dir/<variant>``; resumable like every
    run. With ``results_dir``, each variant's results also go to ``results_dir/<variant>/``."""
    rows = []
    pkdt_names = config.schema("pkdt")
    for v in config.ablation_list(cfg["variants"]):
        changes = config.variant_overrides(v)
        params = {k: val for k, val in {**cfg, **changes}.items() if k in pkdt_names}
        vcfg = config.validate("pkdt", {**params, "run_dir": str(Path(cfg["run_dir"]) / v)})
        print(f"== {v}: {changes or 'as configured'}")
        codec, _ = run_training("pkdt", vcfg)
        rows.append(evaluate_run(codec, vcfg, name=ABLATION_NAMES.get(v, f"best, {v}")))
        if cfg.get("results_dir"):
            dst = Path(cfg["results_dir"]) / v / "metrics.json"
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(Path(vcfg["run_dir"]) / "metrics.json", dst)
    return rows


def test_images(cfg: Dict[str, Any]):
    """The evaluation images of a run: ``eval_set``, first ``eval_limit``, centre ``eval_crop``."""
    paths, desc = data.find_test_set(cfg["eval_set"], cfg["data_root"])
    if cfg["eval_limit"]:
        paths = paths[:cfg["eval_limit"]]
        desc += f", first {len(paths)}"
    images = data.load_images(paths)
    c = cfg["eval_crop"]
    if c:
        images = [(n, data.centre_crop(t, c)) for n, t in images]
        desc += f", centre {c}x{c} crops"
    return images, desc


def evaluate_run(model: torch.nn.Module, cfg: Dict[str, Any], name: Optional[str] = None,
                 out: Optional[Path] = None, adversarial: Optional[Path] = None,
                 resumable: bool = False, fresh: bool = False,
                 description: Optional[str] = None) -> Dict[str, Any]:
    """Clean + ``eval_attacks`` (+ ``eval_worst_case``) evaluation written to ``out`` (default
    ``<run_dir>/metrics.json``). ``name`` defaults to :func:`run_name`. ``adversarial``: also
    save the attacked images there (``{spec: {image: [3,H,W] float}}``, for transfer attacks).
    ``resumable``: journal each finished image group in ``out.journal`` (resumed by calling
    again, removed once ``out`` is written; ``fresh`` deletes an old one first,
    :mod:`nic_core.journal`).
    """
    out = Path(out or Path(cfg["run_dir"]) / "metrics.json")
    images, desc = test_images(cfg)
    if cfg["eval_defence"]:
        model = defenses.wrap(model, cfg["eval_defence"])
        name = f"{name or run_name(cfg)} + {cfg['eval_defence']}"
    adv: Dict[str, Dict[str, torch.Tensor]] = {}
    on = cfg["attack_iterations"] > 0
    attacks = config.attack_list(cfg["eval_attacks"]) if on else ()
    worst = config.attack_list(cfg["eval_worst_case"]) if on and cfg["eval_worst_case"] else ()
    results = evaluate.evaluate_robustness(
        model, images, attacks=attacks, eps=cfg["eps"], iterations=max(1, cfg["attack_iterations"]),
        lr=cfg["attack_lr"], quant=cfg["attack_quant"], seed=cfg["seed"],
        to_uint8=cfg["eval_uint8"], worst_case=worst, restarts=cfg["eval_restarts"],
        schedule=cfg["attack_schedule"], name=name or run_name(cfg),
        description=description or f"{cfg.get('stage', '')} run {cfg['run_dir']}",
        config=cfg, dataset=desc,
        progress=cfg["progress"], batch_size=cfg["eval_batch"],
        adversarial=adv if adversarial else None,
        journal=journal.journal_path(out) if resumable else None, fresh=fresh)
    if distributed.is_main():  # every rank evaluated its shard and holds the gathered rows
        evaluate.save_results(results, out)
        if adversarial:
            checkpoints.atomic_torch_save(adv, adversarial)
    distributed.barrier()
    if resumable and distributed.is_main():
        journal.remove(journal.journal_path(out))
    return results


def with_predecessors(cfg: Dict[str, Any], results: Dict[str, Any]) -> list:
    """``results`` after the evaluated runs it started from (pretrained, teacher), if comparable."""
    rows = [metrics_beside(cfg[k]) for k in ("pretrained", "teacher") if cfg.get(k)]
    return comparable([r for r in rows if r] + [results])


EVAL_KEYS = ("eval_set", "eval_limit", "eval_crop", "eps", "attack_iterations", "attack_lr",
             "attack_quant", "eval_worst_case", "eval_restarts", "eval_uint8", "attack_schedule")


def metrics_beside(checkpoint: str) -> Optional[Dict[str, Any]]:
    """The ``metrics.json`` in a checkpoint's run folder, if that run was evaluated."""
    path = Path(checkpoint).parent / "metrics.json"
    return evaluate.load_results(path) if path.is_file() else None


def comparable(results: list) -> list:
    """Keep the results evaluated like the last one (same test set, crops, eps, iterations).

    Rows evaluated differently would make a misleading table; they are dropped with a message.
    """
    ref = {k: (results[-1].get("config") or {}).get(k) for k in EVAL_KEYS}
    keep = []
    for r in results:
        cfg = r.get("config") or {}
        diff = {k: cfg.get(k) for k in EVAL_KEYS if cfg.get(k) != ref[k]}
        if diff:
            print(f"not comparing {r['name']!r}: evaluated with {diff}, not {ref}")
        else:
            keep.append(r)
    return keep


def main(argv=None) -> int:
    """``python -m nic_core.runs STAGE [-f params.yaml] [-p name value ...]``: train + evaluate.

    ``--eval-only CHECKPOINT``: no training; evaluate that checkpoint with the parameters' eval
    settings (e.g. ``-p eval_set div2k-valid -p attack_iterations 500``) into ``--out``
    (default: ``metrics_<eval_set>.json`` beside the checkpoint), named ``--name``, else after the
    checkpoint's run (:func:`run_name`). Resumable: each finished image group is journalled
    in ``OUT.journal``; after SIGTERM / SIGINT / kill -9 the same command goes on from there
    (``--fresh`` starts afresh).
    """
    ap = argparse.ArgumentParser(description=main.__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stage", choices=sorted(config.STAGE))
    ap.add_argument("-f", "--params", help="YAML parameter file")
    ap.add_argument("-p", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    ap.add_argument("--no-eval", action="store_true")
    ap.add_argument("--eval-only", metavar="CHECKPOINT", help="evaluate this checkpoint only")
    ap.add_argument("--out", help="with --eval-only: results path")
    ap.add_argument("--name", help="with --eval-only: the model's name (default: the run's)")
    ap.add_argument("--adversarial", help="with --eval-only: also save the attacked images "
                    "(a .pt file) for python -m nic_core.evaluate transfer")
    ap.add_argument("--fresh", action="store_true", help="with --eval-only: delete the journal "
                    "of a stopped evaluation (OUT.journal) instead of resuming it")
    args = ap.parse_args(argv)
    cfg = config.validate(args.stage, config.cli_params(args.params, args.p))
    try:
        return _main(args, cfg)
    finally:
        distributed.shutdown()


def _main(args, cfg: Dict[str, Any]) -> int:
    if args.eval_only:
        device = setup(cfg)
        ckpt = checkpoints.load_checkpoint(args.eval_only)
        model = checkpoints.load_model(args.eval_only, device=device)
        run_dir = Path(args.eval_only).parent
        run_cfg = {**ckpt.get("config", {}), "stage": ckpt.get("stage") or args.stage}
        out = Path(args.out or run_dir / f"metrics_{cfg['eval_set']}.json")
        own = {k: run_cfg[k] for k in ("model", "lmbda", "quality") if k in run_cfg}
        own.update(zoo.width(ckpt["state_dict"]))  # the weights' N, M (issue 33: configs erred)
        evaluate_run(model, {**cfg, **own, "stage": run_cfg["stage"], "run_dir": str(run_dir)},
                     name=args.name or run_name(run_cfg), out=out, adversarial=args.adversarial,
                     resumable=True, fresh=args.fresh)
        if distributed.is_main():
            print(f"saved {out}")
        return 0
    if args.stage == "ablation":
        run_ablations(cfg)
        return 0
    model, _ = run_training(args.stage, cfg)
    if not args.no_eval:
        evaluate_run(model, cfg)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
