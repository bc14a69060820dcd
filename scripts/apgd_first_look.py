"""APGD beside the protocol's eq. 6 / eq. 7 attacks on the committed hyper-q4 (issue 32, a first
look): 2 Kodak crops of 256, 100 iterations, real bitstreams, one thread (~4 minutes).

    python scripts/apgd_first_look.py   # -> results/cpu/apgd_first_look.json and .md
"""
import json
import os
import sys

import torch

from nic_core import checkpoints, data
from nic_core.evaluate import evaluate_robustness, save_results

torch.set_num_threads(1)
model = checkpoints.load_model("models/cpu/hyper-q4/model.pt")
paths, desc = data.find_test_set("kodak", os.environ.get("NIC_DATA"))
images = [(n, data.centre_crop(t, 256)) for n, t in data.load_images(paths[:2])]
res = evaluate_robustness(model, images, attacks=("psnr", "psnr/constant", "apgd-psnr", "bpp",
                                                   "apgd-bpp"),
                          iterations=100, progress=False, name="hyper-q4",
                          dataset=desc + ", first 2, centre 256x256 crops")
save_results(res, "results/cpu/apgd_first_look.json")


def table(res) -> str:
    """Per crop and attack: dB and rate change (the README's include block)."""
    keys = list(res["attacks"])
    lines = ["| crop | " + " | ".join(f"`{k}`" for k in keys) + " |", "|---|" + "---|" * len(keys)]
    for row in res["per_image"]:
        lines.append(f"| {row['name']} | " + " | ".join(
            f"{a['delta-psnr']:+.2f} dB, {100 * a['delta-bpp'] / row['bpp']:+.1f} %"
            + ("" if a["held"] else " (not held)")
            for a in (row["attacks"][k] for k in keys)) + " |")
    return "\n".join(lines)


text = table(res)
open("results/cpu/apgd_first_look.md", "w").write(text + "\n")
print(text)
sys.exit(0)
