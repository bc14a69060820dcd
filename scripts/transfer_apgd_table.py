"""The transfer matrix of scripts/transfer_apgd.sh as Markdown (issue 32, item 6).

    python scripts/transfer_apgd_table.py   # -> results/cpu/transfer_apgd/table.md
"""
import json
from pathlib import Path

src = Path("results/cpu/transfer_apgd/hyper-q4_apgd-psnr.json")
r = json.loads(src.read_text())
models, m = r["models"], r["delta-psnr"]
lines = [f"APGD (psnr side, {r['quant']}, {r['iterations']} iterations, eps {r['eps']:g}): mean "
         f"PSNR change (dB) of the column model coding images crafted on the row model; the "
         f"diagonal is white-box ({r['dataset']})", "",
         "| crafted on \\ coded by | " + " | ".join(models) + " |", "|---|" + "---|" * len(models)]
for i, s in enumerate(models):
    lines.append(f"| {s} | " + " | ".join(
        (f"**{m[i][j]:+.2f}**" if i == j else f"{m[i][j]:+.2f}") for j in range(len(models)))
        + " |")
flags = r.get("masking") or []
lines += ["", f"Targets hurt more by another model's attack than by their own (paired interval "
          f"excluding 0): {len(flags)}" + ("" if not flags else ": " + "; ".join(
              f"{f['target']} by {f['source']} ({f['transfer']:+.2f} against {f['white-box']:+.2f} dB)"
              for f in flags))]
out = src.parent / "table.md"
out.write_text("\n".join(lines) + "\n")
print("\n".join(lines))
