#!/usr/bin/env bash
# Issue 32, item 6 (a first check): do the hyper-q4 defences mask gradients? APGD (psnr side,
# ste path, 100 iterations) crafted on each of the five hyper-q4 models and coded by every other
# one (forward passes only), 4 Kodak crops of 256, real bitstreams, one thread, resumable. A
# target hurt more by another model's attack than by its own white-box one is flagged.
#   scripts/transfer_apgd.sh   # -> results/cpu/transfer_apgd/hyper-q4_apgd-psnr.{json,png}
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
m=models/cpu
$PY -m nic_core.evaluate transfer --model hyper-q4=$m/hyper-q4/model.pt \
  --model teacher=$m/hyper-q4-teacher/model.pt --model pkdt=$m/hyper-q4-pkdt/model.pt \
  --model adv=$m/hyper-q4-adv/model.pt --model ma2023=$m/hyper-q4-ma2023/model.pt \
  --attack apgd-psnr -f params/cpu/eval_protocol2.yaml -p threads 1 -p eval_limit 4 \
  -p eval_batch 1 -p progress false --out results/cpu/transfer_apgd/hyper-q4_apgd-psnr.json \
  --plot results/cpu/transfer_apgd/hyper-q4_apgd-psnr.png
