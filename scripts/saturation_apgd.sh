#!/usr/bin/env bash
# Issue 32, item 2 (first part): attack strength against iterations on the strong codecs, the
# APGD attack beside the protocol's psnr / bpp attacks (constant step: the committed 1000-
# iteration reference), 4 Kodak crops of 256, one thread. Resumable: each command journals its
# finished images (rerun this script after a stop; finished files are skipped). A sweep stopped
# mid-way leaves OUT.NAME.journal: commit it to go on from there on another machine.
#   scripts/saturation_apgd.sh [MODEL ...]    (default: hyper-q4; ATTACKS="apgd-psnr ..." a subset)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=results/cpu/saturation_apgd
mkdir -p "$OUT"
for name in "${@:-hyper-q4}"; do
  for attack in ${ATTACKS:-apgd-psnr psnr/constant apgd-bpp bpp/constant}; do
    out="$OUT/${name}_${attack//\//-}.json"
    if [ -f "$out" ]; then echo "== $out: exists"; continue; fi
    echo "== $name $attack"
    $PY -m nic_core.evaluate saturation --model "$name=models/cpu/$name/model.pt" \
      --attack "$attack" --iterations 50,100,200,500,1000 -f params/cpu/eval_protocol2.yaml \
      -p threads 1 -p eval_limit 4 -p eval_batch 1 -p progress false --out "$out"
  done
done
