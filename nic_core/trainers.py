"""One training loop; pretraining, Stage I, Stage II (PKDT) and the baselines are configurations.

The stages of arXiv 2403.06700 (Algorithm 1) differ only in the *objective*, a callable
``objective(model, x) -> {"loss": tensor, ...scalars}`` that may attack part of the batch or
consult a frozen teacher. :func:`train_step` is one optimiser step (also what
``python -m nic_core.bench training`` times). :func:`train` owns everything else, so a fix
reaches every stage: the net + aux optimisers (CompressAI style; aux = ``*.quantiles``),
gradient clipping, the paper's step-wise learning-rate halving, a NaN guard, ``history.jsonl``
logging, atomic checkpoints with ``update(force=True)`` and exact resume (model, optimisers,
step, RNG state).

Objectives (:func:`make_objective` binds one named function per stage to its settings:
:func:`pretrain_objective`, :func:`teacher_objective`, :func:`pkdt_objective`):

* ``pretrain``: RD loss = lmbda * 255^2 * MSE + bpp on clean crops.
* ``teacher`` (Stage I): RD loss + alpha * smooth_loss (eq. 2).
* ``pkdt`` (Stage II): per batch, psnr-attack one part and bpp-attack another against the current
  student in one batched call; loss = D_loss + alpha * |bpp_tc - bpp_ft| + beta * smooth_loss
  (eq. 3-5) with the teacher's bpp on the *clean* inputs, estimated like the student's (noise
  proxy; ``teacher_rate``).
* ``adv`` (plain adversarial training) and ``ma2023`` (Chen & Ma's fine-tuning defence): the same
  attacked batch, RD loss on it, no teacher.
"""
from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import random
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import torch

from . import attacks, checkpoints, distributed, losses
from .config import smooth_terms
from .models import autocast, aux_parameters, codec_forward, net_parameters

Objective = Callable[[torch.nn.Module, torch.Tensor], Dict[str, torch.Tensor]]


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but CUDA is not available on this machine")
    return torch.device(device)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def lr_factor(t: float, start: int, every: int) -> float:
    """The paper's schedule: constant, then halved at ``start`` and every ``every`` after.

    E.g. pretraining: start=50, every=25 (epochs) halves at epochs 50 and 75 of 100.
    ``start=0`` means no decay.
    """
    if start <= 0 or t < start:
        return 1.0
    return 0.5 ** (1 + int((t - start) // every))


def batch_stream(dataset, batch_size: int, seed: int, start_step: int = 0, rank: int = 0,
                 world_size: int = 1) -> Iterator[torch.Tensor]:
    """Endless batches: a fresh permutation per epoch from ``(seed, epoch)``, drop-last.

    Deterministic in the step index, so a resumed run sees the same batches as an uninterrupted
    one, and each item's random crop is seeded by (seed, step, position in the global batch),
    so ``rank`` / ``world_size`` (which shard each epoch's permutation for multi-process
    training) change who computes a patch, never the patch.
    """
    n = len(dataset)
    per_epoch = steps_per_epoch(n, batch_size * world_size)
    step = start_step
    while True:
        epoch, pos = divmod(step, per_epoch)
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        perm = torch.randperm(n, generator=g)
        if n < batch_size * world_size:  # tiny data sets: sample with replacement
            perm = perm.repeat(math.ceil(batch_size * world_size / n))
        for b in range(pos, per_epoch):
            idx = perm[b * batch_size * world_size:(b + 1) * batch_size * world_size].tolist()
            items = []
            for j in range(rank, len(idx), world_size):
                # each item's random crop / flips from (seed, step, position in the global
                # batch): the same patches for any number of processes; other RNG use untouched
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed((seed * 1_000_003 + step) * 4096 + j)
                    items.append(dataset[int(idx[j])])
            yield torch.stack(items)
            step += 1


def steps_per_epoch(n_items: int, batch_size: int) -> int:
    return max(1, n_items // batch_size)


def total_steps(cfg: Dict[str, Any], n_items: int) -> int:
    if cfg["budget_unit"] == "steps":
        return cfg["budget"]
    return cfg["budget"] * steps_per_epoch(n_items, cfg["batch_size"])


def train_step(model: torch.nn.Module, x: torch.Tensor, objective: Objective,
               net_opt: torch.optim.Optimizer, aux_opt: torch.optim.Optimizer,
               clip_max_norm: float = 1.0, precision: str = "fp32") -> Optional[Dict[str, float]]:
    """One optimisation step: objective, backward, clipping, net step, then the aux step.

    ``precision="bf16"`` runs the objective (the training forward, and Stage II's attacks on
    the batch) under a bfloat16 autocast; the entropy models stay float32 and backward, the
    optimiser steps and the aux step run outside it (:func:`nic_core.models.autocast`).

    Returns the objective's terms (plus ``aux_loss``) as floats, or ``None`` when the loss is
    not finite (nothing is updated then).
    """
    net = distributed.unwrap(model)  # under DDP, ``model`` is the wrapper (see distributed)
    net.train()
    with autocast(x.device, precision):
        terms = objective(model, x)
    loss = terms["loss"]
    net_opt.zero_grad(set_to_none=True)
    if not distributed.all_true(bool(torch.isfinite(loss))):  # every rank skips together
        return None
    loss.backward()  # DDP all-reduces the net gradients here
    if clip_max_norm > 0:
        torch.nn.utils.clip_grad_norm_(net_parameters(net), clip_max_norm)
    net_opt.step()
    aux_opt.zero_grad(set_to_none=True)
    aux_loss = net.aux_loss()
    aux_loss.backward()
    distributed.average_grads(aux_parameters(net))
    aux_opt.step()
    return distributed.mean_of(
        {"aux_loss": float(aux_loss.detach()),
         **{k: float(v.detach() if torch.is_tensor(v) else v) for k, v in terms.items()}})


def train(model: torch.nn.Module, dataset, objective: Objective, cfg: Dict[str, Any],
          run_dir, device: Optional[torch.device] = None, max_nan_steps: int = 5,
          stop_after: Optional[int] = None) -> List[Dict[str, float]]:
    """Train ``model`` in place on ``dataset`` with ``objective``; returns the history.

    Args:
        model: CompressAI codec (already on ``device``).
        dataset: indexable of [3, p, p] tensors (``data.ImageFolderDataset``).
        objective: ``objective(model, x) -> {"loss", ...}`` (see :func:`make_objective`).
        cfg: validated parameters (``config.validate``): lr, aux_lr, clip_max_norm, budget,
            budget_unit, lr_decay_start, lr_decay_every, batch_size, seed, ckpt_every, resume.
        run_dir: folder for ``checkpoint.pt`` and ``history.jsonl``.
        max_nan_steps: skip a step whose loss is not finite, fail after this many in a row.
        stop_after: stop (with a checkpoint) after this many steps of *this call*, as if the
            process had been killed; used to test resume.
    """
    device = device or next(model.parameters()).device
    rank, world_size = distributed.world()
    main = rank == 0
    if cfg["batch_size"] % world_size:
        raise ValueError(f"batch_size {cfg['batch_size']} (the global batch) must be divisible "
                         f"by the {world_size} processes")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path, hist_path = run_dir / "checkpoint.pt", run_dir / "history.jsonl"
    seed_everything(cfg["seed"])
    net_opt, aux_opt, start = _optimisers(model, cfg, ckpt_path, device)
    history = _start_history(hist_path, start, main)
    if world_size > 1:  # own crops and noise per rank, reproducible from (seed, rank, step)
        torch.manual_seed(cfg["seed"] * 1_000_003 + 7919 * rank + start)
    net, model = model, distributed.wrap(model, [n for n, _ in model.named_parameters()
                                                 if n.endswith(".quantiles")])

    n_total = total_steps(cfg, len(dataset))
    per_epoch = steps_per_epoch(len(dataset), cfg["batch_size"])
    unit = per_epoch if cfg["budget_unit"] == "epochs" else 1
    stop = n_total if stop_after is None else min(n_total, start + stop_after)
    batches = batch_stream(dataset, cfg["batch_size"] // world_size, cfg["seed"], start,
                           rank=rank, world_size=world_size)
    save = functools.partial(_save, net, cfg, net_opt, aux_opt, ckpt_path, per_epoch, main)

    from tqdm.auto import tqdm
    bar = tqdm(total=n_total, initial=start, desc=cfg.get("stage", "train"),
               disable=not (cfg.get("progress", True) and main))
    nan_run, t0 = 0, time.perf_counter()
    with open(hist_path if main else os.devnull, "a") as log, _stop_signals() as stop_requested:
        for step in range(start, stop):
            _stop_if_requested(stop_requested, step, bar, save, ckpt_path)
            lr = _set_lr(net_opt, cfg, step / unit)
            x = next(batches).to(device, non_blocking=True)
            terms = train_step(model, x, objective, net_opt, aux_opt, cfg["clip_max_norm"],
                               cfg.get("precision", "fp32"))
            if terms is None:
                nan_run = _skip_nan_step(nan_run + 1, max_nan_steps, step, save, ckpt_path)
                bar.update(1)
                continue
            nan_run = 0
            row = {"step": step + 1, "epoch": (step + 1) / per_epoch, "lr": lr,
                   "seconds": time.perf_counter() - t0, **terms}
            _log_step(row, history, log, bar)
            if cfg.get("ckpt_every") and (step + 1) % cfg["ckpt_every"] == 0 and step + 1 < stop:
                log.flush()
                save(step + 1)
    bar.close()
    save(stop)
    net.eval()
    return history


def _optimisers(model: torch.nn.Module, cfg: Dict[str, Any], ckpt_path: Path,
                device: torch.device) -> Tuple[torch.optim.Optimizer, torch.optim.Optimizer, int]:
    """The net and aux Adam optimisers and the first step: resumed (weights, optimisers, step,
    RNG state) from ``ckpt_path`` when ``cfg["resume"]`` and it holds a checkpoint of this stage."""
    net_opt = torch.optim.Adam(net_parameters(model), lr=cfg["lr"])
    aux_opt = torch.optim.Adam(aux_parameters(model), lr=cfg["aux_lr"])
    start = 0
    if cfg.get("resume", True) and ckpt_path.exists():
        ckpt = checkpoints.load_checkpoint(ckpt_path, map_location=device)
        if ckpt.get("stage") == cfg.get("stage", ckpt.get("stage")) and ckpt["optimizer"]:
            checkpoints.load_weights(model, ckpt["state_dict"])
            net_opt.load_state_dict(ckpt["optimizer"])
            aux_opt.load_state_dict(ckpt["aux_optimizer"])
            checkpoints.set_rng_state(ckpt["rng"])
            start = ckpt["step"]
    return net_opt, aux_opt, start


def _start_history(hist_path: Path, start: int, main: bool) -> List[Dict[str, float]]:
    """The history up to step ``start``; rank 0 drops the rows logged after that checkpoint."""
    rows = ([json.loads(line) for line in hist_path.read_text().splitlines() if line.strip()]
            if hist_path.exists() else [])
    history = [r for r in rows if r["step"] <= start]
    if main:
        with open(hist_path, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in history)
    return history


def _save(net: torch.nn.Module, cfg: Dict[str, Any], net_opt, aux_opt, ckpt_path: Path,
          per_epoch: int, main: bool, step: int) -> None:
    """Checkpoint at ``step``: every rank holds the same weights; rank 0 writes, the others wait."""
    if main:
        checkpoints.save_checkpoint(ckpt_path, net, cfg, net_opt, aux_opt, step=step,
                                    epoch=step // per_epoch, extra={"stage": cfg.get("stage")})
    distributed.barrier()


def _stop_if_requested(stop_requested: List[str], step: int, bar, save: Callable[[int], None],
                       ckpt_path: Path) -> None:
    """After a signal to any rank, all ranks stop at this step: checkpoint, then Interrupted."""
    if distributed.any_true(bool(stop_requested)):
        stop_requested = stop_requested or ["a signal to another rank"]
        bar.close()
        save(step)
        raise Interrupted(f"{stop_requested[0]} at step {step}: checkpoint saved to "
                          f"{ckpt_path}; run the same command again to resume")


def _set_lr(net_opt: torch.optim.Optimizer, cfg: Dict[str, Any], t: float) -> float:
    """The net learning rate at time ``t`` (in ``budget_unit``), set on ``net_opt``."""
    lr = cfg["lr"] * lr_factor(t, cfg["lr_decay_start"], cfg["lr_decay_every"])
    for group in net_opt.param_groups:
        group["lr"] = lr
    return lr


def _skip_nan_step(nan_run: int, max_nan_steps: int, step: int, save: Callable[[int], None],
                   ckpt_path: Path) -> int:
    """Count a skipped non-finite step; after ``max_nan_steps`` in a row, checkpoint and fail."""
    if nan_run >= max_nan_steps:
        save(step)
        raise FloatingPointError(f"loss not finite for {nan_run} steps in a row "
                                 f"(step {step}); last good state saved to {ckpt_path}")
    return nan_run


def _log_step(row: Dict[str, float], history: List[Dict[str, float]], log, bar) -> None:
    history.append(row)
    log.write(json.dumps(row) + "\n")
    log.flush()
    bar.update(1)
    bar.set_postfix(loss=f"{row['loss']:.4g}", refresh=False)


class Interrupted(SystemExit):
    """Training stopped by SIGTERM / SIGINT after writing a checkpoint (exit status 0)."""

    def __init__(self, message: str):
        print(message, flush=True)
        super().__init__(0)
        self.message = message


@contextlib.contextmanager
def _stop_signals():
    """While training, SIGTERM and SIGINT (Ctrl-C) only *request* a stop: the loop finishes the
    current step, writes a checkpoint and exits cleanly. Yields a list that holds the signal's
    name once one arrived. Outside the main thread (no signal handlers there) it does nothing."""
    requested: List[str] = []
    if threading.current_thread() is not threading.main_thread():
        yield requested
        return
    old = {}

    def handler(signum, frame):
        if requested:  # a second signal: stop now, as the default handler would
            raise KeyboardInterrupt
        requested.append(signal.Signals(signum).name)

    for sig in (signal.SIGTERM, signal.SIGINT):
        old[sig] = signal.signal(sig, handler)
    try:
        yield requested
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


def _split_roles(batch_mix: str, batch_size: int) -> List[str]:
    """Per-sample roles for Stage II, e.g. ``"psnr,bpp,clean"`` repeated to the batch size."""
    roles = [r.strip() for r in batch_mix.split(",") if r.strip()]
    bad = [r for r in roles if r not in ("psnr", "bpp", "clean", "ma2023")]
    if not roles or bad:
        raise ValueError(f"batch_mix must list psnr/bpp/clean/ma2023 roles, got {batch_mix!r}")
    return [roles[i % len(roles)] for i in range(batch_size)]


def make_objective(cfg: Dict[str, Any], teacher: Optional[torch.nn.Module] = None) -> Objective:
    """The loss of one training step for ``cfg["stage"]`` (and ``cfg["method"]`` in Stage II)."""
    stage = cfg["stage"]
    terms = smooth_terms(cfg.get("smooth_terms", ""))
    if distributed.world()[1] > 1 and cfg.get("smooth_method", "fused") != "fused" and terms:
        raise ValueError("under torchrun smooth_loss must reuse the training forward "
                         "(smooth_method='fused'): a second forward outside DDP would not be "
                         "all-reduced")
    if stage == "pretrain":
        return functools.partial(pretrain_objective, cfg)
    if stage == "teacher":
        return functools.partial(teacher_objective, cfg, terms)
    if stage != "pkdt":
        raise ValueError(f"unknown stage {stage!r}")
    if cfg["method"] == "pkdt" and teacher is None:
        raise ValueError("Stage II (method='pkdt') needs a teacher model")
    if teacher is not None:
        teacher.eval().requires_grad_(False)
    return functools.partial(pkdt_objective, cfg, terms, teacher)


def pretrain_objective(cfg: Dict[str, Any], model: torch.nn.Module,
                       x: torch.Tensor) -> Dict[str, torch.Tensor]:
    """Pretraining: RD loss on the clean batch, through ``cfg["train_quant"]``.

    ``"noise"`` is Balle et al.'s proxy. ``"ste"`` with ``freeze="g_a"`` is the hard stage of
    "soft then hard" (Guo et al., ICML 2021): with the analysis transform fixed, y is fixed, so
    the rate term is the real code length of round(y) under the hyperprior and the synthesis
    transform learns from the very y_hat it decodes at test time.
    """
    return losses.rd_loss(codec_forward(model, x, cfg.get("train_quant", "noise")), x,
                          cfg["lmbda"])


def teacher_objective(cfg: Dict[str, Any], terms: Tuple[str, ...], model: torch.nn.Module,
                      x: torch.Tensor) -> Dict[str, torch.Tensor]:
    """Stage I: RD loss + alpha * smooth_loss (eq. 2), smooth_loss reusing the training forward."""
    use_smooth = cfg["alpha"] > 0 and bool(terms)
    out, g = _noisy_forward(model, x, use_smooth)
    rd = losses.rd_loss(out, x, cfg["lmbda"])
    sm = _smooth(cfg, terms, model, x, out, g) if use_smooth else None
    loss = rd["loss"] + (cfg["alpha"] * sm["loss"] if sm is not None else 0.0)
    return {**rd, "loss": loss, **({"smooth_loss": sm["loss"]} if sm else {})}


def pkdt_objective(cfg: Dict[str, Any], terms: Tuple[str, ...],
                   teacher: Optional[torch.nn.Module], model: torch.nn.Module,
                   x: torch.Tensor) -> Dict[str, torch.Tensor]:
    """Stage II (``cfg["method"]``): ``pkdt`` = eq. 3-5 on the attacked batch against the
    teacher's rate on the clean one; ``adv`` / ``ma2023`` = RD loss on the attacked batch."""
    method = cfg["method"]
    x_new = _attacked_batch(cfg, model, x)
    use_smooth = method == "pkdt" and cfg["beta"] > 0 and bool(terms)
    out, g = _noisy_forward(model, x_new, use_smooth)
    if method in ("adv", "ma2023"):
        return losses.rd_loss(out, x_new, cfg["lmbda"])
    with torch.no_grad():  # same rate estimator as bpp_ft unless told otherwise (offset)
        bpp_tc = codec_forward(teacher, x, cfg.get("teacher_rate", "noise"))["bpp"]
    sm = _smooth(cfg, terms, model, x_new, out, g) if use_smooth else None
    return losses.pkdt_loss(out, x_new, bpp_tc, alpha=cfg["alpha"], beta=cfg["beta"],
                            smooth=sm["loss"] if sm is not None else None)


def _attacked_batch(cfg: Dict[str, Any], model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``x`` with its samples attacked per role (``cfg["batch_mix"]``) against the current
    student, in one batched call; the clean samples unchanged."""
    rank, size = distributed.world()  # this rank's samples of the global batch's roles
    roles = _split_roles(cfg["batch_mix"], x.shape[0] * size)[rank::size]
    if cfg["method"] == "ma2023":  # Chen & Ma: their attack on every attacked sample
        roles = ["ma2023" if r != "clean" else r for r in roles]
    idx = [i for i, r in enumerate(roles) if r != "clean"]
    x_new = x.clone()
    if idx:
        iters = [cfg["n_b"] if roles[i] == "bpp" else cfg["n_p"] for i in idx]
        adv = attacks.attack(distributed.unwrap(model), x[idx],  # no DDP for attacks
                             kind=[roles[i] for i in idx], eps=cfg["eps"],
                             iterations=iters, lr=cfg["attack_lr"],
                             quant=cfg["attack_quant"], schedule=cfg["attack_schedule"],
                             seed=int(torch.randint(2**31, ())))
        x_new[idx] = adv["x_adv"].detach()
    return x_new


def _noisy_forward(model: torch.nn.Module, x: torch.Tensor, input_grad: bool = False):
    """Training forward whose noise sample smooth_loss can reuse (a shared generator).

    ``input_grad``: keep the graph to x, which smooth_loss differentiates through.
    """
    g = torch.Generator(device=x.device)
    g.manual_seed(int(torch.randint(2 ** 62, ())))
    state = g.get_state()
    if input_grad:  # smooth_loss reuses this pass: true LowerBound derivatives, graph to x
        x.requires_grad_(True)
        with losses.exact_bounds(model):
            out = codec_forward(model, x, "noise", generator=g)
    else:
        out = codec_forward(model, x, "noise", generator=g)
    g.set_state(state)
    return out, g


def _smooth(cfg: Dict[str, Any], terms: Tuple[str, ...], model: torch.nn.Module,
            x: torch.Tensor, out, g: torch.Generator) -> Dict[str, torch.Tensor]:
    return losses.smooth_loss(model, x, terms=terms, out=out, generator=g,
                              method=cfg.get("smooth_method", losses.DEFAULT_SMOOTH_METHOD))
