#!/usr/bin/env bash
# A few minutes on one GPU: is this machine ready for the paper configuration, and how fast is it?
#   scripts/gpu_check.sh [OUT_DIR]      (default: gpu_check/; results JSON + logs there)
# 1. the environment (torch, CUDA, device name, memory);
# 2. the training benchmark at the paper's sizes (RD step, Stage I, Stage II with N_p = 2 N_b)
#    -> ms per step, from which params/paper/ stage times are estimated (printed at the end);
# 3. a tiny end-to-end pass on the GPU: pretraining, Stage I, Stage II, real-bitstream
#    evaluation under attack (smoke sizes), then the same Stage II under torchrun with every GPU.
# Nothing here changes the accelerator's settings.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-gpu_check}
PY=${PY:-.venv/bin/python}
mkdir -p "$OUT"
export NIC_DATA=${NIC_DATA:-../shared/data}
NGPU=$($PY -c "import torch; print(torch.cuda.device_count())")
$PY - <<'EOF' | tee "$OUT/env.txt"
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"gpu {i}: {p.name}, {p.total_memory / 2**30:.0f} GiB")
EOF
[ "$NGPU" -ge 1 ] || { echo "no GPU visible: nothing to check" >&2; exit 1; }

echo "== training benchmark (paper sizes: 256x256 crops, batch 8, N_b = 10 here)"
$PY -m nic_core.bench training --device cuda --batch 8 --patch 256 --iterations 10 \
  --repeats 3 --json "$OUT/bench_training.json" | tee "$OUT/bench_training.txt"
echo "== attack benchmark (768x512 Kodak size)"
$PY -m nic_core.bench attacks --iterations 20 --json "$OUT/bench_attacks.json" \
  | tee "$OUT/bench_attacks.txt" || echo "attack benchmark failed (see above)"

echo "== tiny end-to-end on the GPU"
S="-p device cuda -p progress false -p budget 20 -p eval_limit 2 -p attack_iterations 10"
$PY -m nic_core.runs pretrain $S -p run_dir "$OUT/e2e/01" 2>&1 | tail -3
$PY -m nic_core.runs teacher $S -p pretrained "$OUT/e2e/01/checkpoint.pt" \
  -p run_dir "$OUT/e2e/02" 2>&1 | tail -3
$PY -m nic_core.runs pkdt $S -p pretrained "$OUT/e2e/01/checkpoint.pt" \
  -p teacher "$OUT/e2e/02/checkpoint.pt" -p run_dir "$OUT/e2e/03" 2>&1 | tail -3
echo "== Stage II under torchrun on $NGPU GPU(s) (batch 6 = 3 roles x 2)"
$PY -m torch.distributed.run --nproc_per_node="$NGPU" -m nic_core.runs pkdt $S -p batch_size 6 \
  -p pretrained "$OUT/e2e/01/checkpoint.pt" -p teacher "$OUT/e2e/02/checkpoint.pt" \
  -p run_dir "$OUT/e2e/03_ddp" --no-eval 2>&1 | tail -3

$PY - "$OUT" <<'EOF'
import json, sys
out = sys.argv[1]
b = json.load(open(f"{out}/bench_training.json"))
rows = {r["name"]: r for r in b.get("rows", [])}
ms = {k: v["ms_per_iter"] for k, v in rows.items()}
print("== per-step times (ms):", {k: round(v, 1) for k, v in ms.items()})
# params/paper: 100 epochs per stage; the training set's steps per epoch at batch 8
for k, v in ms.items():
    print(f"{k}: {v * 100 * 100 / 8 / 3.6e6:.1f} h per 100 epochs of 100 images (scale by the set)")
m = json.load(open(f"{out}/e2e/03/metrics.json"))
print("e2e Stage II:", m["results"]["psnr-rgb"][0], "dB at", m["results"]["bpp"][0], "bpp")
EOF
echo "done: $OUT"
