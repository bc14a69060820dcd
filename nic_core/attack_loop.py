"""The batched attack loop: kind table, losses, strongest-iterate tracking, update steps.

Implements the iterations of the attacks on learned image codecs of Cao et al., "Enhancing
Adversarial Training with Prior Knowledge Distillation for Robust Image Compression"
(arXiv 2403.06700, sec. 2.3: the psnr attack, eq. 6, and the bpp attack, eq. 7), of Chen & Ma
2023 (the paper's ref. [1]) and of the PGD / FGSM / random-noise baselines, every kind in one
batch. :func:`nic_core.attacks.attack` is the entry point (it validates the arguments, runs
restarts as samples of one batch and documents the method); this module is its engine.
:mod:`nic_core.attack_budget` holds the budget geometry (projection, 8-bit rounding, starts).
"""
from __future__ import annotations

import contextlib
import math
import time
from typing import Dict

import torch
from tqdm.auto import tqdm

from . import attack_apgd as apgd
from .attack_budget import bview, init_noise, project_budget, random_noise, round_to_uint8
from .metrics import mse_per_sample, psnr
from .models import codec_forward

# kind -> (family, objective)
SPECS = {
    "psnr": ("adam", "psnr"),
    "bpp": ("adam", "bpp"),
    "ma2023": ("adam", "ma2023"),
    "pgd-psnr": ("pgd-linf", "psnr"),
    "pgd-bpp": ("pgd-linf", "bpp"),
    "pgd-l2-psnr": ("pgd-l2", "psnr"),
    "pgd-l2-bpp": ("pgd-l2", "bpp"),
    "apgd-psnr": ("apgd", "psnr"),
    "apgd-bpp": ("apgd", "bpp"),
    "fgsm-psnr": ("fgsm", "psnr"),
    "fgsm-bpp": ("fgsm", "bpp"),
    "noise": ("noise", None),
}

# PGD step = 2.5 * radius / iterations (Madry et al. 2017), for a constant step: under a decaying
# schedule divided by its mean factor, so the steps still add up to 2.5 radii (with cosine's
# half the travel, PGD missed the corner of a planted weakness: tests/test_attack_planted.py)
PGD_STEP_FACTOR = 2.5
SCHEDULE_MEAN = {"constant": 1.0, "cosine": 0.5, "plateau": 0.75}
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


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


@contextlib.contextmanager
def attack_mode(model: torch.nn.Module, channels_last: bool = True):
    """Eval mode, frozen parameters and channels_last for the attack; everything restored.

    Args:
        model: the codec; its modes, ``requires_grad`` flags and parameter memory formats are
            restored on exit (parameter values never change).
        channels_last: convert 4-d parameters to channels_last for the duration.
    """
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


def _loss(out, x, n, eps, x_hat0, bpp0, d0, masks, rate_tol=0.05, psnr_tol=1.0):
    """Per-sample attack loss [B] (normalised eq. 6 / eq. 7 / Chen & Ma / PGD objectives), and
    the (detached) distortion against ``x`` and rate of this forward.

    Args:
        out: ``codec_forward`` output of ``x + n`` (``x_hat``, ``bpp``).
        x: clean working batch; ``n``: its noise (requires grad).
        eps: MSE budget (the Adam kinds switch branch when ``mean(n^2) >= eps``).
        x_hat0, bpp0, d0: clean reconstruction, rate and distortion of ``x``.
        masks: per-sample bool masks ``adam`` / ``apgd`` / ``psnr`` / ``bpp`` / ``ma2023``
            (None: absent).
        rate_tol, psnr_tol: what "held" means; APGD's objective (hard budget, no branch)
            penalises the held quantity once past half its tolerance: the rate
            ``|bpp / bpp_ori - 1| > rate_tol / 2`` (psnr side), the distortion
            ``D* / D > 10^(psnr_tol / 20)`` (bpp side) (:mod:`nic_core.attack_apgd`).

    Returns:
        ``(loss [B], d [B], bpp [B])``; normalisations as in :mod:`nic_core.attacks`.
    """
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
    if masks["apgd"] is not None:
        l_apgd = torch.where(masks["bpp"] if masks["bpp"] is not None else
                             torch.zeros_like(masks["apgd"]),
                             bpp_in + apgd.hold_penalty_psnr(d, d0, psnr_tol),
                             psnr_in + apgd.hold_penalty_rate(bpp, bpp0, rate_tol))
        loss = torch.where(masks["apgd"], l_apgd, loss)
    if masks["ma2023"] is not None:
        d_ref = mse_per_sample(x_hat0, x_hat)  # distortion w.r.t. the clean reconstruction
        loss = torch.where(masks["ma2023"], torch.where(over, noise_term, 1.0 - d_ref / d0), loss)
    return loss, d.detach(), bpp.detach()


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


def is_better(score, held, best_score, best_held):
    """Held beats not held; then the higher score."""
    return (held & ~best_held) | ((held == best_held) & (score > best_score))


class AttackLoop:
    """State of one batched attack: settings per sample, the working batch, Adam moments and
    the strongest iterate so far. :meth:`run` does the whole attack (model in attack mode)."""

    def __init__(self, model, x, kinds, iters, starts, seeds, *, eps, lr, pgd_step, quant, seed,
                 linf, schedule, keep_best, rate_tol, psnr_tol, check_every):
        """Per-sample settings (``kinds``, ``iters``, ``starts``: restart index, ``seeds``);
        the keywords are :func:`nic_core.attacks.attack`'s, validated, ``lr`` resolved."""
        self.model, self.eps, self.quant, self.linf = model, eps, quant, linf
        self.schedule, self.keep_best = schedule, keep_best
        self.rate_tol, self.psnr_tol, self.check_every = rate_tol, psnr_tol, check_every
        self.x = x.contiguous(memory_format=torch.channels_last)
        self.iters, self.starts, self.seeds = iters, starts, seeds
        self.families = [SPECS[k][0] for k in kinds]
        self.objectives = [SPECS[k][1] for k in kinds]
        self.numel = x[0].numel()
        r_linf = min(math.sqrt(eps), linf) if linf is not None else math.sqrt(eps)
        self.radius = [r_linf if f in ("pgd-linf", "fgsm") else math.sqrt(eps)
                       for f in self.families]
        self.steps = []
        for f, it, r in zip(self.families, iters, self.radius):
            if f == "adam":
                self.steps.append(lr)
            elif f == "fgsm":
                self.steps.append(r)
            elif f == "apgd":  # L2 step over the whole image: 2 * radius first (Croce & Hein)
                self.steps.append(apgd.FIRST_STEP * r * math.sqrt(self.numel))
            elif f.startswith("pgd"):
                self.steps.append(pgd_step if pgd_step is not None else PGD_STEP_FACTOR * r
                                  / max(it, 1) / SCHEDULE_MEAN[schedule])
            else:
                self.steps.append(0.0)
        self.gen = (torch.Generator(device=x.device).manual_seed(int(seed))
                    if quant == "noise" else None)
        self.checkpoints = [set(apgd.checkpoints(it)) if f == "apgd" else set()
                            for f, it in zip(self.families, iters)]

    # -- helpers over the whole batch -------------------------------------------------------
    def _objective_masks(self, idx):
        """Objective -> bool mask over the samples ``idx`` (objectives present only)."""
        dev = self.x.device
        objs = {}
        for o in ("psnr", "bpp", "ma2023"):
            m = torch.tensor([self.objectives[b] == o for b in idx], device=dev)
            if bool(m.any()):
                objs[o] = m
        return objs

    def _judge(self, x, n, idx, to_uint8=False):
        """Project ``x + n`` on the budget (and the 8-bit grid), round-forward it, score it."""
        x_adv = project_budget(x, n, self.eps, self.linf)
        if to_uint8:
            x_adv = round_to_uint8(x, x_adv, self.eps)
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
        """Clean forward, start noise, the loop, random noise, then judge the final and the
        strongest iterate on the rounded codec (8-bit if ``to_uint8``); returns both merged."""
        x, B, dev = self.x, self.x.shape[0], self.x.device
        with torch.no_grad():
            clean = codec_forward(self.model, x, quant="round")
            self.x_hat0 = clean["x_hat"].clamp(0, 1)
            self.bpp0 = clean["bpp"].detach()
            self.d0 = mse_per_sample(x, self.x_hat0)
        n = init_noise(x, self.families, self.objectives, self.seeds, self.starts, self.radius,
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
            self.n_all[noise_idx] = torch.cat([random_noise(
                x[b:b + 1], self.eps, self.seeds[b], self.linf) for b in noise_idx]).to(
                memory_format=torch.channels_last)
        idx = list(range(B))
        final = self._judge(x, self.n_all, idx, to_uint8)
        final_it = torch.tensor(self.iters, device=dev)
        if self.keep_best and active:
            best = self._judge(x, self.best_all, idx, to_uint8)
            use = is_better(best["score"], best["held"], final["score"], final["held"])
            use &= torch.tensor([b in active for b in idx], device=dev)
            use &= self.best_it >= 0  # a sample that never had a candidate keeps its final
            for k in ("score", "held", "bpp", "psnr"):
                final[k] = torch.where(use, best[k], final[k])
            final["x_adv"] = torch.where(bview(use), best["x_adv"], final["x_adv"])
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
                      "apgd": mask(lambda f, o: f == "apgd"),
                      "psnr": mask(lambda f, o: o == "psnr"),
                      "bpp": mask(lambda f, o: o == "bpp"),
                      "ma2023": mask(lambda f, o: o == "ma2023")},
            "objectives": self._objective_masks(idx),
            "fam": {f: bview(torch.tensor([g == f for g in fam], device=dev)) for f in set(fam)},
            "step": bview(torch.tensor([self.steps[b] for b in idx], dtype=dt, device=dev)),
            "radius": bview(torch.tensor([self.radius[b] for b in idx], dtype=dt, device=dev)),
            "iters": torch.tensor([self.iters[b] for b in idx], dtype=dt, device=dev),
            "random_start": torch.tensor([self.starts[b] > 0 for b in idx], device=dev),
        }

    def _factor(self, i, w):
        """Step-size factor of iteration ``i`` per sample (cosine: 1 -> 0 over its iterations)."""
        if self.schedule == "constant":
            return 1.0
        if self.schedule == "cosine":
            return bview(0.5 * (1 + torch.cos(math.pi * i / w["iters"])))
        # "plateau": constant for the first half, then a cosine decay to zero
        t = (2 * i / w["iters"] - 1).clamp(min=0.0)
        return bview(0.5 * (1 + torch.cos(math.pi * t)))

    def _track(self, i, s, n, d, bpp, w):
        """Keep the working batch's strongest in-budget iterate (``n`` judged by d, bpp)."""
        score, held = _outcome(w["objectives"], d, bpp, w["d0"], w["bpp0"], self.rate_tol,
                               self.psnr_tol)
        ok = n.double().pow(2).flatten(1).mean(1) <= self.eps
        if i == 0:  # the near-zero start of restart 0 would "hold" trivially: not a candidate
            ok = ok & w["random_start"]
        better = ok & is_better(score, held, s["score"], s["held"])
        s["score"] = torch.where(better, score, s["score"])
        s["held"] = torch.where(better, held, s["held"])
        s["it"] = torch.where(better, torch.full_like(s["it"], i), s["it"])
        s["best"] = torch.where(bview(better), n, s["best"])

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
        if any(self.families[b] == "apgd" for b in pos):
            s.update(apgd.state(n, [self.steps[b] for b in pos]))
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
                                         w["d0"], w["masks"], self.rate_tol, self.psnr_tol)
                    (g,) = torch.autograd.grad(loss.sum() * float(numel), n_req)
                s["loss"] = loss.detach()
                if self.keep_best:
                    if self.quant == "ste":  # this forward is the rounded one: judge it free
                        self._track(i, s, n, d, bpp, w)
                    elif i % self.check_every == 0:
                        j = self._judge(x, n, pos)  # the projected iterate, rounded
                        self._track(i, s, j["x_adv"] - x, j["d"], j["bpp"], w)
                if "apgd" in w["fam"]:
                    apgd.control(i, s, n, g, torch.tensor(
                        [i in self.checkpoints[b] for b in pos], device=dev))
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
            u = n - step * math.sqrt(numel) * g / bview(gnorm)
            limit = w["radius"].flatten() * math.sqrt(numel)
            unorm = u.flatten(1).norm(dim=1).clamp_min(1e-20)
            upd["pgd-l2"] = u * bview((limit / unorm).clamp(max=1.0))
        if "apgd" in fam:
            upd["apgd"] = apgd.step(i, n, g, s, lambda u: project_budget(
                w["x"], u, self.eps, self.linf) - w["x"])
        if len(fam) == 1:
            new = upd[next(iter(fam))]
        else:
            new = n
            for f, sel in fam.items():
                new = torch.where(sel, upd[f], new)
        if self.linf is not None:
            new = new.clamp(-self.linf, self.linf)
        return (w["x"] + new).clamp_(0.0, 1.0).sub_(w["x"])  # stay in the image box

