"""What a stopped evaluation costs: uninterrupted, stopped by SIGTERM at about half, resumed.

    python scripts/bench_resume.py [--model models/cpu/hyper-q4/model.pt] [--out results/bench_resume.json]

Runs the same ``python -m nic_core.runs pretrain --eval-only`` three times in one go (issue 36's
command: protocol 2 on 4 Kodak crops, 20 iterations, one thread): (1) uninterrupted, (2) sent
SIGTERM once its journal holds half the images, (3) the same command again, which resumes.
Prints the wall times, the resume / uninterrupted ratio (target <= 0.6) and whether every
per-image number of (3) equals (1)'s (timings aside); writes them as JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nic_core.results import without_timings

ROOT = Path(__file__).resolve().parents[1]


def _strip(obj):
    return without_timings(obj, also=("description",))


def _records(journal: Path) -> int:
    return max(0, len(journal.read_text().splitlines()) - 1) if journal.is_file() else 0


def table(r) -> str:
    """The README's table of one measurement (``<!-- include: results/bench_resume.md -->``)."""
    return "\n".join([
        f"`python scripts/bench_resume.py` ({r['images']} Kodak crops, protocol 2 at 20 "
        "iterations, one thread):", "",
        "| run | wall time | |", "|---|---|---|",
        f"| uninterrupted | {r['uninterrupted_s']:.1f} s | |",
        f"| stopped by SIGTERM at half | {r['stopped_after_s']:.1f} s | exit {r['stop_status']}: "
        f"`{(r['stop_line'] or '').split(' saved in')[0]} saved ...` |",
        f"| the same command again | {r['resumed_s']:.1f} s | "
        f"**{r['resumed_over_uninterrupted']:.2f}** of uninterrupted (target <= 0.6); "
        f"per-image numbers equal: {'yes' if r['per_image_equal'] else '**no**'} |"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="models/cpu/hyper-q4/model.pt")
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--out", default="results/bench_resume.json")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_resume."))
    cmd = lambda out: [sys.executable, "-m", "nic_core.runs", "pretrain",  # noqa: E731
                       "-f", "params/cpu/eval_protocol2.yaml", "-p", "threads", "1",
                       "-p", "eval_limit", str(args.images), "-p", "eval_batch", "1",
                       "-p", "attack_iterations", str(args.iterations), "-p", "progress", "false",
                       "--eval-only", args.model, "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    t0 = time.perf_counter()
    subprocess.run(cmd(tmp / "full.json"), cwd=ROOT, env=env, check=True, capture_output=True)
    full = time.perf_counter() - t0

    out = tmp / "m.json"
    journal = out.with_name(out.name + ".journal")
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd(out), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    while p.poll() is None and _records(journal) < args.images // 2:
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate()
    stopped = time.perf_counter() - t0
    line = next((s for s in err.splitlines() if s.startswith("stopped:")), None)

    t0 = time.perf_counter()
    res = subprocess.run(cmd(out), cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    resumed = time.perf_counter() - t0
    same = _strip(json.loads(out.read_text())) == _strip(json.loads((tmp / "full.json").read_text()))
    result = {"command": " ".join(cmd("OUT")[1:]), "images": args.images,
              "uninterrupted_s": round(full, 1), "stopped_after_s": round(stopped, 1),
              "stop_status": p.returncode, "stop_line": line, "resumed_s": round(resumed, 1),
              "resumed_over_uninterrupted": round(resumed / full, 3),
              "resume_line": next((s for s in res.stdout.splitlines()
                                   if s.startswith("resuming:")), None),
              "per_image_equal": same, "target": "resumed / uninterrupted <= 0.6"}
    print(json.dumps(result, indent=2))
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    Path(args.out).with_suffix(".md").write_text(table(result) + "\n")
    return 0 if same and resumed / full <= 0.6 else 1


if __name__ == "__main__":
    sys.exit(main())
