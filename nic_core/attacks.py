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
  of radius ``sqrt(eps)`` lies inside the MSE budget, so every step is feasible. The step is
  ``2.5 * radius / iterations`` divided by the schedule's mean factor (cosine: 0.5), so the
  steps add up to 2.5 radii under any schedule.
* ``"pgd-l2-psnr"``, ``"pgd-l2-bpp"``  PGD in L2, projected on the MSE ball each step.
* ``"apgd-psnr"``, ``"apgd-bpp"``  APGD (Croce & Hein 2020), step-size free: normalised L2
  steps on the MSE ball with momentum, the step halved (restarting from the best point) at
  fixed fractions of the budget when progress stalls; the held quantity as a penalty
  (:mod:`nic_core.attack_apgd`). ``lr``, ``pgd_step`` and ``schedule`` do not apply.
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

Layout: this module is the public API (argument checks, restarts, the result);
:mod:`nic_core.attack_loop` runs the batched iterations and :mod:`nic_core.attack_budget` holds
the budget geometry (projection, 8-bit rounding, start and random noise).
"""
from __future__ import annotations

import time
from typing import Dict, Optional, Sequence, Tuple, Union

import torch

from .attack_budget import (as_list, check_input, check_iterations, check_uint8_budget,
                            check_positive)
from .attack_loop import SPECS, attack_mode, is_better, AttackLoop

__all__ = ["ATTACKS", "DEFAULT_LR", "attack", "parse_spec", "side", "psnr_attack", "bpp_attack",
           "ma2023_attack", "pgd_attack", "fgsm_attack", "random_noise_attack"]

_SPECS = SPECS  # kind -> (family, objective); the old private name, still used by the tests
ATTACKS = tuple(SPECS)

DEFAULT_LR = 1e-2  # Adam step (pixel units) of the psnr / bpp / ma2023 attacks
SCHEDULES = ("cosine", "constant", "plateau")


def side(kind: str) -> Optional[str]:
    """``"psnr"`` for attacks on quality (eq. 6, PGD/FGSM on it, ma2023), ``"bpp"`` for attacks
    on the rate (eq. 7 and its PGD/FGSM versions), ``None`` for random noise."""
    obj = SPECS[kind][1]
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
    if kind not in SPECS:
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


def _validate(x, kind, iterations, eps, lr, pgd_step, linf, quant, schedule, restarts,
              check_every, rate_tol, psnr_tol, to_uint8):
    """Check :func:`attack`'s arguments (in the order its docstring lists the errors).

    Returns:
        ``(kinds, iters, num)``: one kind per sample, the iterations each sample actually runs
        (FGSM one, ``"noise"`` none), and the numeric settings ``eps``, ``lr`` (default
        :data:`DEFAULT_LR` filled in), ``pgd_step``, ``linf``, ``rate_tol``, ``psnr_tol`` as
        floats (or None), ready as keywords of :class:`nic_core.attack_loop.AttackLoop`.

    Raises:
        ValueError: as listed in :func:`attack`.
    """
    check_input(x)
    B = x.shape[0]
    kinds = as_list(kind, B, "kind")
    for k in kinds:
        if k not in SPECS:
            raise ValueError(f"unknown attack kind {k!r}; choose one of {ATTACKS}")
    iters = check_iterations(as_list(iterations, B, "iterations"))
    eps = check_positive(eps, "eps")
    if lr is not None:
        lr = check_positive(lr, "lr")
    if pgd_step is not None:
        pgd_step = check_positive(pgd_step, "pgd_step")
    if linf is not None:
        linf = check_positive(linf, "linf")
    if quant not in ("ste", "noise"):
        raise ValueError(f"quant must be 'ste' or 'noise' (rounding has zero gradient), "
                         f"got {quant!r}")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    for name, v in (("restarts", restarts), ("check_every", check_every)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    rate_tol, psnr_tol = check_positive(rate_tol, "rate_tol"), check_positive(psnr_tol, "psnr_tol")
    if to_uint8:
        check_uint8_budget(x, eps)
    families = [SPECS[k][0] for k in kinds]
    iters = [0 if f == "noise" else 1 if f == "fgsm" else i for f, i in zip(families, iters)]
    num = {"eps": eps, "lr": lr if lr is not None else DEFAULT_LR, "pgd_step": pgd_step,
           "linf": linf, "rate_tol": rate_tol, "psnr_tol": psnr_tol}
    return kinds, iters, num


def _best_restart(score: torch.Tensor, held: torch.Tensor, restarts: int) -> torch.Tensor:
    """Index into the ``restarts * B`` results (restart r of image b at ``r * B + b``) of each
    image's strongest restart: held beats not held, then the higher score; ties keep the
    earlier restart."""
    B = score.shape[0] // restarts
    pick = torch.arange(B, device=score.device)
    if restarts == 1:
        return pick
    score, held = score.view(restarts, B), held.view(restarts, B)
    win = torch.zeros(B, dtype=torch.long, device=score.device)
    for r in range(1, restarts):
        better = is_better(score[r], held[r], score[win, pick], held[win, pick])
        win = torch.where(better, torch.full_like(win, r), win)
    return win * B + pick


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
    check_input(x)
    B = x.shape[0]
    t_start = time.perf_counter()
    kinds, iters, num = _validate(x, kind, iterations, eps, lr, pgd_step, linf, quant, schedule,
                                  restarts, check_every, rate_tol, psnr_tol, to_uint8)
    # restarts are samples of one batch: index r * B + b
    B, R = x.shape[0], restarts
    xr = x.detach().repeat(R, 1, 1, 1) if R > 1 else x.detach()
    loop = AttackLoop(model, xr, kinds * R, iters * R, [s for s in range(R) for _ in range(B)],
                 [seed + r for r in range(R) for _ in range(B)], quant=quant, seed=seed,
                 schedule=schedule, keep_best=keep_best, check_every=check_every, **num)
    with attack_mode(model):
        res = loop.run(progress, to_uint8)
    pick = _best_restart(res["score"], res["held"], R)
    x_adv = res["x_adv"][pick].contiguous()
    noise_mse = (x_adv.double() - x.double()).pow(2).flatten(1).mean(1)
    return {
        "x_adv": x_adv,
        "noise_mse": noise_mse,
        "budget_use": noise_mse / num["eps"],
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
