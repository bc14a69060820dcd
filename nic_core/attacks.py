"""White-box attacks on learned image codecs: the paper's psnr / bpp attacks and baselines.

Threat model (arXiv 2403.06700, sec. 2.3): the attacker knows every weight and adds noise ``n``
to the image, ``x* = clamp(x + n, 0, 1)``. The budget ``eps`` bounds the per-pixel mean squared
noise of each sample, ``mean((x* - x)**2) <= eps`` (the paper's eps = 0.0005 / 0.001, i.e. a
noise PSNR of 33 / 30 dB); ``linf`` optionally also caps ``|x* - x|`` per pixel.

The paper's equations only *penalise* the budget (the loss switches branch when the noise is
over it). Here the budget is *guaranteed*: the returned ``x_adv`` is projected at the end (the
noise is scaled down where needed; scaling towards ``x`` keeps it in [0, 1]) and re-checked in
float64 with a small safety margin, also after the optional rounding to 8 bits.

Attack kinds (:data:`ATTACKS`):

* ``"psnr"``  eq. 6. Per sample, while ``mean(n^2) >= eps`` minimise
  ``||n|| + bpp_error``, else minimise ``1 - ||x - x_hat*||^2`` (quality collapses while the
  rate is held where it was).
* ``"bpp"``  eq. 7. While over budget minimise ``||n|| + psnr_error`` with
  ``psnr_error = | ||x - x_hat*||^2 - ||x - x_hat||^2 |``, else minimise ``-bpp``.
* ``"ma2023"``  Chen & Ma 2023 (the paper's ref. [1]): the same switching scheme, but the
  distortion is measured against the clean *reconstruction* ``x_hat`` and, as in their
  reference code, the over-budget branch only shrinks the noise.
* ``"pgd-psnr"``, ``"pgd-bpp"``  I-FGSM / PGD in L-inf (Kurakin 2016, Madry 2017; random start)
  on the in-budget objective of eq. 6 / eq. 7, radius ``min(sqrt(eps), linf)``; an L-inf ball
  of radius ``sqrt(eps)`` lies inside the MSE budget, so every step is feasible.
* ``"pgd-l2-psnr"``, ``"pgd-l2-bpp"``  PGD in L2, projected on the MSE ball each step.
* ``"fgsm-psnr"``, ``"fgsm-bpp"``  one signed step of size ``sqrt(eps)`` (Goodfellow 2015).
* ``"noise"``  Gaussian noise scaled so that the clamped noise has MSE ``eps`` (a sanity floor).

Normalisations (ours; the paper gives none). All terms are made dimensionless so that no
branch swamps Adam's running moments: ``||n||`` becomes ``sqrt(mean(n^2) / eps)`` (1 on the
budget boundary), ``bpp_error = |bpp - bpp_ori| / bpp_ori``, ``psnr_error = |D* - D| / D`` and
``||x - x_hat*||^2`` becomes ``D* / D`` with ``D = mean((x - x_hat)^2)`` the clean distortion;
``-bpp`` becomes ``-bpp / bpp_ori``. Each sample's loss is multiplied by its number of values
before differentiation so per-pixel gradients are O(1) (Adam's epsilon stays negligible). The
decoded image is clamped to [0, 1] like a real decoder, with a clamp whose gradient still
passes where it points back into range (as the ``Low_bound``/``Up_bound`` ops of Chen & Ma).

Gradient path (``quant``). CompressAI's eval-mode rounding has zero gradient, so attacks need
a proxy: ``"noise"`` (additive uniform noise, the training-mode proxy through which Chen & Ma
train their noise) or ``"ste"`` (the real rounding in the forward pass, identity gradient).
Measured on the CPU-reproduction pretrained model (hyper N=64/M=96, README), the first four
Kodak images as 256x256 centre crops, eps=5e-4, 60 iterations, lr 1e-2, everything judged on real
bitstreams; ``results/cpu/01_pretrain/metrics_quant_{ste,noise}.json``, made by::

    python -m nic_core.runs pretrain -f params/cpu/01_pretrain.yaml -p eval_limit 4 \
      -p attack_iterations 60 -p eval_attacks psnr,bpp,ma2023 -p attack_quant ste \
      --eval-only runs/cpu/01_pretrain/checkpoint.pt --out .../metrics_quant_ste.json

=========  ===============================  ===============================
attack     ``"ste"``                        ``"noise"``
=========  ===============================  ===============================
psnr       -2.99 dB, bpp x1.000             -3.22 dB, bpp x0.906
bpp        bpp x1.352, -0.79 dB             bpp x1.343, -0.56 dB
ma2023     -2.13 dB, bpp x1.058             -2.69 dB, bpp x1.116
=========  ===============================  ===============================

The noise proxy is a little stronger on distortion, but only ``"ste"`` holds the rate as eq. 6
demands (per image x0.99-1.01 against x0.73-0.98: the noise proxy's rate is not the rate of the
rounded latents, so ``bpp_error`` is enforced on the wrong quantity); the bpp attacks are on a
par. ``"ste"`` attacks the very rounding path ``compress()`` uses and is deterministic, so a
mixed batch reproduces separate calls; it is the default.

Speed: one batched loop for every kind; the clean reconstruction and rate are computed once
without gradients; gradients are taken w.r.t. the noise only (parameters temporarily frozen,
so no parameter gradient is built or accumulated); model and batch run in ``channels_last``
(converted for the call and restored); samples whose iterations are done leave the working
batch; no host-device synchronisation inside the loop. ``python -m nic_core.bench attacks``
measures the cost against one bare forward+backward.
"""
from __future__ import annotations

import contextlib
import math
import time
from typing import Dict, List, Optional, Sequence, Union

import torch
from tqdm.auto import tqdm

from .metrics import mse_per_sample, psnr
from .models import codec_forward

__all__ = ["ATTACKS", "DEFAULT_LR", "attack", "psnr_attack", "bpp_attack",
           "ma2023_attack", "pgd_attack", "fgsm_attack", "random_noise_attack"]

# kind -> (family, objective)
_SPECS = {
    "psnr": ("adam", "psnr"),
    "bpp": ("adam", "bpp"),
    "ma2023": ("adam", "ma2023"),
    "pgd-psnr": ("pgd-linf", "psnr"),
    "pgd-bpp": ("pgd-linf", "bpp"),
    "pgd-l2-psnr": ("pgd-l2", "psnr"),
    "pgd-l2-bpp": ("pgd-l2", "bpp"),
    "fgsm-psnr": ("fgsm", "psnr"),
    "fgsm-bpp": ("fgsm", "bpp"),
    "noise": ("noise", None),
}
ATTACKS = tuple(_SPECS)

DEFAULT_LR = 1e-2  # Adam step (pixel units) of the psnr / bpp / ma2023 attacks
PGD_STEP_FACTOR = 2.5  # PGD step = 2.5 * radius / iterations (Madry et al. 2017)
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
_SAFETY = 1.0 - 1e-5  # project to eps * _SAFETY so a float32 recomputation stays <= eps
_INIT_SCALE = 1e-5  # Chen & Ma start from uniform(-1e-5, 1e-5) noise


class _ClampPassInward(torch.autograd.Function):
    """``clamp(t, 0, 1)`` whose gradient also passes where a descent step moves ``t`` inward."""

    @staticmethod
    def forward(ctx, t):
        ctx.save_for_backward(t)
        return t.clamp(0.0, 1.0)

    @staticmethod
    def backward(ctx, g):
        (t,) = ctx.saved_tensors
        keep = ((t >= 0) | (g < 0)) & ((t <= 1) | (g > 0))
        return g * keep


def _as_list(value, n: int, what: str) -> list:
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(f"{what} has {len(value)} entries but the batch has {n} samples")
        return list(value)
    if isinstance(value, torch.Tensor):
        raise ValueError(f"{what} must be a value or a list, not a tensor")
    return [value] * n


def _check_input(x: torch.Tensor) -> None:
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


def _positive(value, what: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a positive number, got {value!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{what} must be a positive number, got {value!r}")
    return v


def _check_iterations(values: list) -> List[int]:
    out = []
    for it in values:
        if isinstance(it, bool) or not isinstance(it, (int,)) and not (
                isinstance(it, float) and it.is_integer()):
            raise ValueError(f"iterations must be integers >= 1, got {it!r}")
        if int(it) < 1:
            raise ValueError(f"iterations must be >= 1, got {it!r}")
        out.append(int(it))
    return out


@contextlib.contextmanager
def _attack_mode(model: torch.nn.Module, channels_last: bool = True):
    """Eval mode, frozen parameters and channels_last for the attack; everything restored."""
    modes = [(m, m.training) for m in model.modules()]
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    cl = torch.channels_last
    formats = []
    try:
        model.eval()
        for p in params:
            p.requires_grad_(False)
        if channels_last:
            for p in params:
                if p.dim() == 4 and not p.data.is_contiguous(memory_format=cl):
                    formats.append((p, p.data))  # values never change: keep the original
                    p.data = p.data.contiguous(memory_format=cl)
        yield
    finally:
        for p, original in formats:
            p.data = original
        for p, f in zip(params, flags):
            p.requires_grad_(f)
        for m, t in modes:
            m.training = t


def _bview(t: torch.Tensor) -> torch.Tensor:
    """[B] -> [B,1,1,1] for broadcasting over images."""
    return t.view(-1, 1, 1, 1)


def _project_budget(x, n, eps, linf=None):
    """Largest feasible scaling of each sample's noise: mean(n^2) <= eps * _SAFETY, |n| <= linf.

    ``x + s * n`` with ``0 <= s <= 1`` stays in [0, 1] when ``x`` and ``x + n`` do.
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
        n = (x + n * _bview(scale)).clamp(0.0, 1.0) - x
    else:  # pragma: no cover - cannot happen, but never return an infeasible input
        n = torch.where(_bview(over), torch.zeros_like(n), n)
    return x + n


def _to_uint8(x, x_adv, eps):
    """Round ``x_adv`` to the 8-bit grid, shrinking a sample's noise until it is within eps."""
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
        cand = torch.round((x + n * _bview(scale)).clamp(0, 1) * 255) / 255
        out = torch.where(_bview(over), cand, out)
    mse = (out.double() - x.double()).pow(2).flatten(1).mean(1)
    if bool((mse > target).any()):  # pragma: no cover - guarded by the check in attack()
        raise ValueError("eps is below the 8-bit rounding error of x")
    return out


def _random_noise(x, eps, seed, linf=None):
    """Gaussian noise whose clamped MSE is eps (bisection on its scale), per sample."""
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


def _init_noise(x, families, objectives, seed, radius, linf):
    """Per-sample start noise.

    Tiny uniform noise (psnr, bpp, pgd-l2; Chen & Ma's start), uniform in the L-inf ball
    (pgd-linf, Madry's random start; also ma2023), zero (fgsm, noise). ma2023 needs a real
    start: its loss ``||x_hat - x_hat*||^2`` is at its stationary point (zero gradient) for
    ``x* = x``, and tiny noise changes no rounding. Each sample draws from its own generator
    seeded with ``seed``, so a sample gets the same start in a mixed batch as alone.
    """
    n = torch.zeros_like(x)
    for b, (fam, obj) in enumerate(zip(families, objectives)):
        if fam in ("fgsm", "noise"):
            continue
        g = torch.Generator(device="cpu").manual_seed(int(seed))
        u = torch.rand(x[b].shape, generator=g).to(x.device, x.dtype) * 2 - 1
        wide = fam == "pgd-linf" or obj == "ma2023"
        n[b] = u * (radius[b] if wide else _INIT_SCALE)
    if linf is not None:
        n = n.clamp(-linf, linf)
    return (x + n).clamp(0, 1) - x


def attack(model: torch.nn.Module, x: torch.Tensor, kind: Union[str, Sequence[str]] = "psnr",
           eps: float = 5e-4, iterations: Union[int, Sequence[int]] = 100,
           lr: Optional[float] = None, quant: str = "ste", seed: int = 0, to_uint8: bool = False,
           linf: Optional[float] = None, progress: bool = False) -> Dict[str, object]:
    """Attack a batch, each sample with its own kind and number of iterations, in one loop.

    Implements the psnr attack (eq. 6) and bpp attack (eq. 7) of arXiv 2403.06700 sec. 2.3, the
    Chen & Ma 2023 attack and the PGD / FGSM / random-noise baselines (see module docstring).
    Stage II of the paper (Algorithm 1, line 14) attacks x1 with N_p psnr iterations and x2
    with N_b bpp iterations: ``attack(model, x[:2], ["psnr", "bpp"], iterations=[200, 100])``.
    A sample whose iterations are done is frozen (it leaves the working batch).

    Args:
        model: CompressAI codec. Its train/eval mode, ``requires_grad`` flags, ``.grad`` and
            parameter memory format are left exactly as found (the attack runs in eval mode
            with frozen parameters and channels_last, restored on exit).
        x: float batch [B,3,H,W] in [0, 1].
        kind: one of :data:`ATTACKS`, or a list with one kind per sample.
        eps: budget on the per-pixel mean squared noise of each sample (paper: 5e-4, 1e-3).
        iterations: number of steps, or a list with one per sample (FGSM always takes one
            step, ``"noise"`` none).
        lr: step size. Adam's learning rate for psnr/bpp/ma2023 (default :data:`DEFAULT_LR`);
            the per-step L-inf step (pgd) or RMS step (pgd-l2) for PGD (default
            ``2.5 * radius / iterations``). Ignored by fgsm and noise.
        quant: gradient path, ``"ste"`` (default) or ``"noise"`` (see module docstring).
        seed: seeds the start noise (per sample), the ``"noise"`` proxy and the random noise.
        to_uint8: round ``x_adv`` to 8 bits like a saved attack image (budget still holds).
        linf: optional per-pixel cap on ``|x_adv - x|``.
        progress: show a tqdm progress bar over iterations.

    Returns:
        dict with ``x_adv`` [B,3,H,W] (in [0,1], ``noise_mse <= eps``), ``noise_mse`` [B]
        (float64, achieved), ``loss`` [B] (last attack loss; NaN for ``"noise"``), ``kind``
        and ``iterations`` (lists, iterations actually run), ``seconds`` (whole call),
        ``loop_seconds`` (the iteration loop alone), and from one final
        rounding forward ``bpp`` / ``psnr`` [B] of the attacked samples and ``bpp_clean`` /
        ``psnr_clean`` [B] of the clean ones (estimated bpp; PSNR against the clean ``x``).

    Raises:
        ValueError: bad ``x``, ``eps <= 0``, ``iterations < 1``, ``lr <= 0``, unknown kind,
            a per-sample list of the wrong length, ``quant="round"`` (zero gradient), or
            ``to_uint8`` with an eps below the 8-bit rounding error of ``x``.
    """
    t_start = time.perf_counter()
    _check_input(x)
    B = x.shape[0]
    kinds = _as_list(kind, B, "kind")
    for k in kinds:
        if k not in _SPECS:
            raise ValueError(f"unknown attack kind {k!r}; choose one of {ATTACKS}")
    iters = _check_iterations(_as_list(iterations, B, "iterations"))
    eps = _positive(eps, "eps")
    if lr is not None:
        lr = _positive(lr, "lr")
    if linf is not None:
        linf = _positive(linf, "linf")
    if quant not in ("ste", "noise"):
        raise ValueError(f"quant must be 'ste' or 'noise' (rounding has zero gradient), "
                         f"got {quant!r}")
    if to_uint8:
        r8 = mse_per_sample(torch.round(x * 255) / 255, x).double()
        if bool((r8 > eps * _SAFETY).any()):
            raise ValueError(f"eps={eps:g} is below the 8-bit rounding error of x "
                             f"({float(r8.max()):.3g}); use to_uint8=False or 8-bit images")

    families = [_SPECS[k][0] for k in kinds]
    objectives = [_SPECS[k][1] for k in kinds]
    iters = [0 if f == "noise" else 1 if f == "fgsm" else i for f, i in zip(families, iters)]
    dev, dt = x.device, x.dtype
    x = x.detach().contiguous(memory_format=torch.channels_last)
    numel = x[0].numel()
    radius_linf = min(math.sqrt(eps), linf) if linf is not None else math.sqrt(eps)
    radius = [radius_linf if f in ("pgd-linf", "fgsm") else math.sqrt(eps) for f in families]
    steps = []
    for f, it, r in zip(families, iters, radius):
        if f == "adam":
            steps.append(lr if lr is not None else DEFAULT_LR)
        elif f == "fgsm":
            steps.append(r)
        elif f.startswith("pgd"):
            steps.append(lr if lr is not None else PGD_STEP_FACTOR * r / max(it, 1))
        else:
            steps.append(0.0)

    loss_out = torch.full((B,), float("nan"), dtype=dt, device=dev)
    with _attack_mode(model):
        with torch.no_grad():
            clean = codec_forward(model, x, quant="round")
            x_hat0 = clean["x_hat"].clamp(0, 1)
            bpp0 = clean["bpp"].detach()
            d0 = mse_per_sample(x, x_hat0)
        n_final = _init_noise(x, families, objectives, seed, radius, linf)
        gen = None
        if quant == "noise":
            gen = torch.Generator(device=dev).manual_seed(int(seed))
        active = [b for b in range(B) if iters[b] > 0]
        max_it = max(iters) if active else 0
        if x.is_cuda:
            torch.cuda.synchronize(x.device)
        t_loop = time.perf_counter()
        if active:
            loss_out[active] = _optimise(
                model, x, n_final, active, families, objectives, iters, steps, radius, eps, linf,
                quant, gen, x_hat0, bpp0, d0, numel, max_it, progress)
        if x.is_cuda:
            torch.cuda.synchronize(x.device)
        loop_seconds = time.perf_counter() - t_loop
        noise_idx = [b for b in range(B) if families[b] == "noise"]
        if noise_idx:
            n_final[noise_idx] = _random_noise(x[noise_idx], eps, seed, linf).to(
                memory_format=torch.channels_last)
        x_adv = _project_budget(x, n_final, eps, linf)
        if to_uint8:
            x_adv = _to_uint8(x, x_adv, eps)
        with torch.no_grad():
            final = codec_forward(model, x_adv, quant="round")
    x_adv = x_adv.contiguous()
    noise_mse = (x_adv.double() - x.double()).pow(2).flatten(1).mean(1)
    return {
        "x_adv": x_adv,
        "noise_mse": noise_mse,
        "loss": loss_out,
        "kind": kinds,
        "iterations": iters,
        "seconds": time.perf_counter() - t_start,
        "loop_seconds": loop_seconds,
        "bpp": final["bpp"].detach(),
        "psnr": psnr(x, final["x_hat"].detach()),
        "bpp_clean": bpp0,
        "psnr_clean": psnr(x, x_hat0),
    }


def _loss(out, x, n, eps, x_hat0, bpp0, d0, masks):
    """Per-sample attack loss [B] (normalised eq. 6 / eq. 7 / Chen & Ma / PGD objectives)."""
    x_hat = _ClampPassInward.apply(out["x_hat"])
    bpp = out["bpp"]
    d = mse_per_sample(x, x_hat)
    d0 = d0.clamp_min(1e-10)
    bpp0 = bpp0.clamp_min(1e-6)
    nmse = n.pow(2).flatten(1).mean(1)
    over = nmse >= eps
    noise_term = (nmse.clamp_min(1e-20) / eps).sqrt()  # ||n||_2 on the budget's scale
    psnr_in = 1.0 - d / d0  # 1 - ||x - x_hat*||^2
    bpp_in = -bpp / bpp0  # -bpp
    loss = torch.zeros_like(d)
    if masks["psnr"] is not None:
        bpp_error = (bpp - bpp0).abs() / bpp0
        l_psnr = psnr_in
        if masks["adam"] is not None:
            l_psnr = torch.where(over & masks["adam"], noise_term + bpp_error, psnr_in)
        loss = torch.where(masks["psnr"], l_psnr, loss)
    if masks["bpp"] is not None:
        psnr_error = (d - d0).abs() / d0
        l_bpp = bpp_in
        if masks["adam"] is not None:
            l_bpp = torch.where(over & masks["adam"], noise_term + psnr_error, bpp_in)
        loss = torch.where(masks["bpp"], l_bpp, loss)
    if masks["ma2023"] is not None:
        d_ref = mse_per_sample(x_hat0, x_hat)  # distortion w.r.t. the clean reconstruction
        loss = torch.where(masks["ma2023"], torch.where(over, noise_term, 1.0 - d_ref / d0), loss)
    return loss


def _optimise(model, x_all, n_all, active, families, objectives, iters, steps, radius, eps,
              linf, quant, gen, x_hat0_all, bpp0_all, d0_all, numel, max_it, progress):
    """The attack loop over the ``active`` samples; writes their noise into ``n_all``."""
    dev = x_all.device
    loss_final = torch.full((len(active),), float("nan"), dtype=x_all.dtype, device=dev)
    pos = list(active)  # original indices of the working batch, in order

    def gather(idx):
        t = torch.tensor(idx, device=dev)
        sel = lambda a: a.index_select(0, t)  # noqa: E731
        w = {"x": sel(x_all), "x_hat0": sel(x_hat0_all), "bpp0": sel(bpp0_all),
             "d0": sel(d0_all)}
        fam = [families[b] for b in idx]
        obj = [objectives[b] for b in idx]

        def mask(cond):
            m = torch.tensor([cond(f, o) for f, o in zip(fam, obj)], device=dev)
            return m if bool(m.any()) else None

        w["masks"] = {
            "adam": mask(lambda f, o: f == "adam"),
            "psnr": mask(lambda f, o: o == "psnr"),
            "bpp": mask(lambda f, o: o == "bpp"),
            "ma2023": mask(lambda f, o: o == "ma2023"),
        }
        w["fam"] = {f: _bview(torch.tensor([g == f for g in fam], device=dev))
                    for f in set(fam)}
        w["step"] = _bview(torch.tensor([steps[b] for b in idx], dtype=x_all.dtype, device=dev))
        w["radius"] = _bview(torch.tensor([radius[b] for b in idx], dtype=x_all.dtype,
                                          device=dev))
        return w

    w = gather(pos)
    n = n_all.index_select(0, torch.tensor(pos, device=dev)).contiguous(
        memory_format=torch.channels_last)
    m = torch.zeros_like(n)
    v = torch.zeros_like(n)
    b1, b2 = ADAM_BETAS
    weight = float(numel)
    bar = tqdm(total=max_it, desc="attack", leave=False, disable=not progress)
    try:
        for i in range(max_it):
            # retire samples whose iterations are done (frozen from now on)
            keep = [j for j, b in enumerate(pos) if iters[b] > i]
            if len(keep) < len(pos):
                done = [j for j, b in enumerate(pos) if iters[b] <= i]
                idx_done = torch.tensor([pos[j] for j in done], device=dev)
                n_all.index_copy_(0, idx_done, n[done])
                loss_final[[active.index(pos[j]) for j in done]] = last_loss[done]
                kt = torch.tensor(keep, device=dev)
                n, m, v = n[kt], m[kt], v[kt]
                last_loss = last_loss[kt]
                pos = [pos[j] for j in keep]
                w = gather(pos)
            x = w["x"]
            with torch.enable_grad():
                n_req = n.detach().requires_grad_(True)
                out = codec_forward(model, x + n_req, quant=quant, generator=gen)
                loss = _loss(out, x, n_req, eps, w["x_hat0"], w["bpp0"], w["d0"], w["masks"])
                (g,) = torch.autograd.grad(loss.sum() * weight, n_req)
            last_loss = loss.detach()
            n = n.detach()
            fam = w["fam"]
            upd = {}
            if "adam" in fam:
                t = i + 1
                m.mul_(b1).add_(g, alpha=1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                denom = (v / (1 - b2 ** t)).sqrt_().add_(ADAM_EPS)
                upd["adam"] = n - w["step"] * (m / (1 - b1 ** t)) / denom
            if "pgd-linf" in fam or "fgsm" in fam:
                u = n - w["step"] * g.sign()
                upd["pgd-linf"] = upd["fgsm"] = torch.maximum(torch.minimum(u, w["radius"]),
                                                              -w["radius"])
            if "pgd-l2" in fam:
                gnorm = g.flatten(1).norm(dim=1).clamp_min(1e-20)
                u = n - w["step"] * math.sqrt(numel) * g / _bview(gnorm)
                limit = w["radius"].flatten() * math.sqrt(numel)
                unorm = u.flatten(1).norm(dim=1).clamp_min(1e-20)
                upd["pgd-l2"] = u * _bview((limit / unorm).clamp(max=1.0))
            if len(fam) == 1:
                new = upd[next(iter(fam))]
            else:
                new = n
                for f, sel in fam.items():
                    new = torch.where(sel, upd[f], new)
            if linf is not None:
                new = new.clamp(-linf, linf)
            n = (x + new).clamp_(0.0, 1.0).sub_(x)  # stay in the image box
            bar.update(1)
    finally:
        bar.close()
    idx = torch.tensor(pos, device=dev)
    n_all.index_copy_(0, idx, n)
    loss_final[[active.index(b) for b in pos]] = last_loss
    return loss_final


def psnr_attack(model, x, eps: float = 5e-4, iterations: int = 100, **kw):
    """The paper's psnr attack (eq. 6): quality collapses, bpp held. See :func:`attack`."""
    return attack(model, x, "psnr", eps, iterations, **kw)


def bpp_attack(model, x, eps: float = 5e-4, iterations: int = 100, **kw):
    """The paper's bpp attack (eq. 7): rate explodes, PSNR held. See :func:`attack`."""
    return attack(model, x, "bpp", eps, iterations, **kw)


def ma2023_attack(model, x, eps: float = 5e-4, iterations: int = 100, **kw):
    """Chen & Ma 2023 (the paper's baseline [1]): distortion against ``x_hat``; see :func:`attack`.
    """
    return attack(model, x, "ma2023", eps, iterations, **kw)


def pgd_attack(model, x, eps: float = 5e-4, iterations: int = 10, objective: str = "psnr",
               norm: str = "linf", **kw):
    """PGD (I-FGSM for ``norm="linf"``) on the psnr or bpp objective, within the MSE budget."""
    if objective not in ("psnr", "bpp"):
        raise ValueError(f"objective must be 'psnr' or 'bpp', got {objective!r}")
    if norm not in ("linf", "l2"):
        raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")
    kind = f"pgd-{objective}" if norm == "linf" else f"pgd-l2-{objective}"
    return attack(model, x, kind, eps, iterations, **kw)


def fgsm_attack(model, x, eps: float = 5e-4, objective: str = "psnr", **kw):
    """FGSM: one signed step of L-inf size ``sqrt(eps)`` (so the MSE budget holds)."""
    if objective not in ("psnr", "bpp"):
        raise ValueError(f"objective must be 'psnr' or 'bpp', got {objective!r}")
    return attack(model, x, f"fgsm-{objective}", eps, 1, **kw)


def random_noise_attack(model, x, eps: float = 5e-4, **kw):
    """Gaussian noise at the same MSE as the attacks (clamped to the image box): a floor."""
    return attack(model, x, "noise", eps, 1, **kw)
