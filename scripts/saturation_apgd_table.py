"""Table and figure of ``scripts/saturation_apgd.sh``'s sweeps (issue 32, item 2).

    python scripts/saturation_apgd_table.py [results/cpu/saturation_apgd]

Writes ``table.md`` (per model and side: the mean damage of each attack after 50 ... 1000
iterations, and the APGD-at-100 gap to the best any attack reached at 1000) and
``saturation.png`` beside the sweeps. The target: APGD at 100 iterations within 0.1 dB (psnr
side) or 1 % of the clean rate (bpp side) of that best.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from nic_core import viz  # noqa: E402
from nic_core.attacks import parse_spec, side  # noqa: E402


def load(folder: Path):
    """``{(model, side): [sweep, ...]}`` of every finished sweep file in ``folder``."""
    out = {}
    for f in sorted(folder.glob("*.json")):
        for sw in json.loads(f.read_text()).get("sweeps", []):  # (knobs.json: another table)
            out.setdefault((sw["name"], side(parse_spec(sw["attack"])[0])), []).append(sw)
    return out


def table(sweeps) -> str:
    lines = []
    for (model, s), group in sorted(sweeps.items()):
        counts = sorted({r["iterations"] for sw in group for r in sw["rows"]})
        unit = "dB" if s == "psnr" else "% rate"
        lines += [f"**{model}, {s} side** (mean over {group[0]['n_images']} crops, {unit}; "
                  f"clean {group[0]['clean']['psnr-rgb']:.2f} dB, "
                  f"{group[0]['clean']['bpp']:.3f} bpp)", "",
                  "| attack | " + " | ".join(str(c) for c in counts) + " |",
                  "|---|" + "---|" * len(counts)]
        val = {}
        for sw in group:
            bpp0 = sw["clean"]["bpp"]
            row = {r["iterations"]: (r["delta-psnr"] if s == "psnr"
                                     else 100 * r["delta-bpp"] / bpp0) for r in sw["rows"]}
            val[sw["attack"]] = row
            held = {r["iterations"]: r.get("held") for r in sw["rows"]}
            n = sw["n_images"]
            lines.append(f"| {sw['attack']} | " + " | ".join(
                (f"{row[c]:+.2f}" + ("" if held[c] in (None, n) else f" ({held[c]}/{n} held)"))
                if c in row else "" for c in counts) + " |")
        apgd = next((a for a in val if a.startswith("apgd")), None)
        if apgd and 100 in val[apgd] and 1000 in counts:
            at_1000 = [v[1000] for v in val.values() if 1000 in v]
            best = min(at_1000) if s == "psnr" else max(at_1000)
            gap = val[apgd][100] - best
            tol = 0.1 if s == "psnr" else 1.0
            lines += ["", f"{apgd} at 100 iterations: {gap:+.2f} {unit} from the best at 1000 "
                      f"({'within' if abs(gap) <= tol else 'NOT within'} {tol} {unit})"]
        lines.append("")
    return "\n".join(lines).strip()


def main() -> int:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "results/cpu/saturation_apgd")
    sweeps = load(folder)
    if not sweeps:
        print(f"no sweeps in {folder}: run scripts/saturation_apgd.sh first")
        return 1
    text = table(sweeps)
    (folder / "table.md").write_text(text + "\n")
    print(text)
    keys = sorted(sweeps)
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.6), squeeze=False)
    for ax, k in zip(axes[0], keys):
        viz.plot_saturation(sweeps[k], ax=ax)
    fig.tight_layout()
    fig.savefig(folder / "saturation.png", dpi=110)
    print(f"saved {folder / 'table.md'}, {folder / 'saturation.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
