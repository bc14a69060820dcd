"""APGD for codecs: a step-size-free attack (Croce & Hein 2020, "Reliable evaluation of
adversarial robustness with an ensemble of diverse parameter-free attacks", Algorithm 1).

Kinds ``apgd-psnr`` / ``apgd-bpp`` of :func:`nic_core.attacks.attack` minimise the in-budget
objective of eq. 6 / eq. 7 of arXiv 2403.06700 (``1 - D*/D``, ``-bpp/bpp_ori``) on the budget's
hard geometry (MSE ball, image box, optional L-inf; :mod:`nic_core.attack_budget`), with the
held quantity as a penalty instead of eq. 6/7's branch switch: the rate deviation past half its
tolerance (psnr side), the distortion ratio past half the PSNR tolerance in dB (bpp side),
:data:`HOLD_WEIGHT` per tolerance. The step: normalised L2 gradient steps of ``eta`` (first
``2 R``, R the ball's L2 radius) with momentum :data:`ALPHA`; at checkpoints
(:func:`checkpoints`) the step halves and the search restarts from the best point when fewer
than :data:`RHO` of the steps since the last checkpoint improved the loss, or when the step was
not halved last time and the best loss has not moved. No step size, no schedule to tune.
The loop (:mod:`nic_core.attack_loop`) keeps this state in its per-sample dict ``s``.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, List

import torch

from .attack_budget import bview

ALPHA, RHO = 0.75, 0.75
FIRST_STEP = 2.0  # times the ball's L2 radius
HOLD_WEIGHT = 10.0  # penalty per tolerance unit once past half the held tolerance


def checkpoints(iterations: int) -> List[int]:
    """The iterations where APGD may halve its step: w_j = ceil(p_j N), p_0 = 0, p_1 = 0.22,
    p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06) (Croce & Hein 2020, sec. 3.2)."""
    p = [0.0, 0.22]
    while p[-1] < 1:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    w = {math.ceil(q * iterations) for q in p[1:]}
    return sorted(i for i in w if i < iterations)


def hold_penalty_rate(bpp, bpp0, rate_tol: float):
    """psnr side: the rate held, ``|bpp / bpp_ori - 1|`` past ``rate_tol / 2``."""
    return HOLD_WEIGHT * ((bpp - bpp0).abs() / bpp0 - rate_tol / 2).clamp_min(0) / rate_tol


def hold_penalty_psnr(d, d0, psnr_tol: float):
    """bpp side: the PSNR held, ``D* / D`` past ``10^(psnr_tol / 20)`` (half the drop in dB)."""
    over = (d / d0 - 10 ** (psnr_tol / 20)).clamp_min(0)
    return HOLD_WEIGHT * over / (10 ** (psnr_tol / 10) - 1)


def state(n: torch.Tensor, steps: List[float]) -> Dict[str, torch.Tensor]:
    """The per-sample APGD state of a working batch with noise ``n`` and first steps ``steps``."""
    B, dt, dev = n.shape[0], n.dtype, n.device
    inf = torch.full((B,), math.inf, dtype=dt, device=dev)
    return {"prev": n.clone(), "nbest": n.clone(), "gbest": torch.zeros_like(n),
            "fbest": inf.clone(), "fprev": inf.clone(), "fbest_ck": inf.clone(),
            "eta": torch.tensor(steps, dtype=dt, device=dev),
            "succ": torch.zeros(B, dtype=dt, device=dev),
            "last_ck": torch.zeros(B, dtype=dt, device=dev),
            "reduced": torch.zeros(B, dtype=torch.bool, device=dev),
            "reset": torch.zeros(B, dtype=torch.bool, device=dev)}


def control(i: int, s: Dict[str, torch.Tensor], n, g, at_checkpoint: torch.Tensor) -> None:
    """Bookkeeping at iteration ``i`` after the forward at ``n`` (loss ``s["loss"]``, gradient
    ``g``): the best point and its gradient, the improving steps, and at the samples'
    checkpoints the halving decision (``s["reset"]``: the next step starts from the best)."""
    f = s["loss"]
    better = f < s["fbest"]
    s["fbest"] = torch.where(better, f, s["fbest"])
    s["nbest"] = torch.where(bview(better), n, s["nbest"])
    s["gbest"] = torch.where(bview(better), g, s["gbest"])
    if i > 0:
        s["succ"] = s["succ"] + (f < s["fprev"]).to(f.dtype)
    s["fprev"] = f
    ck = at_checkpoint
    s["reset"] = torch.zeros_like(ck)
    if bool(ck.any()):
        few = s["succ"] < RHO * (i - s["last_ck"])
        stuck = ~s["reduced"] & (s["fbest"] >= s["fbest_ck"])
        halve = ck & (few | stuck)
        s["eta"] = torch.where(halve, s["eta"] / 2, s["eta"])
        s["reset"] = halve
        s["reduced"] = torch.where(ck, halve, s["reduced"])
        s["succ"] = torch.where(ck, torch.zeros_like(s["succ"]), s["succ"])
        s["last_ck"] = torch.where(ck, torch.full_like(s["last_ck"], i), s["last_ck"])
        s["fbest_ck"] = torch.where(ck, s["fbest"], s["fbest_ck"])


def step(i: int, n, g, s: Dict[str, torch.Tensor],
         project: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """The next noise: a normalised gradient step of ``eta`` (descent on the loss), projected,
    then momentum (none on the first step and after a restart from the best point)."""
    reset = bview(s["reset"])
    base = torch.where(reset, s["nbest"], n)
    grad = torch.where(reset, s["gbest"], g)
    gn = grad.flatten(1).norm(dim=1).clamp_min(1e-20)
    z = project(base - bview(s["eta"] / gn) * grad)
    if i > 0:
        mom = project(base + ALPHA * (z - base) + (1 - ALPHA) * (base - s["prev"]))
        z = torch.where(reset, z, mom)
    s["prev"] = base
    return z
