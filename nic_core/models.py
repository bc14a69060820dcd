"""Codecs by name and the one function that runs a codec on an image batch.

Every other module (attacks, losses, trainers, evaluation) calls :func:`codec_forward`; nothing
else calls ``model(x)`` directly. It makes the quantisation explicit, because CompressAI picks it
from ``model.training``: in eval mode it rounds with ``torch.round`` whose gradient is zero, so an
attack or a gradient regulariser (``smooth_loss``, arXiv 2403.06700 eq. 1) on an eval-mode model
would silently see no gradient. Here the caller chooses:

* ``"round"``  real rounding (what ``compress()`` does); zero input gradient. Evaluation.
* ``"noise"``  additive uniform noise U(-0.5, 0.5) (Balle et al. 2017), the training proxy.
* ``"ste"``    rounding in the forward pass, identity gradient (straight-through estimator).

Models: ``hyper`` (Balle 2018 scale hyperprior, the paper's "Hyper"), ``mbt2018-mean``,
``cheng2020-anchor`` and ``cheng2020-attn`` (the paper's "Cheng"), built from CompressAI.
"""
from __future__ import annotations

import contextlib
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from compressai.entropy_models import EntropyModel
from compressai.ops import compute_padding
from compressai.zoo import image as zoo_image
from compressai.zoo.image import cfgs as ZOO_CFGS

from .distributed import unwrap

QUANT_MODES = ("round", "noise", "ste")
PRECISIONS = ("fp32", "bf16")  # of the training forward (config "precision")
PAD_MULTIPLE = 64  # six stride-2 stages (g_a + h_a)

# our name -> CompressAI zoo name
ARCHS = {
    "hyper": "bmshj2018-hyperprior",
    "mbt2018-mean": "mbt2018-mean",
    "cheng2020-anchor": "cheng2020-anchor",
    "cheng2020-attn": "cheng2020-attn",
}

# CompressAI's MSE lambdas per quality (compressai docs, "Training" / zoo models)
LMBDA_BY_QUALITY = {1: 0.0018, 2: 0.0035, 3: 0.0067, 4: 0.0130, 5: 0.0250, 6: 0.0483,
                    7: 0.0932, 8: 0.1800}


def build_model(name: str = "hyper", quality: Optional[int] = 3, N: Optional[int] = None,
                M: Optional[int] = None, pretrained: Optional[str] = None) -> torch.nn.Module:
    """Build a CompressAI codec by name.

    Args:
        name: one of :data:`ARCHS` (``hyper`` is CompressAI's ``bmshj2018-hyperprior``).
        quality: CompressAI quality index, selects (N, M) as in the zoo; ignored when N is given.
        N, M: explicit channel counts (``cheng2020-*`` use N only).
        pretrained: ``"compressai"`` loads the official zoo weights for ``quality`` (needs
            internet on first use); ``None`` starts from random weights.
    """
    if name not in ARCHS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(ARCHS)}")
    arch = ARCHS[name]
    cls = zoo_image.model_architectures[arch]
    if pretrained not in (None, "", "none", "compressai"):
        raise ValueError(f"pretrained must be None or 'compressai', got {pretrained!r}")
    if pretrained == "compressai":
        if N is not None:
            raise ValueError("pretrained='compressai' uses the zoo's (N, M); do not pass N/M")
        fn = getattr(zoo_image, arch.replace("-", "_"))
        return fn(quality=quality, metric="mse", pretrained=True)
    if N is None:
        if quality not in ZOO_CFGS[arch]:
            raise ValueError(f"quality for {name} must be one of {sorted(ZOO_CFGS[arch])}, "
                             f"got {quality!r}")
        dims = ZOO_CFGS[arch][quality]
    else:
        dims = (int(N),) if arch.startswith("cheng2020") else (int(N), int(M if M else N))
    return cls(*dims)


def model_from_state_dict(name: str, state_dict: Dict[str, torch.Tensor]) -> torch.nn.Module:
    """Rebuild a codec from its state dict with CompressAI's own ``from_state_dict``."""
    if name not in ARCHS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(ARCHS)}")
    return zoo_image.model_architectures[ARCHS[name]].from_state_dict(state_dict)


def _quantize(self, inputs, mode, means=None, *, qmode="round", generator=None):
    """Replacement for ``EntropyModel.quantize`` that honours our explicit quantisation mode."""
    if mode == "symbols":  # used by compress(); never change it
        return EntropyModel.quantize(self, inputs, mode, means)
    if qmode == "noise":
        noise = torch.rand(inputs.shape, generator=generator, device=inputs.device,
                           dtype=inputs.dtype) - 0.5
        return inputs + noise
    shifted = inputs - means if means is not None else inputs
    rounded = torch.round(shifted)
    if qmode == "ste":
        rounded = shifted + (rounded - shifted).detach()
    return rounded + means if means is not None else rounded


@contextlib.contextmanager
def quantization(model: torch.nn.Module, quant: str, generator: Optional[torch.Generator] = None):
    """Temporarily make every entropy model of ``model`` quantise with ``quant``."""
    if quant not in QUANT_MODES:
        raise ValueError(f"quant must be one of {QUANT_MODES}, got {quant!r}")
    ems = [m for m in model.modules() if isinstance(m, EntropyModel)]
    for em in ems:
        em.quantize = (lambda inputs, mode, means=None, _em=em:
                       _quantize(_em, inputs, mode, means, qmode=quant, generator=generator))
    try:
        yield
    finally:
        for em in ems:
            em.__dict__.pop("quantize", None)


@contextlib.contextmanager
def float32_entropy(model: torch.nn.Module, device_type: str):
    """Inside an autocast region (``precision: bf16`` training), run every entropy model of
    ``model`` in float32 with autocast off: likelihoods, the rate and the quantisation never
    see bfloat16 (a rate from bf16 likelihoods would be off by whole percents). No effect
    outside autocast; real bitstreams (``compress``) never run under autocast at all."""
    if not torch.is_autocast_enabled(device_type):
        yield
        return
    ems = [m for m in model.modules() if isinstance(m, EntropyModel)]

    def fp32(forward):
        def run(*args, **kw):
            cast = [a.float() if torch.is_tensor(a) and a.is_floating_point() else a
                    for a in args]
            with torch.autocast(device_type, enabled=False):
                return forward(*cast, **kw)
        return run

    for em in ems:
        em.forward = fp32(type(em).forward.__get__(em))
    try:
        yield
    finally:
        for em in ems:
            em.__dict__.pop("forward", None)


def autocast(device: torch.device, precision: str):
    """The training forward's precision: ``"fp32"`` (no autocast) or ``"bf16"`` (autocast to
    bfloat16 on the device; the entropy models stay float32, see :func:`float32_entropy`)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


def pad(x: torch.Tensor, multiple: int = PAD_MULTIPLE):
    """Zero-pad (centred, as ``compressai.utils.eval_model``) to a multiple; returns (x, unpad)."""
    h, w = x.shape[-2:]
    padding, unpad = compute_padding(h, w, min_div=multiple)
    if any(padding):
        x = F.pad(x, padding, mode="constant", value=0)
    return x, unpad


def crop(x: torch.Tensor, unpad) -> torch.Tensor:
    """Undo :func:`pad`."""
    return F.pad(x, unpad) if any(unpad) else x


def _bits(likelihoods: torch.Tensor) -> torch.Tensor:
    """Per-sample information content in bits, shape [B]."""
    return (-torch.log2(likelihoods)).flatten(1).sum(1)


def codec_forward(model: torch.nn.Module, x: torch.Tensor, quant: str = "round",
                  generator: Optional[torch.Generator] = None) -> Dict[str, object]:
    """Run ``model`` on ``x`` with an explicit quantisation mode (the one forward).

    Args:
        model: a CompressAI codec with ``g_a`` (analysis transform) and entropy models.
        x: float batch [B, 3, H, W] in [0, 1]; any H, W (padded to 64 and cropped back).
        quant: ``"round"``, ``"noise"`` or ``"ste"`` (see module docstring). Independent of
            ``model.training``.
        generator: optional RNG for ``"noise"``, so that two calls can share one noise sample.

    Returns:
        dict with ``x_hat`` [B,3,H,W] (cropped, not clamped), ``y`` (analysis output of the padded input, the
        paper's y), ``likelihoods`` {``y``, ``z``}, and per-sample [B] tensors ``bpp_main``
        (bits of y, the paper's bpp_main), ``bpp_hyper`` (bits of z) and ``bpp`` = their sum.
        Bits are divided by the original H*W, so padding never lowers the rate.
    """
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"expected a [B,3,H,W] batch, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"expected a float tensor in [0,1], got dtype {x.dtype}")
    h, w = x.shape[-2:]
    xp, unpad = pad(x)
    captured = {}
    net = unwrap(model)  # a DDP wrapper's forward all-reduces the gradients; hooks go inside
    hook = net.g_a.register_forward_hook(lambda mod, inp, out: captured.__setitem__("y", out))
    try:
        with quantization(net, quant, generator), float32_entropy(net, x.device.type):
            out = model(xp)
    finally:
        hook.remove()
    if out["x_hat"].dtype != x.dtype:  # under a bf16 autocast (training precision bf16)
        out["x_hat"], captured["y"] = out["x_hat"].to(x.dtype), captured["y"].to(x.dtype)
    num_pixels = float(h * w)
    lik = out["likelihoods"]
    bpp_main = _bits(lik["y"]) / num_pixels
    bpp_hyper = _bits(lik["z"]) / num_pixels
    return {
        "x_hat": crop(out["x_hat"], unpad),
        "y": captured["y"],
        "likelihoods": lik,
        "bpp_main": bpp_main,
        "bpp_hyper": bpp_hyper,
        "bpp": bpp_main + bpp_hyper,
    }


def aux_parameters(model: torch.nn.Module):
    """Parameters of the entropy bottleneck's quantiles (CompressAI's aux optimiser)."""
    return [p for n, p in model.named_parameters() if n.endswith(".quantiles")]


def net_parameters(model: torch.nn.Module):
    """All other trainable parameters (the net optimiser); frozen ones are left out."""
    return [p for n, p in model.named_parameters()
            if not n.endswith(".quantiles") and p.requires_grad]


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def widen_hyper(narrow: torch.nn.Module, wide: torch.nn.Module, small: float = 0.1,
                scale_bias: float = 0.2) -> torch.nn.Module:
    """Copy a trained Hyper codec into ``wide``, a Hyper with more channels (a larger transform
    width N, more latent channels M, or both), so that the wide codec starts as the narrow one
    (fine-tune it afterwards; Net2Net-style widening, Chen et al. 2016).

    Every old weight keeps its value. A new channel starts unused but live: the weights *from*
    it into the next layer are zero (so every old channel, ``x_hat`` and the scales of the old
    latents are unchanged), the weights *to* it are ``wide``'s random initialisation times
    ``small`` (so it carries a small signal and the zero weights after it receive a gradient,
    as in a LoRA update). GDN's new ``gamma`` entries and the entropy bottleneck's new channels
    keep ``wide``'s initialisation, which for GDN couples no old channel to a new one. The
    scales predicted for new latent channels (M) start at ``scale_bias`` (a small, live ReLU:
    ~0.02 bits per new value); new hyper-latent channels (N) cost the bits of a fresh entropy
    bottleneck until it adapts (~0.01-0.03 bpp). It lets a trained codec grow towards
    CompressAI's widths (N 192, M 320 at lmbda 0.0483 where ours has 64 and 96) without
    training from scratch. Measured (docs/results.md, "The codecs under attack"): hyper-q6-long to M 192,
    +0.11 dB after 8000 steps and a rate that the bpp attack inflates far more (+90 % against
    +21 %); hyper-q6-p256 to N 88 (hyper-q6-n88): the same margin as 5000 steps at N 64,
    its new channels still nearly unused.

    Raises:
        ValueError: when the codecs are not both Hyper, or ``wide`` is not wider (N and M each
            at least the narrow one's, one of them larger).
    """
    kind = zoo_image.model_architectures[ARCHS["hyper"]]
    if not (type(narrow) is kind and type(wide) is kind):  # not a subclass (Cheng is one)
        raise ValueError("widen_hyper needs two 'hyper' codecs "
                         f"(got {type(narrow).__name__}, {type(wide).__name__})")
    (n0, m0), (n1, m1) = ((c.g_a[0].out_channels, c.g_a[6].out_channels) for c in (narrow, wide))
    if n1 < n0 or m1 < m0 or (n1, m1) == (n0, m0):
        raise ValueError(f"widen_hyper: N and M may only grow, one of them must (narrow N={n0}, "
                         f"M={m0}; wide N={n1}, M={m1})")
    old, modules = dict(narrow.named_parameters()), dict(wide.named_modules())
    for name, p in wide.named_parameters():
        owner, _, what = name.rpartition(".")
        mod, fresh = modules[owner], p.clone()  # wide's own initialisation
        if isinstance(mod, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            out_dim = 1 if isinstance(mod, torch.nn.ConvTranspose2d) and what == "weight" else 0
            fresh.movedim(out_dim, 0)[old[name].shape[out_dim]:] *= small  # into new channels
            if what == "weight":
                in_dim = 1 - out_dim
                fresh.movedim(in_dim, 0)[old[name].shape[in_dim]:] = 0.0  # out of new channels
        fresh[tuple(slice(0, s) for s in old[name].shape)] = old[name]
        p.copy_(fresh)
    wide.h_s[4].weight[m0:] = 0.0  # the scales of new latent channels: a live constant
    wide.h_s[4].bias[m0:] = scale_bias
    return wide


# Hyper's layers by the kind of channels they read and write (split_hyper): N = transform width,
# z = hyper-latent (also N wide), M = latent, rgb = image
_HYPER_CONVS = {"g_a.0": ("rgb", "N"), "g_a.2": ("N", "N"), "g_a.4": ("N", "N"), "g_a.6": ("N", "M"),
                "g_s.0": ("M", "N"), "g_s.2": ("N", "N"), "g_s.4": ("N", "N"), "g_s.6": ("N", "rgb"),
                "h_a.0": ("M", "N"), "h_a.2": ("N", "N"), "h_a.4": ("N", "z"),
                "h_s.0": ("z", "N"), "h_s.2": ("N", "N"), "h_s.4": ("N", "M")}


@torch.no_grad()
def split_hyper(narrow: torch.nn.Module, wide: torch.nn.Module, noise: float = 0.2,
                small: float = 0.1, seed: int = 0) -> torch.nn.Module:
    """Copy a trained Hyper into ``wide`` (the same M, up to twice its N) by *splitting* channels,
    Net2WiderNet (Chen et al., ICLR 2016), so that the wide codec computes exactly what the narrow
    one computes and every new channel is in use from the first step.

    Old transform channel j < N_wide - N gets a twin j + N: the weights into the twin are j's;
    j's weights out into the next layer (a convolution, or GDN's gamma, which sees x_j^2) are
    shared between the two as ``(1 - r, r)`` with ``r = 1/2 + U(-noise, noise)`` drawn per
    weight. As the twins carry the same signal, the next layer receives the same sum; as their
    outgoing weights differ, so do their gradients, and the twins drift apart in training (equal
    shares would keep them equal for ever). GDN's rows are copied for the twin. The hyper-latent
    z (N channels as well) is not split: a twin of z would be coded twice; its new channels start
    unused as in :func:`widen_hyper` (weights out of them zero, into them ``small`` times
    ``wide``'s initialisation, the entropy bottleneck's new channels fresh).

    Raises:
        ValueError: not two Hyper codecs, different M, or N_wide not in (N, 2N].
    """
    kind = zoo_image.model_architectures[ARCHS["hyper"]]
    if not (type(narrow) is kind and type(wide) is kind):
        raise ValueError("split_hyper needs two 'hyper' codecs "
                         f"(got {type(narrow).__name__}, {type(wide).__name__})")
    (n0, m0), (n1, m1) = ((c.g_a[0].out_channels, c.g_a[6].out_channels) for c in (narrow, wide))
    if m1 != m0 or not n0 < n1 <= 2 * n0:
        raise ValueError(f"split_hyper: the same M and N < N_wide <= 2N (narrow N={n0}, M={m0}; "
                         f"wide N={n1}, M={m1}); widen_hyper grows M")
    gen = torch.Generator().manual_seed(seed)
    twin = torch.cat([torch.arange(n0), torch.arange(n1 - n0)])  # new channel -> old channel

    def share(t: torch.Tensor, dim: int) -> torch.Tensor:
        """Split the weights out of each twinned channel along ``dim`` (which has n1 entries)."""
        t = t.movedim(dim, 0)
        r = 0.5 + noise * (2 * torch.rand(t[n0:].shape, generator=gen) - 1)
        t[n0:] = t[:n1 - n0] * r
        t[:n1 - n0] = t[:n1 - n0] * (1 - r)
        return t.movedim(0, dim)

    old, new = dict(narrow.named_parameters()), dict(wide.named_parameters())
    for name, (src, dst) in _HYPER_CONVS.items():
        conv = wide.get_submodule(name)
        out_dim = 1 if isinstance(conv, torch.nn.ConvTranspose2d) else 0
        w, b = old[name + ".weight"].clone(), old[name + ".bias"].clone()
        if src == "N":  # the weights out of each twinned channel, shared
            w = share(w.index_select(1 - out_dim, twin), 1 - out_dim)
        elif src == "z":  # out of new hyper-latent channels: zero
            shape = list(w.shape)
            shape[1 - out_dim] = n1 - n0
            w = torch.cat([w, w.new_zeros(shape)], 1 - out_dim)
        if dst == "N":  # twins: the same weights in, the same bias
            w, b = w.index_select(out_dim, twin), b[twin]
        elif dst == "z":  # into new hyper-latent channels: small, fresh
            w = torch.cat([w, small * new[name + ".weight"].narrow(out_dim, n0, n1 - n0)], out_dim)
            b = torch.cat([b, small * new[name + ".bias"][n0:]])
        new[name + ".weight"].copy_(w)
        new[name + ".bias"].copy_(b)
    for name in ("g_a.1", "g_a.3", "g_a.5", "g_s.1", "g_s.3", "g_s.5"):
        a, g = narrow.get_submodule(name), wide.get_submodule(name)
        beta, gamma = a.beta_reparam(a.beta)[twin], a.gamma_reparam(a.gamma)[twin][:, twin]
        g.beta.copy_(g.beta_reparam.init(beta))
        g.gamma.copy_(g.gamma_reparam.init(share(gamma, 1)))
    eb_old, eb_new = narrow.entropy_bottleneck, wide.entropy_bottleneck
    for pname, p in eb_new.named_parameters():  # [C, ...] per channel: old ones kept
        p[:n0] = dict(eb_old.named_parameters())[pname]
    return wide
