"""JPEG as the reference codec: its R-D curve on the evaluation images, and a learned codec's
margin over it at the codec's own rate.

Pillow's baseline JPEG (4:2:0 chroma subsampling, optimised Huffman tables), the whole file
counted (headers included), PSNR on RGB in [0, 1] like every other number here. A learned codec
worth attacking should beat it clearly (Balle et al. 2018's hyperprior is several dB above it).
"""
from __future__ import annotations

import argparse
import io
import sys
from typing import Any, Dict, Sequence

import numpy as np
import torch
from PIL import Image

from . import cli, config, evaluate
from .metrics import psnr
from .stats import interpolate_rd

__all__ = ["encode", "jpeg_curve", "margin_over_jpeg", "margin_per_image", "QUALITIES"]

QUALITIES = (3, 5, 8, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95)  # 3-8: down to ~0.2 bpp


def encode(img: torch.Tensor, quality: int):
    """``(decoded [3,H,W] float in [0, 1], number of bytes)`` of one image through JPEG."""
    arr = (img.detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=int(quality), optimize=True,
                              subsampling="4:2:0")
    data = buf.getvalue()
    out = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(out).permute(2, 0, 1).to(img.dtype), len(data)


def jpeg_curve(images, qualities: Sequence[int] = QUALITIES, dataset: str = "") -> Dict[str, Any]:
    """JPEG's R-D points on ``images`` (list of ``(name, [3,H,W])``), CompressAI's eval JSON with
    one list entry per quality (means over images of real bpp and PSNR); ``per_image`` holds each
    image's own curve (``{"name", "bpp": [...], "psnr-rgb": [...]}``, one entry per quality)."""
    qualities = sorted(int(q) for q in qualities)
    if not qualities or not all(1 <= q <= 95 for q in qualities):
        raise ValueError(f"JPEG qualities must lie in 1..95, got {qualities}")
    per = [{"name": n, "bpp": [], "psnr-rgb": []} for n, _ in images]
    for q in qualities:
        for row, (_, t) in zip(per, images):
            dec, nbytes = encode(t, q)
            row["bpp"].append(nbytes * 8.0 / (t.shape[-1] * t.shape[-2]))
            row["psnr-rgb"].append(float(psnr(t[None], dec[None])[0]))
    mean = [[sum(r[k][i] for r in per) / len(per) for i in range(len(qualities))]
            for k in ("bpp", "psnr-rgb")]
    return {"name": "JPEG", "description": "Pillow JPEG, 4:2:0, optimised Huffman, whole file",
            "dataset": dataset, "config": {"qualities": qualities},
            "results": {"bpp": mean[0], "psnr-rgb": mean[1], "quality": qualities},
            "per_image": per}


def margin_over_jpeg(results: Dict[str, Any], curve: Dict[str, Any]):
    """PSNR of ``results`` (clean) minus JPEG's at the same bpp (log-rate interpolation), or
    ``None`` when the codec's rate lies outside JPEG's measured range."""
    pts = list(zip(curve["results"]["bpp"], curve["results"]["psnr-rgb"]))
    bpp, p = results["results"]["bpp"][-1], results["results"]["psnr-rgb"][-1]
    ref = interpolate_rd(pts, bpp)
    return None if ref is None else p - ref


def margin_per_image(results: Dict[str, Any], curve: Dict[str, Any]) -> Dict[str, float]:
    """Each image's clean PSNR minus JPEG's on that image at the codec's rate for it (log-rate
    interpolation on the image's own JPEG curve): the margin over JPEG as paired per-image
    values, so two codecs' margins can be compared with a paired interval. Images outside
    their JPEG curve's rate range are left out.

    Raises:
        ValueError: the curve has no per-image points (made before they were saved: run
            ``python -m nic_core.jpeg`` again).
    """
    if "per_image" not in curve:
        raise ValueError(f"the JPEG curve {curve.get('dataset', '')!r} has no per-image points; "
                         "make it again with `python -m nic_core.jpeg`")
    jpeg = {r["name"]: list(zip(r["bpp"], r["psnr-rgb"])) for r in curve["per_image"]}
    out = {}
    for r in results["per_image"]:
        ref = interpolate_rd(jpeg[r["name"]], r["bpp"]) if r["name"] in jpeg else None
        if ref is not None:
            out[r["name"]] = r["psnr-rgb"] - ref
    return out


def main(argv=None) -> int:
    """``python -m nic_core.jpeg -f PARAMS [-p NAME VALUE] --out JPEG.json [--vs METRICS.json]``:
    JPEG's curve on the evaluation images of the parameters (eval_set, eval_limit, eval_crop);
    ``--vs`` prints each codec's margin over JPEG at its own clean rate."""
    ap = argparse.ArgumentParser(prog="python -m nic_core.jpeg", description=main.__doc__)
    ap.add_argument("-f", "--params")
    ap.add_argument("-p", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    ap.add_argument("--qualities", default=",".join(map(str, QUALITIES)))
    ap.add_argument("--out", required=True)
    ap.add_argument("--vs", nargs="*", default=[], help="metrics.json files to compare")
    args = ap.parse_args(argv)
    from . import runs  # the CLI only: runs imports defenses, which imports this module
    cfg = config.validate("pretrain", config.cli_params(args.params, args.p))
    images, desc = runs.test_images(cfg)
    curve = jpeg_curve(images, [int(q) for q in args.qualities.split(",")], desc)
    evaluate.save_results(curve, args.out)
    print(f"saved {args.out}")
    for path in args.vs:
        r = evaluate.load_results(path)
        m = margin_over_jpeg(r, curve)
        print(f"{r['name']}: {r['results']['bpp'][-1]:.3f} bpp, {r['results']['psnr-rgb'][-1]:.2f}"
              f" dB; over JPEG at this rate: " + ("n/a" if m is None else f"{m:+.2f} dB"))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
