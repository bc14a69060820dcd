"""Issue 32, item 5: attack strength on photos the codec never trained on and nobody tuned the
attacks on (the validation split of the training folder, never Kodak): each distortion member of
the `cpu-apgd` ensemble against Gaussian noise of the same MSE, and the worst case at 100
iterations against a plain Adam through the noise proxy at 1000 (constant step), rate held
within 5 % for both. hyper-q4, 4 validation photos, centre crops of 192, real bitstreams, one
thread (~15 minutes).

    python scripts/strength_val.py   # -> results/cpu/strength_val.json and .md
"""
import os
import sys

import torch

from nic_core import checkpoints, config, data
from nic_core.evaluate import evaluate_robustness, save_results

REFERENCE = "psnr@noise:1000/constant"
torch.set_num_threads(1)
model = checkpoints.load_model("models/cpu/hyper-q4/model.pt")
paths, desc = data.find_test_set("val", os.environ.get("NIC_DATA"))
images = [(n, data.centre_crop(t, 192)) for n, t in data.load_images(paths[:4])]
members = config.attack_list("cpu-apgd")
res = evaluate_robustness(model, images, attacks=(REFERENCE,), worst_case=members,
                          iterations=100, progress=False, name="hyper-q4",
                          dataset=desc + ", first 4, centre 192x192 crops")
save_results(res, "results/cpu/strength_val.json")

att = res["attacks"]
mean = {k: att[k]["results"]["delta-psnr"][0] for k in att}
noise = mean["noise"]
lines = [f"hyper-q4 on {len(images)} validation photos (192x192, never Kodak), eps 5e-4, "
         "PSNR change (dB), mean over the photos; held = rate within 5 % (psnr side)", "",
         "| attack | dB | held | beats noise |", "|---|---|---|---|"]
for k in [m for m in members if config.attack_list(m) and m != "noise"
          and not m.startswith(("bpp", "apgd-bpp"))] + ["noise", "worst-psnr", REFERENCE]:
    lines.append(f"| `{k}` | {mean[k]:+.2f} | {att[k]['held']}/{len(images)} | "
                 + ("" if k in ("noise", REFERENCE) else ("yes" if mean[k] < noise else "**no**"))
                 + " |")
ratio = mean["worst-psnr"] / mean[REFERENCE]
lines += ["", f"worst case at 100 iterations / Adam through the noise proxy at 1000: "
          f"**{ratio:.2f}** (target >= 0.95)"]
open("results/cpu/strength_val.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
sys.exit(0)
