"""Training losses of arXiv 2403.06700: rate-distortion, ``smooth_loss`` (eq. 1) and PKDT (eq. 3-5).

* :func:`rd_loss` -- CompressAI's ``RateDistortionLoss`` (the paper's RD_loss, eq. 2, Alg. 1 l. 6).
* :func:`smooth_loss` -- the gradient regulariser of eq. 1, ``d bpp_main/dx + dy/dx``, used to
  train the teacher (Stage I, Alg. 1 l. 5) and the fine-tuned student (Stage II, l. 19).
* :func:`pkdt_loss` -- the prior-knowledge distillation loss of eq. 3-5 (Alg. 1 l. 17-20).

All inputs come from :func:`nic_core.models.codec_forward`, the one forward.

Norms and normalisations of ``smooth_loss`` (the paper writes eq. 1 as a sum of two derivatives
and specifies neither norm nor scale; these are our choices). With ``D = 3*H*W`` the number of
input elements per image and ``m`` the number of elements of ``y`` per image:

* ``grad_bpp = mean_b  D * ||d bpp_main_b / d x_b||_2^2`` -- squared L2 norm of the input
  gradient of the per-sample ``bpp_main`` (bits of y per original pixel), times D. Meaning: the
  squared first-order change of ``bpp_main`` under the worst perturbation of unit RMS per element.
  It does not depend on the image size (bpp_main is a per-pixel mean, so its gradient entries
  scale as 1/(H*W)).
* ``grad_y = mean_b  ||d y_b / d x_b||_F^2 / m`` -- squared Frobenius norm of the Jacobian of
  the analysis transform, divided by m: the mean over latent elements of ``||grad_x y_k||^2``, equal
  to the expected mean-squared change of y per element under a Gaussian input perturbation of
  unit variance per element. Also size-free. It is estimated without bias by random projections
  (Hutchinson): ``E ||J^T v||^2 = E ||J u||^2 = ||J||_F^2`` for ``v ~ N(0, I_m)`` or
  ``u ~ N(0, I_D)``.
* ``loss = grad_bpp + grad_y``; the weight alpha/beta is applied by the caller (eq. 2, 5).

Squares rather than norms, as in Finlay & Oberman 2021 (ref. [21]): smooth where the gradient
vanishes, and the Frobenius term has an unbiased estimator only when squared.

Samples never interact in these codecs (GDN and the entropy models act per sample), so the batch
Jacobian is block diagonal and one batched backward gives all per-sample gradients.
"""
from __future__ import annotations

import contextlib
import math
from typing import Dict, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from compressai.ops import LowerBound

from .models import QUANT_MODES, codec_forward

SMOOTH_TERMS = ("bpp", "y")
SMOOTH_METHODS = ("fast", "fused", "exact")
DEFAULT_SMOOTH_METHOD = "fused"  # the one that meets the <= 2.0x step-cost target (bench training)
DEFAULT_H = 1e-3  # RMS per-element size of the finite-difference step, in units of x in [0, 1]


def rd_loss(out: Dict[str, torch.Tensor], x: torch.Tensor, lmbda: float) -> Dict[str, torch.Tensor]:
    """CompressAI's ``RateDistortionLoss``: ``lmbda * 255^2 * MSE + bpp`` (RD_loss of eq. 2).

    Args:
        out: output of ``codec_forward`` (uses ``x_hat`` and the per-sample ``bpp``).
        x: the original batch [B,3,H,W] in [0, 1].
        lmbda: rate-distortion trade-off (CompressAI's MSE lambdas, e.g.
            ``models.LMBDA_BY_QUALITY``), > 0.

    Returns:
        ``{"loss", "mse_loss", "bpp_loss"}`` scalars; ``mse_loss`` is the mean over all elements
        (``x_hat`` not clamped, as in CompressAI training), ``bpp_loss`` the batch mean of ``bpp``.
    """
    if not lmbda > 0:
        raise ValueError(f"lmbda must be > 0, got {lmbda!r}")
    if out["x_hat"].shape != x.shape:
        raise ValueError(f"x_hat {tuple(out['x_hat'].shape)} and x {tuple(x.shape)} differ")
    mse = F.mse_loss(out["x_hat"], x)
    bpp = out["bpp"].mean()
    return {"loss": lmbda * 255 ** 2 * mse + bpp, "mse_loss": mse, "bpp_loss": bpp}


@contextlib.contextmanager
def exact_bounds(model: torch.nn.Module):
    """Give CompressAI's ``LowerBound`` ops their true derivative while the context is active.

    ``LowerBound`` computes ``max(x, bound)`` but its backward also passes the gradient below
    the bound when it points up (a training heuristic, so clamped scales can recover). That rule
    depends on the sign of the incoming gradient, so the two passes of a finite difference, which
    receive opposite signs, get different masks and stop cancelling: the parameter gradient of
    the ``fast`` bpp term then grows like 1/h (measured x10 per decade of h through ``h_s``) while
    its value looks right. Inside this context ``LowerBound`` is ``torch.clamp(x, min=bound)``
    (gradient 1 for ``x >= bound``, else 0), recorded in the graph, so a later backward keeps it.
    Nests; affects the scale and likelihood bounds and the GDN reparametrisations.
    """
    patched = [(lb, lb.__dict__.get("forward")) for lb in model.modules()
               if isinstance(lb, LowerBound)]
    for lb, _ in patched:
        lb.forward = lambda x, _lb=lb: torch.clamp(x, min=_lb.bound)
    try:
        yield
    finally:
        for lb, prev in patched:
            if prev is None:
                lb.__dict__.pop("forward", None)
            else:
                lb.forward = prev


def _check_exact_bounds(out: Dict[str, torch.Tensor]) -> None:
    """Raise if the graph of ``out`` has a ``LowerBoundFunction`` node (CompressAI's heuristic)."""
    seen, stack = set(), [out["bpp_main"].grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        if "LowerBoundFunction" in type(fn).__name__:
            raise ValueError("`out` was computed with CompressAI's LowerBound gradient "
                             "heuristic; compute it under `with exact_bounds(model):`")
        seen.add(fn)
        stack.extend(f for f, _ in fn.next_functions)


class _NoSynthesis(torch.nn.Module):
    """Stand-in for ``g_s`` while ``smooth_loss`` re-runs the codec: x_hat is never used there."""

    def forward(self, y_hat):
        b, _, h, w = y_hat.shape
        return y_hat.new_zeros(b, 3, 16 * h, 16 * w)  # every codec in ARCHS upsamples by 16


@contextlib.contextmanager
def _without_synthesis(model: torch.nn.Module):
    """Skip the synthesis transform (about 60 % of a hyperprior forward) for rate/latent passes."""
    g_s = model.g_s
    model.g_s = _NoSynthesis()
    try:
        yield
    finally:
        model.g_s = g_s


def _check_terms(terms: Union[str, Sequence[str]]) -> tuple:
    terms = (terms,) if isinstance(terms, str) else tuple(terms)
    bad = [t for t in terms if t not in SMOOTH_TERMS]
    if bad:
        raise ValueError(f"unknown smooth_loss terms {bad}; choose from {SMOOTH_TERMS}")
    return terms


def _bmul(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Per-sample scalar [B] times a batch tensor."""
    return s.view(-1, *([1] * (t.dim() - 1))) * t


def _sq_norm(t: torch.Tensor) -> torch.Tensor:
    """Per-sample squared L2 norm [B]."""
    return t.flatten(1).pow(2).sum(1)


def smooth_loss(model: torch.nn.Module, x: torch.Tensor, quant: str = "noise",
                terms: Union[str, Sequence[str]] = SMOOTH_TERMS, method: str = DEFAULT_SMOOTH_METHOD,
                n_proj: int = 1, generator: Optional[torch.Generator] = None,
                create_graph: bool = True, out: Optional[Dict[str, torch.Tensor]] = None,
                h: float = DEFAULT_H) -> Dict[str, torch.Tensor]:
    """Gradient-smoothness regulariser of eq. 1: ``D ||d bpp_main/dx||^2 + ||dy/dx||_F^2 / m``.

    Norms and normalisations: see the module docstring (``grad_bpp``, ``grad_y``: batch means of
    per-sample, size-free quantities). Derivatives are true derivatives of the codec at one fixed
    quantisation-noise sample: every forward made here restarts ``generator`` from its state on
    entry (so all passes share the noise; a finite difference across two noise samples measures
    the noise, growing like 1/h^2) and runs under
    :func:`exact_bounds`.

    ``method="exact"`` (double backprop, ``create_graph=True``): ``grad_bpp`` from
    ``autograd.grad(bpp_main, x)``, exact; ``grad_y`` from ``n_proj`` vector-Jacobian products
    ``J^T v``, ``v ~ N(0, I_m)`` on the latent side: unbiased, not exact.

    ``method="fused"``: one double-backprop VJP per projection with the summed cotangent
    (``sqrt(D)`` on bpp_main, ``v / sqrt(m)`` on y): ``w = sqrt(D) g + J^T v / sqrt(m)`` and
    ``E ||w||^2 = D ||g||^2 + ||J||_F^2 / m`` (the cross term has mean 0), so ``loss`` is
    unbiased in value and parameter gradient for the price of ``exact``'s bpp term alone. The
    terms are not separable: ``grad_bpp`` and ``grad_y`` are NaN (with one term, fused is exact).

    ``method="fast"`` (finite differences, Finlay & Oberman 2021, the paper's ref. [21]; only
    first-order backprop through the parameters):

    * bpp: ``g = d bpp_main/dx`` WITHOUT ``create_graph`` (detached), ``d = g/||g||``, one
      perturbed forward at ``x + s d`` with ``s = h sqrt(D)``; ``(bpp_main(x + s d) -
      bpp_main(x)) / s`` estimates ``g.d = ||g||`` with O(h) bias, and its parameter gradient
      ``d.(dg/dtheta) = d||g||/dtheta`` (d is the gradient direction), so it is nearly noise
      free. On a trained hyperprior its parameter gradient departs from ``exact``'s more than
      on a random one: ``h_a`` sees ``|y|``, trained latents crowd the kink at 0, which the
      difference quotient smooths over and double backprop (an almost-everywhere derivative)
      ignores (measurements: docs/protocol.md, section Losses).
    * y: ``n_proj`` forwards at ``x + h u``, ``u ~ N(0, I_D)``; ``(y(x + h u) - y(x)) / h ~ J u``
      and ``E ||J u||^2 = ||J||_F^2``: unbiased up to O(h). Its parameter gradient is noisier
      than the exact VJP's, for less cost.

    The two terms use separate steps on purpose: one shared step ``d + (I - d d^T) v`` is
    unbiased for both but adds ``v.(dg/dtheta)`` to the bpp parameter gradient, larger than the
    signal. The clean pass ``out`` is reused (pass the training step's forward); perturbed
    passes skip the synthesis transform (x_hat is not needed). ``h`` is the RMS per-element
    size of every step, in units of x. ``quant="round"`` raises (rounding makes bpp piecewise
    constant: a difference is 0 or a jump, e.g. 0 at h=1e-3 and 40x the gradient at 1e-2), and so
    does ``"ste"`` with the bpp term (STE rounds in the forward pass, so the difference sees the
    same jumps, not the straight-through surrogate that ``exact`` differentiates); the y term
    precedes quantisation and works with ``"ste"``.

    Cost per method over a plain RD step and per-draw gradient noise: ``python -m nic_core.bench
    training`` (results/bench_training.json, docs/benchmarks.md).

    A training step that forwards once (the RD loss then also runs under ``exact_bounds``, i.e.
    without CompressAI's LowerBound gradient heuristic; to keep it, call without ``out``, which
    costs one more partial forward and backward)::

        x.requires_grad_(True)                    # d bpp_main/dx needs the clean graph to x
        with exact_bounds(model):
            out = codec_forward(model, x, "noise", generator=torch.Generator().manual_seed(s))
        loss = rd_loss(out, x, lmbda)["loss"] + alpha * smooth_loss(
            model, x, out=out, generator=torch.Generator().manual_seed(s))["loss"]
        loss.backward()

    Args:
        model: codec (``build_model``); its mode (train/eval) does not matter.
        x: batch [B,3,H,W] in [0, 1]. With ``out`` and the bpp term (or double backprop), the
            tensor ``out`` was computed from, with ``requires_grad=True``.
        quant: quantisation of every forward (``models.QUANT_MODES``); ``"noise"`` to train.
        terms: subset of ``("bpp", "y")`` (ablations "w/o dy/dx", "w/o dbpp_main/dx"). A term
            left out is exactly 0 and costs nothing; ``terms=()`` returns zeros without running
            the model (so "w/o smooth_loss" can be ``terms=()`` too).
        method: ``"fast"``, ``"fused"`` or ``"exact"``.
        n_proj: random projections for ``grad_y`` (each one VJP in ``exact`` and ``fused``, one
            forward in ``fast``), drawn from torch's global RNG (seed with ``torch.manual_seed``).
        generator: noise RNG. With ``out`` and ``"noise"``: required, in the state used for
            ``out`` (e.g. a fresh generator seeded like the one given to ``codec_forward``).
            ``None`` without ``out``: a generator seeded from the global RNG.
        create_graph: True for training (``loss.backward()`` reaches the parameters); False
            returns detached values (monitoring).
        out: optional ``codec_forward(model, x, quant, generator)`` of the clean batch, computed
            under ``exact_bounds(model)``, to reuse.
        h: finite-difference step of ``fast`` (RMS per element), > 0.

    Returns:
        ``{"loss", "grad_bpp", "grad_y"}`` scalars, ``loss = grad_bpp + grad_y``.
    """
    terms = _check_terms(terms)
    if method not in SMOOTH_METHODS:
        raise ValueError(f"method must be one of {SMOOTH_METHODS}, got {method!r}")
    if quant not in QUANT_MODES:
        raise ValueError(f"quant must be one of {QUANT_MODES}, got {quant!r}")
    if not (isinstance(n_proj, int) and n_proj >= 1):
        raise ValueError(f"n_proj must be an int >= 1, got {n_proj!r}")
    if not h > 0:
        raise ValueError(f"h must be > 0, got {h!r}")
    if method == "fast" and (quant == "round" or (quant == "ste" and "bpp" in terms)):
        raise ValueError(f"method='fast' uses finite differences, which through quant={quant!r} "
                         "measure rounding jumps, not gradients; use quant='noise' or "
                         "method='exact'")
    zero = x.new_zeros(())
    if not terms:
        return {"loss": zero, "grad_bpp": zero, "grad_y": zero}
    if out is not None and quant == "noise" and generator is None:
        raise ValueError("with a precomputed `out` and quant='noise', pass the generator in the "
                         "state used for `out`, so that every pass shares its noise sample")
    if quant == "noise" and generator is None:
        generator = torch.Generator(device=x.device)
        generator.manual_seed(int(torch.randint(0, 2 ** 62, ())))
    state = generator.get_state() if generator is not None else None

    def forward(inp):
        if state is not None:
            generator.set_state(state)
        with exact_bounds(model):
            return codec_forward(model, inp, quant, generator)

    need_x_graph = method != "fast" or "bpp" in terms
    if out is None:
        x = x.detach().requires_grad_(need_x_graph)
        with torch.set_grad_enabled(create_graph or need_x_graph):
            out = forward(x)
    else:
        if need_x_graph and not x.requires_grad:
            raise ValueError("`out` must be computed from x with x.requires_grad_(True) here, "
                             "since d bpp_main/dx (or double backprop) needs its graph to x")
        _check_exact_bounds(out)
    n_in, n_lat = x[0].numel(), out["y"][0].numel()  # D and m of the module docstring

    if method == "fused" and len(set(terms)) == 2:
        loss = _smooth_fused(x, out, n_in, n_lat, n_proj, create_graph)
        nan = x.new_tensor(float("nan"))  # not separable
        return {"loss": loss if create_graph else loss.detach(), "grad_bpp": nan, "grad_y": nan}
    if method != "fast":  # exact; fused with a single term is the same
        grad_bpp, grad_y = _smooth_exact(x, out, terms, n_in, n_lat, n_proj, create_graph)
    else:
        grad_bpp, grad_y = _smooth_fast(model, forward, x, out, terms, n_in, n_lat, n_proj, h,
                                        create_graph)
    loss = grad_bpp + grad_y
    if not create_graph:
        loss, grad_bpp, grad_y = loss.detach(), grad_bpp.detach(), grad_y.detach()
    return {"loss": loss, "grad_bpp": grad_bpp, "grad_y": grad_y}


def _smooth_fused(x, out, n_in, n_lat, n_proj, create_graph):
    """Both terms in one double-backprop VJP per projection: cotangents sqrt(D) on bpp_main and
    v / sqrt(m) on y, so E ||w||^2 = D ||g||^2 + ||J||_F^2 / m (the cross term has mean 0)."""
    acc = x.new_zeros(())
    for _ in range(n_proj):
        v = torch.randn_like(out["y"]) / math.sqrt(n_lat)
        w, = torch.autograd.grad([out["bpp_main"].sum(), out["y"]], x,
                                 [x.new_tensor(math.sqrt(n_in)), v],
                                 create_graph=create_graph, retain_graph=True)
        acc = acc + _sq_norm(w).mean()
    return acc / n_proj


def _smooth_exact(x, out, terms, n_in, n_lat, n_proj, create_graph):
    """Double backprop: d bpp_main/dx exactly, ||dy/dx||_F^2 from n_proj VJPs J^T v."""
    grad_bpp = grad_y = x.new_zeros(())
    if "bpp" in terms:
        g, = torch.autograd.grad(out["bpp_main"].sum(), x, create_graph=create_graph,
                                 retain_graph=True)
        grad_bpp = n_in * _sq_norm(g).mean()
    if "y" in terms:
        acc = x.new_zeros(())
        for _ in range(n_proj):
            v = torch.randn_like(out["y"])
            jtv, = torch.autograd.grad(out["y"], x, v, create_graph=create_graph,
                                       retain_graph=True)
            acc = acc + _sq_norm(jtv).mean()
        grad_y = acc / (n_proj * n_lat)
    return grad_bpp, grad_y


def _smooth_fast(model, forward, x, out, terms, n_in, n_lat, n_proj, h, create_graph):
    """Finite differences (Finlay & Oberman): bpp along its own gradient direction, y along
    random directions; only first-order backprop through the parameters."""
    grad_bpp = grad_y = x.new_zeros(())
    x0 = x.detach()
    if "bpp" in terms:  # one step of L2 norm h*sqrt(D) along d = g/||g||
        g, = torch.autograd.grad(out["bpp_main"].sum(), x, retain_graph=True)
        d = _bmul(1.0 / g.flatten(1).norm(dim=1).clamp_min(1e-30), g)
        step = h * math.sqrt(n_in)
        with torch.set_grad_enabled(create_graph), _without_synthesis(model):
            pert = forward(x0 + step * d)
        slope = (pert["bpp_main"] - out["bpp_main"]) / step  # ~ g.d = ||g||, per sample
        grad_bpp = n_in * slope.pow(2).mean()
    if "y" in terms:  # forward differences along u ~ N(0, I_D): ~ J u
        acc = x.new_zeros(())
        for _ in range(n_proj):
            u = torch.randn_like(x0)
            with torch.set_grad_enabled(create_graph), _without_synthesis(model):
                pert = forward(x0 + h * u)
            acc = acc + _sq_norm((pert["y"] - out["y"]) / h).mean()
        grad_y = acc / (n_proj * n_lat)
    return grad_bpp, grad_y


def pkdt_loss(out_student: Dict[str, torch.Tensor], x_new: torch.Tensor,
              bpp_teacher: torch.Tensor, alpha: float, beta: float = 0.0,
              smooth: Optional[Union[Dict[str, torch.Tensor], torch.Tensor]] = None
              ) -> Dict[str, torch.Tensor]:
    """Prior-knowledge distillation loss of Stage II, eq. 3-5 (Alg. 1 l. 16-20).

    ``loss = D_loss + alpha * R_loss + beta * smooth_loss`` with

    * ``D_loss = mean |x_new - x_hat|`` (eq. 3): the paper's ``||x - x_hat||_1`` normalised to
      the mean absolute error per element (``F.l1_loss``), so that alpha does not depend on the
      image size or batch size. ``x_hat`` is the student's reconstruction of ``x_new``, unclamped.
    * ``R_loss = mean_b |bpp_tc_b - bpp_ft_b|`` (eq. 4): per-sample absolute rate difference,
      averaged over the batch, with ``bpp`` the total estimated rate (``out["bpp"]``, y and z
      bits per original pixel) of the teacher on the clean ``x_ori`` and of the student on
      ``x_new`` (Alg. 1 l. 16).
    * ``smooth_loss``: eq. 1 on the student (:func:`smooth_loss`), weighted by beta.

    Args:
        out_student: ``codec_forward(student, x_new, ...)``; uses ``x_hat`` and ``bpp``.
        x_new: the student's input batch [B,3,H,W] (adversarial and clean samples).
        bpp_teacher: [B] teacher rate on ``x_ori``, without grad (e.g. under
            ``torch.no_grad()``): the teacher never receives gradients.
        alpha, beta: weights of R_loss and smooth_loss, >= 0.
        smooth: output dict of :func:`smooth_loss` (its ``"loss"``) or a scalar tensor;
            required when ``beta != 0``.

    Returns:
        ``{"loss", "d_loss", "r_loss", "smooth_loss"}`` scalars (``smooth_loss`` is 0 when
        ``smooth`` is None).
    """
    x_hat, bpp_ft = out_student["x_hat"], out_student["bpp"]
    if x_hat.shape != x_new.shape:
        raise ValueError(f"x_hat {tuple(x_hat.shape)} and x_new {tuple(x_new.shape)} differ")
    if not isinstance(bpp_teacher, torch.Tensor) or bpp_teacher.shape != bpp_ft.shape:
        raise ValueError(f"bpp_teacher must be a tensor of shape {tuple(bpp_ft.shape)} (one "
                         f"rate per sample), got {getattr(bpp_teacher, 'shape', bpp_teacher)}")
    if bpp_teacher.requires_grad:
        raise ValueError("bpp_teacher requires grad: the teacher must not be trained; compute "
                         "it under torch.no_grad() or pass bpp_teacher.detach()")
    if not (alpha >= 0 and beta >= 0):
        raise ValueError(f"alpha and beta must be >= 0, got {alpha!r}, {beta!r}")
    if isinstance(smooth, dict):
        smooth = smooth["loss"]
    if smooth is None:
        if beta != 0:
            raise ValueError("beta != 0 needs `smooth` (the output of smooth_loss)")
        smooth = x_hat.new_zeros(())
    elif not (isinstance(smooth, torch.Tensor) and smooth.dim() == 0):
        raise ValueError("smooth must be smooth_loss's dict or a scalar tensor")
    d_loss = F.l1_loss(x_hat, x_new)
    r_loss = (bpp_teacher - bpp_ft).abs().mean()
    loss = d_loss + alpha * r_loss
    if beta != 0:
        loss = loss + beta * smooth
    return {"loss": loss, "d_loss": d_loss, "r_loss": r_loss, "smooth_loss": smooth}
