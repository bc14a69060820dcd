"""Input-transformation defences as codecs: the baseline rows a NIC-RobustBench user expects.

A defence transforms the image before the codec encodes it (Guo et al. 2018, "Countering
adversarial images using input transformations"): JPEG re-encoding (Dziugaite et al. 2016) and
Gaussian blur. :class:`InputTransform` wraps a CompressAI codec and behaves like one
(``forward``, ``compress``, ``decompress``, ``update``, ``g_a``), so ``codec_forward``, the
attacks and :func:`nic_core.evaluate.evaluate_robustness` use it unchanged, and the attack is
*adapted* through the transform (the defence is white-box too): blur is differentiable; JPEG is
not, so its gradient is passed straight through (BPDA, Athalye et al. 2018).
"""
from __future__ import annotations

import numpy as np
import torch
from torchvision.transforms.functional import gaussian_blur

from . import jpeg as _jpeg

__all__ = ["InputTransform", "jpeg", "blur", "DEFENCES", "wrap"]


def jpeg(x: torch.Tensor, quality: int = 75) -> torch.Tensor:
    """JPEG re-encoding (Pillow, 4:2:0) per image; identity gradient (BPDA)."""
    y = torch.stack([_jpeg.encode(t, quality)[0].to(x.device) for t in x])
    return x + (y - x).detach()


def blur(x: torch.Tensor, sigma: float = 0.8) -> torch.Tensor:
    """Gaussian blur (kernel 2*ceil(2 sigma)+1), differentiable."""
    k = 2 * int(np.ceil(2 * sigma)) + 1
    return gaussian_blur(x, [k, k], [sigma, sigma])


DEFENCES = {"jpeg": jpeg, "blur": blur}


class InputTransform(torch.nn.Module):
    """A codec that transforms its input first: ``codec(transform(x))``, for real coding too.

    Args:
        codec: a CompressAI codec.
        name: ``"jpeg"`` or ``"blur"``.
        **params: the transform's parameter (``quality`` for jpeg, ``sigma`` for blur).
    """

    def __init__(self, codec: torch.nn.Module, name: str, **params):
        super().__init__()
        if name not in DEFENCES:
            raise ValueError(f"unknown defence {name!r}; choose one of {sorted(DEFENCES)}")
        self.codec, self.defence, self.params = codec, name, dict(params)

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        return DEFENCES[self.defence](x, **self.params)

    @property
    def g_a(self):  # codec_forward reads the analysis output (the paper's y) here
        return self.codec.g_a

    def forward(self, x):
        return self.codec(self.transform(x))

    def compress(self, x):
        return self.codec.compress(self.transform(x))

    def decompress(self, strings, shape):
        return self.codec.decompress(strings, shape)

    def update(self, scale_table=None, force: bool = False):
        return self.codec.update(scale_table, force=force)

    def aux_loss(self):
        return self.codec.aux_loss()


def wrap(codec: torch.nn.Module, spec: str) -> torch.nn.Module:
    """``"jpeg:90"`` / ``"blur:0.8"`` -> :class:`InputTransform`; ``""`` -> the codec itself."""
    if not spec:
        return codec
    name, _, value = spec.partition(":")
    if name == "jpeg":
        return InputTransform(codec, "jpeg", quality=int(value or 75))
    if name == "blur":
        return InputTransform(codec, "blur", sigma=float(value or 0.8))
    raise ValueError(f"unknown defence {spec!r}: use jpeg[:quality] or blur[:sigma]")
