"""Does APGD at the protocol's 100 iterations get closer to its 1000-iteration damage with other
settings? (issue 32, item 2's target). On the committed hyper-q4, Kodak crops 1-2 of 256, one
thread, psnr side, judged on real bitstreams with the rate held within 5 %: APGD's default
(first step 2 R, momentum 0.75, hold weight 10) against one change at a time, and 2 restarts of
50 iterations (the same cost). About 20 minutes.

    python scripts/apgd_knobs.py   # -> results/cpu/saturation_apgd/knobs.json and knobs.md
"""
import json
import os

import torch

from nic_core import attack_apgd, checkpoints, data
from nic_core.evaluate import evaluate_robustness

OUT = "results/cpu/saturation_apgd/knobs"
VARIANTS = {  # name: (module constants changed, evaluate_robustness arguments)
    "default (first step 2 R, momentum 0.75, hold weight 10)": ({}, {}),
    "first step 1 R": ({"FIRST_STEP": 1.0}, {}),
    "first step 4 R": ({"FIRST_STEP": 4.0}, {}),
    "momentum 0.9": ({"ALPHA": 0.9}, {}),
    "hold weight 3": ({"HOLD_WEIGHT": 3.0}, {}),
    "2 restarts x 50 iterations": ({}, {"iterations": 50, "restarts": 2}),
}

torch.set_num_threads(1)
model = checkpoints.load_model("models/cpu/hyper-q4/model.pt")
paths, desc = data.find_test_set("kodak", os.environ.get("NIC_DATA"))
images = [(n, data.centre_crop(t, 256)) for n, t in data.load_images(paths[:2])]
defaults = {k: getattr(attack_apgd, k) for k in ("FIRST_STEP", "ALPHA", "HOLD_WEIGHT")}
rows = {}
for name, (consts, kw) in VARIANTS.items():
    for k, v in {**defaults, **consts}.items():
        setattr(attack_apgd, k, v)
    res = evaluate_robustness(model, images, attacks=("apgd-psnr",), progress=False,
                              **{"iterations": 100, **kw})
    per = [r["attacks"]["apgd-psnr"] for r in res["per_image"]]
    rows[name] = {"delta-psnr": [a["delta-psnr"] for a in per], "held": [a["held"] for a in per],
                  "delta-bpp %": [100 * a["delta-bpp"] / r["bpp"]
                                  for a, r in zip(per, res["per_image"])]}
    print(name, rows[name], flush=True)
for k, v in defaults.items():
    setattr(attack_apgd, k, v)
json.dump({"images": [n for n, _ in images], "dataset": desc, "rows": rows},
          open(OUT + ".json", "w"), indent=2)
lines = ["| APGD at 100 iterations (psnr side) | " + " | ".join(n for n, _ in images)
         + " | mean |", "|---|" + "---|" * (len(images) + 1)]
for name, r in rows.items():
    cells = [f"{d:+.2f} dB" + ("" if h else " (not held)")
             for d, h in zip(r["delta-psnr"], r["held"])]
    lines.append(f"| {name} | " + " | ".join(cells)
                 + f" | {sum(r['delta-psnr']) / len(images):+.2f} dB |")
open(OUT + ".md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
