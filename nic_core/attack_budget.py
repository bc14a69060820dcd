"""Input checks and budget geometry of the attacks: projections, 8-bit rounding, start noise.

The threat model of Cao et al., "Enhancing Adversarial Training with Prior Knowledge
Distillation for Robust Image Compression" (arXiv 2403.06700, sec. 2.3) bounds the per-pixel
mean squared noise of each sample, ``mean((x* - x)**2) <= eps``, with ``x* = clamp(x + n, 0, 1)``;
an optional ``linf`` also caps ``|x* - x|`` per pixel. The helpers here keep every returned
input feasible: they scale noise towards ``x`` (which keeps it in [0, 1]) and re-check the
budget in float64 with the margin :data:`_SAFETY`. :func:`nic_core.attacks.attack` is the entry
point; :mod:`nic_core.attack_loop` runs the iterations.
"""
from __future__ import annotations

import math
from typing import List, Optional

import torch

from .metrics import mse_per_sample

_SAFETY = 1.0 - 1e-5  # project to eps * _SAFETY so a float32 recomputation stays <= eps
_INIT_SCALE = 1e-5  # Chen & Ma start from uniform(-1e-5, 1e-5) noise


# ---------------------------------------------------------------- input checks


def as_list(value, n: int, what: str) -> list:
    """One value per sample.

    Args:
        value: a single value (repeated) or a list / tuple with one entry per sample.
        n: batch size.
        what: argument name for error messages.

    Returns:
        A list of ``n`` values.

    Raises:
        ValueError: a list of the wrong length, or a tensor.
    """
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(f"{what} has {len(value)} entries but the batch has {n} samples")
        return list(value)
    if isinstance(value, torch.Tensor):
        raise ValueError(f"{what} must be a value or a list, not a tensor")
    return [value] * n


def check_input(x: torch.Tensor) -> None:
    """Check that ``x`` is a finite float [B,3,H,W] batch in [0, 1].

    Raises:
        ValueError: otherwise, saying what is wrong.
    """
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4 or x.shape[1] != 3 or x.shape[0] < 1 or min(x.shape[-2:]) < 1:
        raise ValueError(f"x must be a [B,3,H,W] batch, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"x must be a float tensor in [0, 1], got dtype {x.dtype} "
                         "(for 8-bit images divide by 255 first)")
    if not torch.isfinite(x).all():
        raise ValueError("x contains NaN or inf")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(f"x must lie in [0, 1], got values in [{lo:.4g}, {hi:.4g}]")


def check_positive(value, what: str) -> float:
    """``value`` as a finite positive float.

    Raises:
        ValueError: not a number, not finite, or ``<= 0``.
    """
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a positive number, got {value!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{what} must be a positive number, got {value!r}")
    return v


def check_iterations(values: list) -> List[int]:
    """Iteration counts as ints (integral floats accepted, bools not).

    Raises:
        ValueError: a non-integer or a count below 1.
    """
    out = []
    for it in values:
        if isinstance(it, bool) or not isinstance(it, (int,)) and not (
                isinstance(it, float) and it.is_integer()):
            raise ValueError(f"iterations must be integers >= 1, got {it!r}")
        if int(it) < 1:
            raise ValueError(f"iterations must be >= 1, got {it!r}")
        out.append(int(it))
    return out


def check_uint8_budget(x: torch.Tensor, eps: float) -> None:
    """Check that rounding ``x`` itself to 8 bits stays within ``eps`` (needed by ``to_uint8``).

    Raises:
        ValueError: eps is below the 8-bit rounding error of some sample.
    """
    r8 = mse_per_sample(torch.round(x * 255) / 255, x).double()
    if bool((r8 > eps * _SAFETY).any()):
        raise ValueError(f"eps={eps:g} is below the 8-bit rounding error of x "
                         f"({float(r8.max()):.3g}); use to_uint8=False or 8-bit images")


# ---------------------------------------------------------------- budget geometry


def bview(t: torch.Tensor) -> torch.Tensor:
    """[B] -> [B,1,1,1] for broadcasting over images."""
    return t.view(-1, 1, 1, 1)


def project_budget(x, n, eps, linf=None):
    """Largest feasible scaling of each sample's noise: mean(n^2) <= eps * _SAFETY, |n| <= linf.

    ``x + s * n`` with ``0 <= s <= 1`` stays in [0, 1] when ``x`` and ``x + n`` do.

    Args:
        x: clean batch [B,3,H,W] in [0, 1].
        n: noise [B,3,H,W].
        eps: MSE budget per sample.
        linf: optional per-pixel cap on ``|n|``.

    Returns:
        The feasible adversarial batch ``x + n'`` (float64-checked against ``eps``).
    """
    if linf is not None:
        n = n.clamp(-linf, linf)
    n = (x + n).clamp(0.0, 1.0) - x
    target = eps * _SAFETY
    for _ in range(50):
        mse = n.double().pow(2).flatten(1).mean(1)
        over = mse > target
        if not bool(over.any()):
            break
        scale = torch.where(over, (target / mse.clamp_min(1e-30)).sqrt() * (1 - 1e-6),
                            torch.ones_like(mse)).to(n.dtype)
        n = (x + n * bview(scale)).clamp(0.0, 1.0) - x
    else:  # pragma: no cover - cannot happen, but never return an infeasible input
        n = torch.where(bview(over), torch.zeros_like(n), n)
    return x + n


def round_to_uint8(x, x_adv, eps):
    """Round ``x_adv`` to the 8-bit grid, shrinking a sample's noise until it is within eps.

    Args:
        x: clean batch [B,3,H,W].
        x_adv: feasible adversarial batch (see :func:`project_budget`).
        eps: MSE budget per sample.

    Returns:
        ``x_adv`` on the 8-bit grid, still within ``eps``.

    Raises:
        ValueError: eps is below the 8-bit rounding error of ``x`` (checked up front by
            :func:`check_uint8_budget`, so this does not happen through ``attack``).
    """
    target = eps * _SAFETY
    n = x_adv - x
    scale = torch.ones(x.shape[0], dtype=x.dtype, device=x.device)
    out = torch.round(x_adv * 255) / 255
    for k in range(200):
        mse = (out.double() - x.double()).pow(2).flatten(1).mean(1)
        over = mse > target
        if not bool(over.any()):
            return out
        scale = torch.where(over, scale * 0.9 if k < 199 else torch.zeros_like(scale), scale)
        cand = torch.round((x + n * bview(scale)).clamp(0, 1) * 255) / 255
        out = torch.where(bview(over), cand, out)
    mse = (out.double() - x.double()).pow(2).flatten(1).mean(1)
    if bool((mse > target).any()):  # pragma: no cover - guarded by the check in attack()
        raise ValueError("eps is below the 8-bit rounding error of x")
    return out


def random_noise(x, eps, seed, linf=None):
    """Gaussian noise whose clamped MSE is eps (bisection on its scale), per sample.

    Args:
        x: clean batch [B,3,H,W].
        eps: target MSE (times :data:`_SAFETY`).
        seed: seed of every sample's CPU generator.
        linf: optional per-pixel cap on the noise.

    Returns:
        The clamped noise [B,3,H,W] (``x + noise`` lies in [0, 1]).
    """
    out = []
    target = eps * _SAFETY
    for b in range(x.shape[0]):
        g = torch.Generator(device="cpu").manual_seed(int(seed))
        z = torch.randn(x[b].shape, generator=g).to(x.device, x.dtype)
        xb = x[b]

        def mse_at(s):
            n = s * z
            if linf is not None:
                n = n.clamp(-linf, linf)
            return float(((xb + n).clamp(0, 1) - xb).double().pow(2).mean())

        lo, hi = 0.0, math.sqrt(eps)
        while mse_at(hi) < target and hi < 1e3:
            lo, hi = hi, hi * 2
        for _ in range(40):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if mse_at(mid) <= target else (lo, mid)
        n = lo * z
        if linf is not None:
            n = n.clamp(-linf, linf)
        out.append((xb + n).clamp(0, 1) - xb)
    return torch.stack(out)


def init_noise(x, families, objectives, seeds, starts, radius, linf: Optional[float], eps):
    """Per-sample start noise.

    Restart 0 (``starts[b] == 0``) is the kind's own start: tiny uniform noise (psnr, bpp,
    pgd-l2; Chen & Ma's start), uniform in the L-inf ball (pgd-linf, Madry's random start; also
    ma2023), zero (fgsm, noise). ma2023 needs a real start: its loss ``||x_hat - x_hat*||^2``
    is at its stationary point (zero gradient) for ``x* = x``, and tiny noise changes no
    rounding. Later restarts start from uniform noise of half the budget's MSE. Each sample
    draws from its own generator seeded with ``seeds[b]``, so a sample gets the same start in a
    mixed batch as alone.

    Args:
        x: clean batch [B,3,H,W].
        families, objectives, seeds, starts, radius: per-sample lists (see
            :class:`nic_core.attack_loop.AttackLoop`).
        linf: optional per-pixel cap on the noise.
        eps: MSE budget per sample.

    Returns:
        The start noise [B,3,H,W], clamped so that ``x + noise`` lies in [0, 1].
    """
    n = torch.zeros_like(x)
    for b, (fam, obj) in enumerate(zip(families, objectives)):
        if fam == "noise" or (fam == "fgsm" and starts[b] == 0):
            continue
        g = torch.Generator(device="cpu").manual_seed(int(seeds[b]))
        u = torch.rand(x[b].shape, generator=g).to(x.device, x.dtype) * 2 - 1
        if starts[b] > 0:
            scale = math.sqrt(1.5 * eps)  # var of U(-a, a) is a^2 / 3: MSE eps / 2
        elif fam == "pgd-linf" or obj == "ma2023":
            scale = radius[b]
        else:
            scale = _INIT_SCALE
        n[b] = u * scale
    if linf is not None:
        n = n.clamp(-linf, linf)
    return (x + n).clamp(0, 1) - x
