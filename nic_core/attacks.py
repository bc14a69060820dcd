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
a proxy: ``"ste"`` (the real rounding in the forward pass, identity gradient; the default, it
attacks the very rounding path ``compress()`` uses and is deterministic) or ``"noise"``
(additive uniform noise, the training-mode proxy through which Chen & Ma train their noise).
Which path is stronger depends on the model; a trustworthy evaluation tries both
(``nic_core.evaluate``, worst case over an ensemble). Measured comparisons live in ``results/``.

Strongest iterate, not last (Carlini et al. 2019, "On evaluating adversarial robustness";
Croce & Hein 2020, APGD). By default (``keep_best=True``) every sample keeps the in-budget
input with the worst outcome met during the loop, judged on the *rounded* codec (the
``ste`` forward is the rounded forward, so this is free; the ``noise`` path checks the
projected iterate with a rounded forward every ``check_every`` steps):

* psnr-side kinds (psnr, pgd-psnr, pgd-l2-psnr, fgsm-psnr, ma2023): lowest PSNR against ``x``;
  for the eq.-6 family only iterates that hold the rate, ``|bpp / bpp_clean - 1| <= rate_tol``
  (default 5 %), qualify (eq. 6 attacks quality at an unchanged rate; Chen & Ma do not hold it);
* bpp-side kinds: highest rate among iterates whose PSNR drop is at most ``psnr_tol`` dB
  (default 1 dB: Gaussian noise of the paper's largest budget alone costs ~0.5-1 dB).

When no iterate qualifies the best unqualified one is kept and ``held`` says so. The final
iterate competes too, so the result is never worse than the last step. A ``cosine`` schedule
(default) decays Adam's learning rate and PGD's step to zero, so the noise settles on the
budget instead of swinging across it (``budget_use`` = noise MSE / eps is returned).
``restarts=R`` runs R starts as samples of one batch (restart 0: the kind's own start; the
others: uniform noise of half the budget, seeds ``seed + r``) and keeps the best per image.

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
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from tqdm.auto import tqdm

from .metrics import mse_per_sample, psnr
from .models import codec_forward

__all__ = ["ATTACKS", "DEFAULT_LR", "attack", "parse_spec", "side", "psnr_attack", "bpp_attack",
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
SCHEDULES = ("cosine", "constant", "plateau")
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


def side(kind: str) -> Optional[str]:
    """``"psnr"`` for attacks on quality (eq. 6, PGD/FGSM on it, ma2023), ``"bpp"`` for attacks
    on the rate (eq. 7 and its PGD/FGSM versions), ``None`` for random noise."""
    obj = _SPECS[kind][1]
    return {"psnr": "psnr", "ma2023": "psnr", "bpp": "bpp"}.get(obj)


def parse_spec(spec: str, quant: str = "ste", iterations: Optional[int] = None,
               schedule: Optional[str] = None) -> Tuple[str, str, Optional[int], Optional[str]]:
    """``"kind[@quant][:iterations][/schedule]"`` -> ``(kind, quant, iterations, schedule)``.

    E.g. ``"psnr@noise:400"``, ``"psnr/constant"``. The evaluation names attacks this way
    (``eval_attacks: psnr:400,bpp:200``, the paper's N_p = 400, N_b = 200); missing parts take
    the given defaults. Bad specs are clear errors.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"attack spec must be a non-empty string, got {spec!r}")
    rest, _, sch = spec.strip().partition("/")
    body, _, it = rest.partition(":")
    kind, _, q = body.partition("@")
    kind, q, sch = kind.strip(), (q.strip() or quant), (sch.strip() or schedule)
    if kind not in _SPECS:
        raise ValueError(f"unknown attack kind {kind!r} in {spec!r}; choose one of {ATTACKS}")
    if q not in ("ste", "noise"):
        raise ValueError(f"gradient path {q!r} in {spec!r} must be 'ste' or 'noise'")
    if sch is not None and sch not in SCHEDULES:
        raise ValueError(f"schedule {sch!r} in {spec!r} must be one of {SCHEDULES}")
    if it.strip():
        try:
            iterations = int(it)
        except ValueError:
            raise ValueError(f"iterations {it!r} in {spec!r} must be an integer") from None
        if iterations < 1:
            raise ValueError(f"iterations in {spec!r} must be >= 1")
    return kind, q, iterations, sch


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


def _init_noise(x, families, objectives, seeds, starts, radius, linf, eps):
    """Per-sample start noise.

    Restart 0 (``starts[b] == 0``) is the kind's own start: tiny uniform noise (psnr, bpp,
    pgd-l2; Chen & Ma's start), uniform in the L-inf ball (pgd-linf, Madry's random start; also
    ma2023), zero (fgsm, noise). ma2023 needs a real start: its loss ``||x_hat - x_hat*||^2``
    is at its stationary point (zero gradient) for ``x* = x``, and tiny noise changes no
    rounding. Later restarts start from uniform noise of half the budget's MSE. Each sample
    draws from its own generator seeded with ``seeds[b]``, so a sample gets the same start in a
    mixed batch as alone.
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


def _outcome(objectives, d, bpp, d0, bpp0, rate_tol, psnr_tol):
    """The attacker's score per sample (higher = worse for the codec) and whether it *held*
    the other quantity as eq. 6 / eq. 7 demand. ``d``: distortion against the original."""
    ratio_d = d / d0.clamp_min(1e-12)
    ratio_b = bpp / bpp0.clamp_min(1e-9)
    score = torch.zeros_like(d)
    held = torch.ones_like(d, dtype=torch.bool)
    for obj, sel in objectives.items():
        if obj == "bpp":
            score = torch.where(sel, ratio_b, score)
            held = torch.where(sel, ratio_d <= 10 ** (psnr_tol / 10), held)
        elif obj in ("psnr", "ma2023"):
            score = torch.where(sel, ratio_d, score)
            if obj == "psnr":
                held = torch.where(sel, (ratio_b - 1).abs() <= rate_tol, held)
    return score, held


def _better(score, held, best_score, best_held):
    """Held beats not held; then the higher score."""
    return (held & ~best_held) | ((held == best_held) & (score > best_score))


def attack(model: torch.nn.Module, x: torch.Tensor, kind: Union[str, Sequence[str]] = "psnr",
           eps: float = 5e-4, iterations: Union[int, Sequence[int]] = 100,
           lr: Optional[float] = None, quant: str = "ste", seed: int = 0, to_uint8: bool = False,
           linf: Optional[float] = None, progress: bool = False,
           schedule: str = "cosine", keep_best: bool = True, restarts: int = 1,
           rate_tol: float = 0.05, psnr_tol: float = 1.0, check_every: int = 5,
           pgd_step: Optional[float] = None) -> Dict[str, object]:
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
        lr: Adam's learning rate (pixel units) of psnr / bpp / ma2023 (default
            :data:`DEFAULT_LR`); ignored by the other kinds.
        quant: gradient path, ``"ste"`` (default) or ``"noise"`` (see module docstring).
        seed: seeds the start noise (per sample), the ``"noise"`` proxy and the random noise.
        to_uint8: round ``x_adv`` to 8 bits like a saved attack image (budget still holds).
        linf: optional per-pixel cap on ``|x_adv - x|``.
        progress: show a tqdm progress bar over iterations.
        schedule: ``"cosine"`` (step decays to 0 over the iterations) or ``"constant"``.
        keep_best: return each sample's strongest in-budget iterate (module docstring);
            ``False`` returns the last one (projected), as before.
        restarts: number of starts per sample, best kept (1: no restarts).
        rate_tol, psnr_tol: what "held" means (relative rate change of psnr-side attacks, PSNR
            drop in dB of bpp-side attacks) when choosing the strongest iterate.
        check_every: with ``quant="noise"``, judge the iterate on the rounded codec every this
            many steps (and after the last).
        pgd_step: PGD's step, the L-inf step (pgd) or RMS step (pgd-l2) (default
            ``2.5 * radius / iterations``, Madry et al.).

    Returns:
        dict with ``x_adv`` [B,3,H,W] (in [0,1], ``noise_mse <= eps``), ``noise_mse`` [B]
        (float64, achieved) and ``budget_use`` (= noise_mse / eps), ``loss`` [B] (last attack
        loss; NaN for ``"noise"``), ``kind`` and ``iterations`` (lists, iterations actually
        run), ``held`` [B] bool, ``best_iteration`` [B] (step of the kept iterate; the number of
        iterations when the final one won), ``restart`` [B] (which start won), ``seconds``
        (whole call), ``loop_seconds`` (the iteration loop alone), and from the rounding
        forward ``bpp`` / ``psnr`` [B] of the attacked samples and ``bpp_clean`` /
        ``psnr_clean`` [B] of the clean ones (estimated bpp; PSNR against the clean ``x``).

    Raises:
        ValueError: bad ``x``, ``eps <= 0``, ``iterations < 1``, ``lr <= 0``, unknown kind,
            a per-sample list of the wrong length, ``quant="round"`` (zero gradient), an
            unknown schedule, ``restarts < 1``, or ``to_uint8`` with an eps below the 8-bit
            rounding error of ``x``.
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
    if pgd_step is not None:
        pgd_step = _positive(pgd_step, "pgd_step")
    if linf is not None:
        linf = _positive(linf, "linf")
    if quant not in ("ste", "noise"):
        raise ValueError(f"quant must be 'ste' or 'noise' (rounding has zero gradient), "
                         f"got {quant!r}")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    for name, v in (("restarts", restarts), ("check_every", check_every)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    rate_tol, psnr_tol = _positive(rate_tol, "rate_tol"), _positive(psnr_tol, "psnr_tol")
    if to_uint8:
        r8 = mse_per_sample(torch.round(x * 255) / 255, x).double()
        if bool((r8 > eps * _SAFETY).any()):
            raise ValueError(f"eps={eps:g} is below the 8-bit rounding error of x "
                             f"({float(r8.max()):.3g}); use to_uint8=False or 8-bit images")

    families = [_SPECS[k][0] for k in kinds]
    iters = [0 if f == "noise" else 1 if f == "fgsm" else i for f, i in zip(families, iters)]
    # restarts are samples of one batch: index r * B + b
    R = restarts
    xr = x.detach().repeat(R, 1, 1, 1) if R > 1 else x.detach()
    loop = _Loop(model, xr, kinds * R, iters * R, [s for s in range(R) for _ in range(B)],
                 [seed + r for r in range(R) for _ in range(B)], eps=eps, lr=lr,
                 pgd_step=pgd_step, quant=quant,
                 seed=seed, linf=linf, schedule=schedule, keep_best=keep_best,
                 rate_tol=rate_tol, psnr_tol=psnr_tol, check_every=check_every)
    with _attack_mode(model):
        res = loop.run(progress, to_uint8)
    pick = torch.arange(B, device=x.device)
    if R > 1:  # best restart per image
        score = res["score"].view(R, B)
        held = res["held"].view(R, B)
        win = torch.zeros(B, dtype=torch.long, device=x.device)
        for r in range(1, R):
            better = _better(score[r], held[r], score[win, pick], held[win, pick])
            win = torch.where(better, torch.full_like(win, r), win)
        pick = win * B + pick
    x_adv = res["x_adv"][pick].contiguous()
    noise_mse = (x_adv.double() - x.double()).pow(2).flatten(1).mean(1)
    return {
        "x_adv": x_adv,
        "noise_mse": noise_mse,
        "budget_use": noise_mse / eps,
        "loss": res["loss"][pick],
        "kind": kinds,
        "iterations": iters,
        "held": res["held"][pick],
        "best_iteration": res["best_iteration"][pick],
        "restart": (pick // B).tolist(),
        "seconds": time.perf_counter() - t_start,
        "loop_seconds": res["loop_seconds"],
        "bpp": res["bpp"][pick],
        "psnr": res["psnr"][pick],
        "bpp_clean": res["bpp_clean"][:B],
        "psnr_clean": res["psnr_clean"][:B],
    }


def _loss(out, x, n, eps, x_hat0, bpp0, d0, masks):
    """Per-sample attack loss [B] (normalised eq. 6 / eq. 7 / Chen & Ma / PGD objectives), and
    the (detached) distortion against ``x`` and rate of this forward."""
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
    return loss, d.detach(), bpp.detach()


class _Loop:
    """State of one batched attack: settings per sample, the working batch, Adam moments and
    the strongest iterate so far. :meth:`run` does the whole attack (model in attack mode)."""

    def __init__(self, model, x, kinds, iters, starts, seeds, *, eps, lr, pgd_step, quant, seed,
                 linf, schedule, keep_best, rate_tol, psnr_tol, check_every):
        self.model, self.eps, self.quant, self.linf = model, eps, quant, linf
        self.schedule, self.keep_best = schedule, keep_best
        self.rate_tol, self.psnr_tol, self.check_every = rate_tol, psnr_tol, check_every
        self.x = x.contiguous(memory_format=torch.channels_last)
        self.iters, self.starts, self.seeds = iters, starts, seeds
        self.families = [_SPECS[k][0] for k in kinds]
        self.objectives = [_SPECS[k][1] for k in kinds]
        self.numel = x[0].numel()
        r_linf = min(math.sqrt(eps), linf) if linf is not None else math.sqrt(eps)
        self.radius = [r_linf if f in ("pgd-linf", "fgsm") else math.sqrt(eps)
                       for f in self.families]
        self.steps = []
        for f, it, r in zip(self.families, iters, self.radius):
            if f == "adam":
                self.steps.append(lr if lr is not None else DEFAULT_LR)
            elif f == "fgsm":
                self.steps.append(r)
            elif f.startswith("pgd"):
                self.steps.append(pgd_step if pgd_step is not None
                                  else PGD_STEP_FACTOR * r / max(it, 1))
            else:
                self.steps.append(0.0)
        self.gen = (torch.Generator(device=x.device).manual_seed(int(seed))
                    if quant == "noise" else None)

    # -- helpers over the whole batch -------------------------------------------------------
    def _objective_masks(self, idx):
        dev = self.x.device
        objs = {}
        for o in ("psnr", "bpp", "ma2023"):
            m = torch.tensor([self.objectives[b] == o for b in idx], device=dev)
            if bool(m.any()):
                objs[o] = m
        return objs

    def _judge(self, x, n, idx, to_uint8=False):
        """Project ``x + n`` on the budget (and the 8-bit grid), round-forward it, score it."""
        x_adv = _project_budget(x, n, self.eps, self.linf)
        if to_uint8:
            x_adv = _to_uint8(x, x_adv, self.eps)
        with torch.no_grad():
            out = codec_forward(self.model, x_adv, quant="round")
        d = mse_per_sample(x, out["x_hat"].clamp(0, 1))
        t = torch.tensor(idx, device=x.device)
        score, held = _outcome(self._objective_masks(idx), d, out["bpp"].detach(),
                               self.d0.index_select(0, t), self.bpp0.index_select(0, t),
                               self.rate_tol, self.psnr_tol)
        return {"x_adv": x_adv, "score": score, "held": held, "bpp": out["bpp"].detach(),
                "d": d, "psnr": psnr(x, out["x_hat"].detach())}

    def run(self, progress: bool, to_uint8: bool) -> Dict[str, object]:
        x, B, dev = self.x, self.x.shape[0], self.x.device
        with torch.no_grad():
            clean = codec_forward(self.model, x, quant="round")
            self.x_hat0 = clean["x_hat"].clamp(0, 1)
            self.bpp0 = clean["bpp"].detach()
            self.d0 = mse_per_sample(x, self.x_hat0)
        n = _init_noise(x, self.families, self.objectives, self.seeds, self.starts, self.radius,
                        self.linf, self.eps).contiguous(memory_format=torch.channels_last)
        self.n_all = n.clone()
        self.best_all = n.clone()
        self.best_score = torch.full((B,), -math.inf, dtype=x.dtype, device=dev)
        self.best_held = torch.zeros(B, dtype=torch.bool, device=dev)
        self.best_it = torch.full((B,), -1, dtype=torch.long, device=dev)
        self.loss_all = torch.full((B,), float("nan"), dtype=x.dtype, device=dev)
        active = [b for b in range(B) if self.iters[b] > 0]
        if x.is_cuda:
            torch.cuda.synchronize(dev)
        t_loop = time.perf_counter()
        if active:
            self._optimise(active, progress)
        if x.is_cuda:
            torch.cuda.synchronize(dev)
        loop_seconds = time.perf_counter() - t_loop
        noise_idx = [b for b in range(B) if self.families[b] == "noise"]
        if noise_idx:
            self.n_all[noise_idx] = torch.cat([_random_noise(
                x[b:b + 1], self.eps, self.seeds[b], self.linf) for b in noise_idx]).to(
                memory_format=torch.channels_last)
        idx = list(range(B))
        final = self._judge(x, self.n_all, idx, to_uint8)
        final_it = torch.tensor(self.iters, device=dev)
        if self.keep_best and active:
            best = self._judge(x, self.best_all, idx, to_uint8)
            use = _better(best["score"], best["held"], final["score"], final["held"])
            use &= torch.tensor([b in active for b in idx], device=dev)
            use &= self.best_it >= 0  # a sample that never had a candidate keeps its final
            for k in ("score", "held", "bpp", "psnr"):
                final[k] = torch.where(use, best[k], final[k])
            final["x_adv"] = torch.where(_bview(use), best["x_adv"], final["x_adv"])
            final_it = torch.where(use, self.best_it, final_it)
        return {**final, "loss": self.loss_all, "best_iteration": final_it,
                "loop_seconds": loop_seconds, "bpp_clean": self.bpp0,
                "psnr_clean": psnr(x, self.x_hat0)}

    # -- the loop ---------------------------------------------------------------------------
    def _gather(self, idx):
        """Per-sample constants of the working batch ``idx``."""
        dev, dt = self.x.device, self.x.dtype
        t = torch.tensor(idx, device=dev)
        fam = [self.families[b] for b in idx]
        obj = [self.objectives[b] for b in idx]

        def mask(cond):
            m = torch.tensor([cond(f, o) for f, o in zip(fam, obj)], device=dev)
            return m if bool(m.any()) else None

        return {
            "t": t, "x": self.x.index_select(0, t), "x_hat0": self.x_hat0.index_select(0, t),
            "bpp0": self.bpp0.index_select(0, t), "d0": self.d0.index_select(0, t),
            "masks": {"adam": mask(lambda f, o: f == "adam"),
                      "psnr": mask(lambda f, o: o == "psnr"),
                      "bpp": mask(lambda f, o: o == "bpp"),
                      "ma2023": mask(lambda f, o: o == "ma2023")},
            "objectives": self._objective_masks(idx),
            "fam": {f: _bview(torch.tensor([g == f for g in fam], device=dev)) for f in set(fam)},
            "step": _bview(torch.tensor([self.steps[b] for b in idx], dtype=dt, device=dev)),
            "radius": _bview(torch.tensor([self.radius[b] for b in idx], dtype=dt, device=dev)),
            "iters": torch.tensor([self.iters[b] for b in idx], dtype=dt, device=dev),
            "random_start": torch.tensor([self.starts[b] > 0 for b in idx], device=dev),
        }

    def _factor(self, i, w):
        """Step-size factor of iteration ``i`` per sample (cosine: 1 -> 0 over its iterations)."""
        if self.schedule == "constant":
            return 1.0
        if self.schedule == "cosine":
            return _bview(0.5 * (1 + torch.cos(math.pi * i / w["iters"])))
        # "plateau": constant for the first half, then a cosine decay to zero
        t = (2 * i / w["iters"] - 1).clamp(min=0.0)
        return _bview(0.5 * (1 + torch.cos(math.pi * t)))

    def _track(self, i, s, n, d, bpp, w):
        """Keep the working batch's strongest in-budget iterate (``n`` judged by d, bpp)."""
        score, held = _outcome(w["objectives"], d, bpp, w["d0"], w["bpp0"], self.rate_tol,
                               self.psnr_tol)
        ok = n.double().pow(2).flatten(1).mean(1) <= self.eps
        if i == 0:  # the near-zero start of restart 0 would "hold" trivially: not a candidate
            ok = ok & w["random_start"]
        better = ok & _better(score, held, s["score"], s["held"])
        s["score"] = torch.where(better, score, s["score"])
        s["held"] = torch.where(better, held, s["held"])
        s["it"] = torch.where(better, torch.full_like(s["it"], i), s["it"])
        s["best"] = torch.where(_bview(better), n, s["best"])

    def _retire(self, s, pos, keep):
        """Write finished samples back to the whole batch; shrink the working state."""
        done = [j for j in range(len(pos)) if j not in keep]
        if done:
            idx = torch.tensor([pos[j] for j in done], device=self.x.device)
            self.n_all.index_copy_(0, idx, s["n"][done])
            self.best_all.index_copy_(0, idx, s["best"][done])
            self.best_score.index_copy_(0, idx, s["score"][done])
            self.best_held.index_copy_(0, idx, s["held"][done])
            self.best_it.index_copy_(0, idx, s["it"][done])
            self.loss_all.index_copy_(0, idx, s["loss"][done])
        kt = torch.tensor(keep, device=self.x.device, dtype=torch.long)
        return {k: v.index_select(0, kt) for k, v in s.items()}, [pos[j] for j in keep]

    def _optimise(self, active, progress):
        """The iterations over the working batch (samples leave it when their steps are done)."""
        dev, numel = self.x.device, self.numel
        pos = list(active)  # original indices of the working batch, in order
        t = torch.tensor(pos, device=dev)
        n = self.n_all.index_select(0, t).contiguous(memory_format=torch.channels_last)
        s = {"n": n, "m": torch.zeros_like(n), "v": torch.zeros_like(n), "best": n.clone(),
             "score": self.best_score[t], "held": self.best_held[t], "it": self.best_it[t],
             "loss": self.loss_all[t]}
        w = self._gather(pos)
        max_it = max(self.iters[b] for b in pos)
        bar = tqdm(total=max_it, desc="attack", leave=False, disable=not progress)
        try:
            for i in range(max_it):
                keep = [j for j, b in enumerate(pos) if self.iters[b] > i]
                if len(keep) < len(pos):  # retire samples whose iterations are done
                    s, pos = self._retire(s, pos, keep)
                    w = self._gather(pos)
                x, n = w["x"], s["n"]
                with torch.enable_grad():
                    n_req = n.detach().requires_grad_(True)
                    out = codec_forward(self.model, x + n_req, quant=self.quant, generator=self.gen)
                    loss, d, bpp = _loss(out, x, n_req, self.eps, w["x_hat0"], w["bpp0"],
                                         w["d0"], w["masks"])
                    (g,) = torch.autograd.grad(loss.sum() * float(numel), n_req)
                s["loss"] = loss.detach()
                if self.keep_best:
                    if self.quant == "ste":  # this forward is the rounded one: judge it free
                        self._track(i, s, n, d, bpp, w)
                    elif i % self.check_every == 0:
                        j = self._judge(x, n, pos)  # the projected iterate, rounded
                        self._track(i, s, j["x_adv"] - x, j["d"], j["bpp"], w)
                s["n"] = self._step(i, n, g, s, w)
                bar.update(1)
        finally:
            bar.close()
        self._retire(s, pos, [])

    def _step(self, i, n, g, s, w):
        """One update of every family present; returns the new noise (inside the image box)."""
        fam, numel = w["fam"], self.numel
        step = w["step"] * self._factor(i, w)
        upd = {}
        if "adam" in fam:
            b1, b2 = ADAM_BETAS
            t = i + 1
            s["m"].mul_(b1).add_(g, alpha=1 - b1)
            s["v"].mul_(b2).addcmul_(g, g, value=1 - b2)
            denom = (s["v"] / (1 - b2 ** t)).sqrt_().add_(ADAM_EPS)
            upd["adam"] = n - step * (s["m"] / (1 - b1 ** t)) / denom
        if "pgd-linf" in fam or "fgsm" in fam:
            u = n - step * g.sign()  # fgsm: one step at i = 0, where every factor is 1
            upd["pgd-linf"] = upd["fgsm"] = torch.maximum(torch.minimum(u, w["radius"]),
                                                          -w["radius"])
        if "pgd-l2" in fam:
            gnorm = g.flatten(1).norm(dim=1).clamp_min(1e-20)
            u = n - step * math.sqrt(numel) * g / _bview(gnorm)
            limit = w["radius"].flatten() * math.sqrt(numel)
            unorm = u.flatten(1).norm(dim=1).clamp_min(1e-20)
            upd["pgd-l2"] = u * _bview((limit / unorm).clamp(max=1.0))
        if len(fam) == 1:
            new = upd[next(iter(fam))]
        else:
            new = n
            for f, sel in fam.items():
                new = torch.where(sel, upd[f], new)
        if self.linf is not None:
            new = new.clamp(-self.linf, self.linf)
        return (w["x"] + new).clamp_(0.0, 1.0).sub_(w["x"])  # stay in the image box


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
