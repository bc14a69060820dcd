#!/usr/bin/env bash
# Issue 32, item 3: the gap between our attack's damage and the paper's 10.65 dB, one factor at
# a time, measured with APGD (apgd-psnr, rate held within 5 %) at 100 and 1000 iterations on
# real bitstreams, one thread, resumable (rerun after a stop; finished files are skipped):
#   full-resolution Kodak (768x512, the paper's images) instead of 256x256 crops: 2 images
#   (and the crops of the same 2 images, the pair to compare with)
#   hyper-q2 (lmbda 0.0035, the rate of the paper's Table 1) instead of hyper-q4: 4 crops
# The rows for 100 vs 1000 iterations on 4 crops of hyper-q4 are scripts/saturation_apgd.sh's.
# Then: python scripts/attack_gap_table.py
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=results/cpu/attack_gap
mkdir -p "$OUT"
run() {  # NAME MODEL OUTFILE extra -p pairs...
  local name=$1 model=$2 out=$3; shift 3
  if [ -f "$out" ]; then echo "== $out: exists"; return; fi
  echo "== $out"
  $PY -m nic_core.evaluate saturation --model "$name=models/cpu/$model/model.pt" \
    --attack apgd-psnr --iterations 100,1000 -f params/cpu/eval_protocol2.yaml \
    -p threads 1 -p eval_batch 1 -p progress false "$@" --out "$out"
}
run hyper-q4 hyper-q4 "$OUT/hyper-q4_full-resolution.json" -p eval_limit 2 -p eval_crop 0
run hyper-q4 hyper-q4 "$OUT/hyper-q4_crops2.json" -p eval_limit 2
run hyper-q2 hyper-q2 "$OUT/hyper-q2_crops.json" -p eval_limit 4
