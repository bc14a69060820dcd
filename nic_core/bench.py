"""Benchmarks measured in one run: ``python -m nic_core.bench attacks [options]``.

``attacks`` times, on one input of ``--size`` (default 768x512, a Kodak image) and the default
codec (``hyper`` quality 3; random weights, timing does not depend on them):

* ``bare``: one forward+backward of the codec, ``codec_forward(..., "ste")``, loss on
  ``x_hat`` and ``bpp``, gradient to the input only (parameters frozen), in both memory formats;
* one iteration of each attack (``psnr``, ``bpp``, ``ma2023``, ``pgd-psnr``) on one image and of
  a mixed batch of two (psnr + bpp, as Stage II of the paper), from the attack's own
  ``loop_seconds``;
* ``naive``: the per-image attack loop a user would write: contiguous memory format, parameter
  gradients left on (``loss.backward()``), the clean reconstruction recomputed every iteration,
  ``model(x)`` called directly, ``torch.optim.Adam`` on the noise.

It prints ms per iteration and the ratios against the targets: attack / bare <= 1.10 (bare in
the attack's own memory format, channels_last) and naive / ours >= 1.5. The measurements are
interleaved: each round runs every one of them once, so a change of machine load (shared CPUs)
hits all of them alike; medians over ``--repeats`` rounds after ``--warmup`` rounds. Add a
benchmark by adding a function to :data:`BENCHES`.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

from . import attacks
from .models import build_model, codec_forward, quantization

TARGET_ATTACK_OVER_BARE = 1.10
TARGET_NAIVE_OVER_OURS = 1.5


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


def _attack_iter(model, x, kind, iters: int) -> Callable[[], float]:
    """Seconds per iteration of :func:`nic_core.attacks.attack` (its loop time only)."""
    def run():
        out = attacks.attack(model, x, kind, eps=5e-4, iterations=iters)
        return out["loop_seconds"] / iters
    return run


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
        "attack bpp B=1": _attack_iter(model, x1, "bpp", K),
        "attack ma2023 B=1": _attack_iter(model, x1, "ma2023", K),
        "attack pgd-psnr B=1": _attack_iter(model, x1, "pgd-psnr", K),
        "attack mixed [psnr, bpp] B=2": _attack_iter(model, x2, ["psnr", "bpp"], K),
        "naive per-image loop (per image)": naive,
    }
    print(f"bench attacks: {args.model} q{args.quality}, {w}x{h}, {torch.get_num_threads()} "
          f"threads, {K} iterations per attack call; {W} warmup + {R} interleaved rounds "
          "(every measurement once per round, so load changes hit all alike); medians",
          flush=True)
    times: Dict[str, List[float]] = {k: [] for k in measures}
    for r in range(W + R):
        for name, fn in measures.items():
            t = fn()
            if r >= W:
                times[name].append(t)
        print(f"  round {r + 1}/{W + R}" + (" (warmup)" if r < W else "") + ": " + ", ".join(
            f"{k} {times[k][-1] * 1e3:.0f}" for k in measures if r >= W),
            flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    best = {k: min(v) for k, v in times.items()}
    bare_name = {1: "bare fwd+bwd B=1 (channels_last)", 2: "bare fwd+bwd B=2 (channels_last)"}
    rows = []
    for name, sec in med.items():
        row = {"name": name, "ms_per_iter": sec * 1e3, "ms_min": best[name] * 1e3,
               "ms_all": [t * 1e3 for t in times[name]], "ratio": None, "ratio_min": None,
               "target": None, "target_kind": None, "ok": None}
        if name.startswith("attack"):
            ref = bare_name[2 if "B=2" in name else 1]
            row["ratio"] = sec / med[ref]
            row["ratio_min"] = best[name] / best[ref]
            row.update(target=TARGET_ATTACK_OVER_BARE, target_kind="<=",
                       ok=row["ratio"] <= TARGET_ATTACK_OVER_BARE)
        rows.append(row)
    naive = "naive per-image loop (per image)"
    for name, ours, per in (("naive / ours psnr B=1", "attack psnr B=1", 1),
                            ("naive / ours mixed B=2 (per image)", "attack mixed [psnr, bpp] B=2",
                             2)):
        ratio = med[naive] / (med[ours] / per)
        rows.append({"name": name, "ms_per_iter": None, "ms_min": None, "ratio": ratio,
                     "ratio_min": best[naive] / (best[ours] / per),
                     "target": TARGET_NAIVE_OVER_OURS, "target_kind": ">=",
                     "ok": ratio >= TARGET_NAIVE_OVER_OURS})
    return {"bench": "attacks", "model": args.model, "quality": args.quality,
            "size": f"{w}x{h}", "threads": torch.get_num_threads(), "repeats": R,
            "warmup": W, "iterations": K, "torch": torch.__version__, "rows": rows}


def format_table(result: Dict[str, object]) -> str:
    """The printed table: medians (and minima) in ms per iteration, ratios against targets."""
    lines = [f"{'measurement':<36s} {'ms/iter':>8s} {'(min)':>8s} {'ratio':>7s} {'(min)':>7s} "
             f"{'target':>7s}  ok", "-" * 84]
    for r in result["rows"]:
        ms = "" if r["ms_per_iter"] is None else f"{r['ms_per_iter']:.0f}"
        mn = "" if r["ms_min"] is None else f"{r['ms_min']:.0f}"
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.3f}"
        rmin = "" if r["ratio_min"] is None else f"{r['ratio_min']:.3f}"
        tgt = "" if r["target"] is None else f"{r['target_kind']}{r['target']:.2f}"
        ok = "" if r["ok"] is None else ("yes" if r["ok"] else "NO")
        lines.append(f"{r['name']:<36s} {ms:>8s} {mn:>8s} {ratio:>7s} {rmin:>7s} {tgt:>7s}  {ok}")
    lines.append("ratio: median / median (ok judged on it); (min): best / best. Attack rows "
                 "against the bare fwd+bwd in channels_last of the same batch size; naive "
                 "rows: naive per-image loop / ours, per image.")
    return "\n".join(lines)


BENCHES: Dict[str, Callable] = {"attacks": bench_attacks}


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m nic_core.bench", description=__doc__.split("\n")[0])
    p.add_argument("bench", choices=sorted(BENCHES))
    p.add_argument("--size", default="768x512", help="WIDTHxHEIGHT of the input")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--iterations", type=int, default=3, help="iterations per attack call")
    p.add_argument("--model", default="hyper")
    p.add_argument("--quality", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    p.add_argument("--json", default=None, help="also save the results to this path")
    args = p.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0 or args.iterations < 1:
        p.error("--repeats and --iterations must be >= 1, --warmup >= 0")
    torch.set_num_threads(args.threads or _cores())
    result = BENCHES[args.bench](args)
    print(format_table(result))
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
