"""Benchmarks measured in one run: ``python -m nic_core.bench attacks|training [options]``.

``attacks`` times, on one input of ``--size`` (default 768x512, a Kodak image) and the default
codec (``hyper`` quality 3; random weights, timing does not depend on them):

* ``bare``: one forward+backward of the codec, ``codec_forward(..., "ste")``, loss on
  ``x_hat`` and ``bpp``, gradient to the input only (parameters frozen), in both memory formats;
* one iteration of each attack (``psnr``, ``bpp``, ``ma2023``, ``pgd-psnr``; strongest-iterate
  tracking on, the default; also ``psnr`` keeping the last iterate and ``psnr`` through the
  ``noise`` path, whose tracking costs a rounded forward every 5 steps) on one image and of
  a mixed batch of two (psnr + bpp, as Stage II of the paper), from the attack's own
  ``loop_seconds``;
* ``naive``: the per-image attack loop a user would write: contiguous memory format, parameter
  gradients left on (``loss.backward()``), the clean reconstruction recomputed every iteration,
  ``model(x)`` called directly, ``torch.optim.Adam`` on the noise.

It prints ms per iteration and the ratios against the targets: attack / bare <= 1.15 (bare in
the attack's own memory format, channels_last) and naive / ours >= 1.5.

``training`` times whole optimiser steps (:func:`nic_core.trainers.train_step`, the trainer's own
step) on one batch of ``--batch`` crops of ``--patch`` pixels:

* ``RD step``: the pretraining objective (Stage I without smooth_loss);
* ``RD + smooth_loss`` steps for each ``smooth_loss`` method (``fused``, the default; ``fast``,
  finite differences; ``exact``, naive double backprop), ratios against the RD step (target for
  the default: <= 2.0);
* a Stage II (PKDT) step with the two attacks in one batched call, and the same two attacks run
  one after the other (the attack part alone, ``--iterations`` bpp-attack and twice as many
  psnr-attack iterations, the paper's N_p = 2 N_b);
* the peak memory of one Stage II step at ``--patch`` (paper: 256) in a fresh process: on CUDA
  ``torch.cuda.max_memory_allocated``, on CPU the rise of the process's peak resident set size
  (``VmHWM``) during the step.

The measurements are interleaved: each round runs every one of them once, so a change of
machine load (shared CPUs) hits all of them alike; medians over ``--repeats`` rounds after
``--warmup`` rounds. Add a benchmark by adding a function to :data:`BENCHES`.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch

from . import attacks, cli, config, losses, trainers
from .models import aux_parameters, build_model, codec_forward, net_parameters, quantization

TARGET_ATTACK_OVER_BARE = 1.15  # with strongest-iterate tracking on (issue 8)
TARGET_APGD_OVER_BARE = 1.05  # APGD's iteration (issue 32, item 7)
TARGET_NAIVE_OVER_OURS = 1.5
TARGET_SMOOTH_OVER_RD = 2.0


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


def _timed(fn: Callable[[], None]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _bare(model, x) -> Callable[[], float]:
    """One forward+backward to the input only (what every attack iteration needs)."""
    def run():
        n = torch.zeros_like(x).requires_grad_(True)
        out = codec_forward(model, x + n, quant="ste")
        loss = (out["x_hat"] - x).pow(2).mean() + out["bpp"].sum()
        torch.autograd.grad(loss, n)
    return lambda: _timed(run)


def _naive(model, xs: List[torch.Tensor], eps: float, iters: int) -> Callable[[], float]:
    """A straightforward per-image eq.-6 attack; returns seconds per iteration per image."""
    def run():
        t = time.perf_counter()
        for x in xs:  # one image at a time
            n = torch.zeros_like(x).requires_grad_(True)
            opt = torch.optim.Adam([n], lr=attacks.DEFAULT_LR)
            for _ in range(iters):
                with quantization(model, "ste"):
                    clean = model(x)  # recomputed every iteration
                    out = model((x + n).clamp(0, 1))
                bpp0 = sum(-torch.log2(v).sum() for v in clean["likelihoods"].values()) / (
                    x.shape[-2] * x.shape[-1])
                bpp = sum(-torch.log2(v).sum() for v in out["likelihoods"].values()) / (
                    x.shape[-2] * x.shape[-1])
                nmse = n.pow(2).mean()
                if nmse >= eps:
                    loss = nmse.sqrt() + (bpp - bpp0).abs()
                else:
                    loss = 1 - (out["x_hat"].clamp(0, 1) - x).pow(2).mean()
                opt.zero_grad()
                loss.backward()  # also fills the parameters' .grad
                opt.step()
        return (time.perf_counter() - t) / (iters * len(xs))
    return run


def _attack_iter(model, x, kind, iters: int, **kw) -> Callable[[], float]:
    """Seconds per iteration of :func:`nic_core.attacks.attack` (its loop time only)."""
    def run():
        out = attacks.attack(model, x, kind, eps=5e-4, iterations=iters, **kw)
        return out["loop_seconds"] / iters
    return run


def _interleaved(measures: Dict[str, Callable[[], float]], warmup: int, repeats: int):
    """Run every measurement once per round; return (all times, medians, minima) in seconds."""
    times: Dict[str, List[float]] = {k: [] for k in measures}
    for r in range(warmup + repeats):
        for name, fn in measures.items():
            t = fn()
            if r >= warmup:
                times[name].append(t)
        print(f"  round {r + 1}/{warmup + repeats}" + (" (warmup)" if r < warmup else "") + ": "
              + ", ".join(f"{k} {times[k][-1] * 1e3:.0f}" for k in measures if r >= warmup),
              flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    best = {k: min(v) for k, v in times.items()}
    return times, med, best


def _row(name, times, med, best, ref=None, target=None, kind="<=") -> Dict[str, Any]:
    """One measurement: median / min / all in ms; with ``ref``, the ratio to that measurement."""
    row = {"name": name, "ms_per_iter": med[name] * 1e3, "ms_min": best[name] * 1e3,
           "ms_all": [t * 1e3 for t in times[name]], "ratio": None, "ratio_min": None,
           "target": None, "target_kind": None, "ok": None}
    if ref is not None:
        row.update(ratio=med[name] / med[ref], ratio_min=best[name] / best[ref])
    if target is not None:
        ok = row["ratio"] <= target if kind == "<=" else row["ratio"] >= target
        row.update(target=target, target_kind=kind, ok=ok)
    return row


def _ratio_row(name, num, den, med, best, target=None, per=1) -> Dict[str, Any]:
    """A ratio-only row: ``num`` over ``den`` divided by ``per`` (images per call), ``>= target``."""
    ratio = med[num] / (med[den] / per)
    return {"name": name, "ms_per_iter": None, "ms_min": None, "ms_all": None, "ratio": ratio,
            "ratio_min": best[num] / (best[den] / per), "target": target,
            "target_kind": None if target is None else ">=",
            "ok": None if target is None else ratio >= target}


def bench_attacks(args) -> Dict[str, object]:
    w, h = (int(v) for v in args.size.lower().split("x"))
    torch.manual_seed(0)
    model = build_model(args.model, quality=args.quality).eval()
    model.requires_grad_(False)
    x1 = torch.rand(1, 3, h, w)
    x2 = torch.rand(2, 3, h, w)
    cl = torch.channels_last
    R, W, K = args.repeats, args.warmup, args.iterations

    def in_format(fmt, fn):
        """Run ``fn`` with the model's weights in ``fmt`` (attacks convert it themselves)."""
        def run():
            model.to(memory_format=fmt)
            try:
                return fn()
            finally:
                model.to(memory_format=torch.contiguous_format)
        return run

    def naive():
        model.requires_grad_(True)  # the naive user never freezes the codec
        try:
            return _naive(model, [x1, x1.clone()], 5e-4, K)()
        finally:
            model.zero_grad(set_to_none=True)
            model.requires_grad_(False)

    measures = {
        "bare fwd+bwd B=1 (contiguous)": _bare(model, x1.contiguous()),
        "bare fwd+bwd B=1 (channels_last)": in_format(cl, _bare(model, x1.contiguous(
            memory_format=cl))),
        "bare fwd+bwd B=2 (channels_last)": in_format(cl, _bare(model, x2.contiguous(
            memory_format=cl))),
        "attack psnr B=1": _attack_iter(model, x1, "psnr", K),
        "attack psnr B=1, last iterate": _attack_iter(model, x1, "psnr", K, keep_best=False),
        "attack psnr@noise B=1": _attack_iter(model, x1, "psnr", K, quant="noise"),
        "attack bpp B=1": _attack_iter(model, x1, "bpp", K),
        "attack ma2023 B=1": _attack_iter(model, x1, "ma2023", K),
        "attack pgd-psnr B=1": _attack_iter(model, x1, "pgd-psnr", K),
        "attack apgd-psnr B=1": _attack_iter(model, x1, "apgd-psnr", K),
        "attack apgd-psnr@noise B=1": _attack_iter(model, x1, "apgd-psnr", K, quant="noise"),
        "attack apgd-bpp B=1": _attack_iter(model, x1, "apgd-bpp", K),
        "attack mixed [psnr, bpp] B=2": _attack_iter(model, x2, ["psnr", "bpp"], K),
        "naive per-image loop (per image)": naive,
    }
    print(f"bench attacks: {args.model} q{args.quality}, {w}x{h}, {torch.get_num_threads()} "
          f"threads, {K} iterations per attack call; {W} warmup + {R} interleaved rounds "
          "(every measurement once per round, so load changes hit all alike); medians",
          flush=True)
    times, med, best = _interleaved(measures, W, R)
    bare = {1: "bare fwd+bwd B=1 (channels_last)", 2: "bare fwd+bwd B=2 (channels_last)"}
    rows = [_row(name, times, med, best,
                 ref=bare[2 if "B=2" in name else 1] if name.startswith("attack") else None,
                 target=None if not name.startswith("attack") else
                 TARGET_APGD_OVER_BARE if "apgd" in name else TARGET_ATTACK_OVER_BARE)
            for name in med]
    naive = "naive per-image loop (per image)"
    rows += [_ratio_row("strongest-iterate tracking: best / last (psnr B=1)", "attack psnr B=1",
                        "attack psnr B=1, last iterate", med, best),
             _ratio_row("naive / ours psnr B=1", naive, "attack psnr B=1", med, best,
                        TARGET_NAIVE_OVER_OURS),
             _ratio_row("naive / ours mixed B=2 (per image)", naive,
                        "attack mixed [psnr, bpp] B=2", med, best, TARGET_NAIVE_OVER_OURS, per=2)]
    return {"bench": "attacks", "model": args.model, "quality": args.quality,
            "size": f"{w}x{h}", "threads": torch.get_num_threads(), "repeats": R,
            "warmup": W, "iterations": K, "torch": torch.__version__, "rows": rows}


def _stage2_cfg(args, **over) -> Dict[str, Any]:
    return config.defaults("pkdt", model=args.model, N=None, M=None, quality=args.quality,
                           batch_size=3, patch_size=args.patch, n_b=args.iterations,
                           n_p=2 * args.iterations, progress=False, **over)


def _stage2_parts(args, device):
    """Student, frozen teacher, optimisers and a Stage II objective on one random batch."""
    torch.manual_seed(0)
    student = build_model(args.model, quality=args.quality).to(device)
    teacher = build_model(args.model, quality=args.quality).to(device)
    cfg = _stage2_cfg(args)
    objective = trainers.make_objective(cfg, teacher)
    opts = (torch.optim.Adam(net_parameters(student), lr=1e-5),
            torch.optim.Adam(aux_parameters(student), lr=1e-4))
    x = torch.rand(3, 3, args.patch, args.patch, device=device)
    return student, objective, opts, x


def _vm_hwm_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _stage2_peak_memory(args, device: str, queue) -> None:
    """Child process: one Stage II step; puts (bytes, how it was measured) on ``queue``."""
    torch.set_num_threads(args.threads or _cores())
    dev = torch.device(device)
    student, objective, (net_opt, aux_opt), x = _stage2_parts(args, dev)
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
        trainers.train_step(student, x, objective, net_opt, aux_opt)
        torch.cuda.synchronize()
        queue.put((torch.cuda.max_memory_allocated(dev) - base, "cuda max_memory_allocated"))
    else:
        base = _vm_hwm_bytes()
        trainers.train_step(student, x, objective, net_opt, aux_opt)
        queue.put((_vm_hwm_bytes() - base, "rise of peak RSS (VmHWM)"))


def bench_training(args) -> Dict[str, object]:
    """Step cost of smooth_loss and of Stage II (see the module docstring)."""
    device = trainers.resolve_device(args.device)
    torch.manual_seed(0)
    model = build_model(args.model, quality=args.quality).to(device)
    x = torch.rand(args.batch, 3, args.patch, args.patch, device=device)
    K, R, W = args.iterations, args.repeats, args.warmup

    def step_of(objective):
        net_opt = torch.optim.Adam(net_parameters(model), lr=1e-9)  # timing, not training
        aux_opt = torch.optim.Adam(aux_parameters(model), lr=1e-9)

        def run():
            if device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            trainers.train_step(model, x, objective, net_opt, aux_opt)
            if device.type == "cuda":
                torch.cuda.synchronize()
            return time.perf_counter() - t
        return run

    common = dict(model=args.model, N=None, M=None, quality=args.quality, progress=False)
    measures = {"RD step": step_of(trainers.make_objective(config.defaults("pretrain", **common)))}
    for method in ("fused", "fast", "exact"):
        cfg = config.defaults("teacher", smooth_method=method, alpha=1.0, **common)
        name = f"RD + smooth_loss ({method}" + (", default)" if
                                                method == losses.DEFAULT_SMOOTH_METHOD else ")")
        measures[name] = step_of(trainers.make_objective(cfg))

    student, objective, (net_opt, aux_opt), x3 = _stage2_parts(args, device)
    n_p, n_b = 2 * K, K

    def stage2_step():
        t = time.perf_counter()
        trainers.train_step(student, x3, objective, net_opt, aux_opt)
        return time.perf_counter() - t

    def attacks_batched():
        t = time.perf_counter()
        attacks.attack(student, x3[:2], ["psnr", "bpp"], iterations=[n_p, n_b])
        return time.perf_counter() - t

    def attacks_sequential():
        t = time.perf_counter()
        attacks.attack(student, x3[:1], "psnr", iterations=n_p)
        attacks.attack(student, x3[1:2], "bpp", iterations=n_b)
        return time.perf_counter() - t

    measures.update({"Stage II step (batched attacks)": stage2_step,
                     "Stage II attacks, one batched call": attacks_batched,
                     "Stage II attacks, one after the other": attacks_sequential})
    print(f"bench training: {args.model} q{args.quality}, batch {args.batch}x3x{args.patch}x"
          f"{args.patch} (Stage II: 3 crops, N_p={n_p}, N_b={n_b}), device {device}, "
          f"{torch.get_num_threads()} threads; {W} warmup + {R} interleaved rounds; medians",
          flush=True)
    times, med, best = _interleaved(measures, W, R)
    smooth = [n for n in med if n.startswith("RD + smooth_loss")]
    rows = [_row(name, times, med, best, ref="RD step" if name in smooth else None,
                 target=TARGET_SMOOTH_OVER_RD if "default" in name else None)
            for name in med]
    rows.append(_ratio_row("sequential / batched attacks", "Stage II attacks, one after the other",
                           "Stage II attacks, one batched call", med, best))

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_stage2_peak_memory, args=(args, str(device), queue))
    proc.start()
    peak, how = queue.get(timeout=3600)
    proc.join()
    print(f"peak memory of one Stage II step (3x3x{args.patch}x{args.patch}, N_p={n_p}, "
          f"N_b={n_b}): {peak / 2**20:.0f} MiB ({how})")
    return {"bench": "training", "model": args.model, "quality": args.quality,
            "batch": args.batch, "patch": args.patch, "device": str(device),
            "threads": torch.get_num_threads(), "repeats": R, "warmup": W, "iterations": K,
            "torch": torch.__version__, "rows": rows,
            "stage2_peak_memory_mib": peak / 2**20, "stage2_peak_memory_how": how}


def markdown_table(result: Dict[str, object]) -> str:
    """The rows as a Markdown table (the docs include it: docs/benchmarks.md)."""
    lines = [f"`{result['bench']}`: {result.get('model')} q{result.get('quality')}, "
             f"{result.get('size', '')}, {result['threads']} thread(s), {result['repeats']} "
             "interleaved rounds, medians", "",
             "| measurement | ms / iteration | ratio | target | ok |", "|---|---:|---:|---|---|"]
    for r in result["rows"]:
        ms = "" if r["ms_per_iter"] is None else f"{r['ms_per_iter']:.0f}"
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.2f}"
        tgt = "" if r["target"] is None else f"{r['target_kind']} {r['target']:.2f}"
        ok = "" if r["ok"] is None else ("yes" if r["ok"] else "**no**")
        lines.append(f"| {r['name']} | {ms} | {ratio} | {tgt} | {ok} |")
    return "\n".join(lines)


def format_table(result: Dict[str, object]) -> str:
    """The printed table: medians (and minima) in ms per iteration, ratios against targets."""
    lines = [f"{'measurement':<38s} {'ms/iter':>8s} {'(min)':>8s} {'ratio':>7s} {'(min)':>7s} "
             f"{'target':>7s}  ok", "-" * 86]
    for r in result["rows"]:
        ms = "" if r["ms_per_iter"] is None else f"{r['ms_per_iter']:.0f}"
        mn = "" if r["ms_min"] is None else f"{r['ms_min']:.0f}"
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.3f}"
        rmin = "" if r["ratio_min"] is None else f"{r['ratio_min']:.3f}"
        tgt = "" if r["target"] is None else f"{r['target_kind']}{r['target']:.2f}"
        ok = "" if r["ok"] is None else ("yes" if r["ok"] else "NO")
        lines.append(f"{r['name']:<38s} {ms:>8s} {mn:>8s} {ratio:>7s} {rmin:>7s} {tgt:>7s}  {ok}")
    if result["bench"] == "attacks":
        lines.append("ratio: median / median (ok judged on it); (min): best / best. Attack rows "
                     "against the bare fwd+bwd in channels_last of the same batch size; naive "
                     "rows: naive per-image loop / ours, per image.")
    else:
        lines.append("ms/iter: ms per optimiser step (or per attack pair). ratio: median / median"
                     " against the RD step; (min): best / best.")
        lines.append(f"peak memory of one Stage II step: {result['stage2_peak_memory_mib']:.0f} "
                     f"MiB ({result['stage2_peak_memory_how']})")
    return "\n".join(lines)


BENCHES: Dict[str, Callable] = {"attacks": bench_attacks, "training": bench_training}


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m nic_core.bench", description=__doc__.split("\n")[0])
    p.add_argument("bench", choices=sorted(BENCHES))
    p.add_argument("--size", default="768x512", help="WIDTHxHEIGHT of the input")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--iterations", type=int, default=3,
                   help="iterations per attack call (training: N_b; N_p is twice this)")
    p.add_argument("--batch", type=int, default=4, help="training: crops per RD/smooth step")
    p.add_argument("--patch", type=int, default=256, help="training: crop size")
    p.add_argument("--device", default="cpu", help="training: cpu, cuda or auto")
    p.add_argument("--model", default="hyper")
    p.add_argument("--quality", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    p.add_argument("--json", default=None, help="also save the results to this path (and a "
                   "Markdown table beside it, .md)")
    args = p.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0 or args.iterations < 1 or args.batch < 1:
        p.error("--repeats, --iterations and --batch must be >= 1, --warmup >= 0")
    if args.patch < 64 or args.patch % 64:
        p.error("--patch must be a multiple of 64")
    torch.set_num_threads(args.threads or _cores())
    result = BENCHES[args.bench](args)
    print(format_table(result))
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"saved {path}")
        path.with_suffix(".md").write_text(markdown_table(result) + "\n")  # docs/benchmarks.md
        print(f"saved {path.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
