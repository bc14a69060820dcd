"""Image-quality and rate metrics: PSNR, MS-SSIM, estimated bpp and real bpp from bitstreams.

Real bpp comes from ``model.compress()`` after ``model.update(force=True)``: without ``force``
CompressAI keeps CDF tables from before fine-tuning, which silently mis-codes (a known trap).
"""
from __future__ import annotations

import math
import time
from typing import Dict

import torch
from pytorch_msssim import ms_ssim as _ms_ssim

from .models import codec_forward, crop, pad

MS_SSIM_MIN_SIDE = 161  # 5 scales with an 11x11 window need > 160 px


def mse_per_sample(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean squared error per sample, shape [B]."""
    return (a - b).pow(2).flatten(1).mean(1)


def psnr(x: torch.Tensor, x_hat: torch.Tensor, clamp: bool = True) -> torch.Tensor:
    """PSNR in dB per sample [B] for images in [0, 1]; ``x_hat`` is clamped like a decoder output."""
    if clamp:
        x_hat = x_hat.clamp(0, 1)
    mse = mse_per_sample(x, x_hat).clamp_min(1e-12)
    return -10 * torch.log10(mse)


def psnr_from_mse(mse: float) -> float:
    """PSNR (dB) of a mean squared error on a [0, 1] scale, e.g. of an attack's noise."""
    return float("inf") if mse <= 0 else -10 * math.log10(mse)


def ms_ssim(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """MS-SSIM per sample [B] (pytorch-msssim, data range 1); NaN for images under 161 px."""
    if min(x.shape[-2:]) < MS_SSIM_MIN_SIDE:
        return torch.full((x.shape[0],), float("nan"))
    return _ms_ssim(x, x_hat.clamp(0, 1), data_range=1.0, size_average=False)


def update_entropy_tables(model: torch.nn.Module) -> None:
    """Rebuild the CDF tables from the current weights (always ``force=True``)."""
    model.update(force=True)


@torch.no_grad()
def real_codec(model: torch.nn.Module, x: torch.Tensor, update: bool = True,
               check: bool = False) -> Dict[str, object]:
    """Compress and decompress ``x`` for real; returns bitstream-based bpp per sample.

    Args:
        model: codec in eval mode.
        x: [B,3,H,W] in [0,1]; padded to 64 like ``codec_forward``.
        update: rebuild CDFs first (``update(force=True)``); pass False only when the caller
            just did it for these exact weights.
        check: also run the ``round`` forward and report the largest difference between the
            decoded image and its ``x_hat`` (``max_abs_diff``), the consistency check.

    Returns:
        ``{"x_hat": [B,3,H,W] clamped, "bpp": [B], "bytes": [B], "enc_s", "dec_s"}``.
    """
    if update:
        update_entropy_tables(model)
    h, w = x.shape[-2:]
    xp, unpad = pad(x)
    t0 = time.perf_counter()
    enc = model.compress(xp)
    t1 = time.perf_counter()
    dec = model.decompress(enc["strings"], enc["shape"])
    t2 = time.perf_counter()
    x_hat = crop(dec["x_hat"], unpad).clamp(0, 1)
    nbytes = torch.tensor([sum(len(s[i]) for s in enc["strings"]) for i in range(x.shape[0])],
                          dtype=torch.float64)
    out = {"x_hat": x_hat, "bpp": nbytes * 8.0 / (h * w), "bytes": nbytes,
           "enc_s": t1 - t0, "dec_s": t2 - t1}
    if check:
        ref = codec_forward(model, x, quant="round")["x_hat"].clamp(0, 1)
        out["max_abs_diff"] = float((ref - x_hat).abs().max())
    return out
