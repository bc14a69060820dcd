"""Tests of nic_core.losses (rd_loss, smooth_loss eq. 1, pkdt_loss eq. 3-5 of arXiv 2403.06700).

Tiny random codecs (hyper, N=16, M=24) on 2 x 3 x 64 x 64 batches; the file runs in about ten
seconds on one CPU core. Timings are not tested (see the report / nic_core.bench).
"""
import contextlib
import math

import pytest
import torch

import nic_core.losses as losses
from nic_core.losses import exact_bounds, pkdt_loss, rd_loss, smooth_loss
from nic_core.models import build_model, codec_forward


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny convolutions on shared cores: OpenMP spin-waiting makes 2 threads ~100x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def gen(seed=123):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    model = build_model("hyper", N=16, M=24)
    with torch.no_grad():  # at init h_s's ReLU gives scales ~0, all clamped to the 0.11 bound:
        model.h_s[4].bias.fill_(0.11)  # put them around the bound, half clamped, half live
    return model


@pytest.fixture(scope="module")
def x():
    torch.manual_seed(1)
    return torch.rand(2, 3, 64, 64)


@pytest.fixture(scope="module")
def exact_bpp(model, x):
    """Exact grad_bpp (double backprop) at the noise sample of gen()."""
    return float(smooth_loss(model, x, terms="bpp", method="exact", generator=gen(),
                             create_graph=False)["grad_bpp"])


def frobenius_sq(model, x):
    """Exact mean_b ||dy_b/dx_b||_F^2 / m from the full Jacobian (replica k differentiates y_k);
    differentiable w.r.t. the parameters."""
    vals = []
    for xb in x:
        m = codec_forward(model, xb[None], "round")["y"][0].numel()
        xr = xb[None].repeat(m, 1, 1, 1).requires_grad_(True)
        with exact_bounds(model):  # GDN reparametrisations: true derivatives, as smooth_loss
            y = codec_forward(model, xr, "round")["y"].flatten(1)
        (g,) = torch.autograd.grad(y.diagonal().sum(), xr, create_graph=True)
        vals.append(g.pow(2).sum() / m)
    return torch.stack(vals).mean()


@pytest.fixture(scope="module")
def frobenius(model, x):
    """(value, flat parameter gradient) of the exact dy/dx term."""
    val = frobenius_sq(model, x)
    return val.item(), flat_grad(model, val)


def param_grads(model, loss):
    params = [p for p in model.parameters()]
    grads = torch.autograd.grad(loss, params, allow_unused=True, retain_graph=True)
    return {n: g for (n, _), g in zip(model.named_parameters(), grads)}


def flat_grad(model, loss):
    grads = torch.autograd.grad(loss, list(model.parameters()), allow_unused=True,
                                retain_graph=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).flatten()
                      for p, g in zip(model.parameters(), grads)])


def count_g_a_calls(model):
    calls = []
    handle = model.g_a.register_forward_hook(lambda *a: calls.append(1))
    return calls, handle


# ------------------------------------------------------------------------------------ rd_loss

def test_rd_loss_matches_hand_computation(model, x):
    out = codec_forward(model, x, "noise", generator=gen())
    lmbda = 0.0067
    res = rd_loss(out, x, lmbda)
    b, _, h, w = x.shape
    mse = ((out["x_hat"] - x) ** 2).sum() / x.numel()
    bits = sum((-torch.log2(lk)).sum() for lk in out["likelihoods"].values())
    bpp = bits / (b * h * w)  # CompressAI: num_pixels = N * H * W
    torch.testing.assert_close(res["mse_loss"], mse)
    torch.testing.assert_close(res["bpp_loss"], bpp)
    torch.testing.assert_close(res["loss"], lmbda * 255 ** 2 * mse + bpp)
    with pytest.raises(ValueError, match="lmbda"):
        rd_loss(out, x, 0.0)
    with pytest.raises(ValueError, match="differ"):
        rd_loss(out, x[:, :, :32], lmbda)


# ------------------------------------------------------------------------------- smooth_loss

@pytest.fixture(scope="module")
def exact_bpp_grad(model, x):
    return flat_grad(model, smooth_loss(model, x, terms="bpp", method="exact",
                                        generator=gen())["loss"])


def test_fast_bpp_term_matches_exact_value_and_gradient(model, x, exact_bpp, exact_bpp_grad):
    # Deterministic at a fixed noise sample. The forward difference has an O(h) bias: measured
    # (value / parameter gradient, relative) 1.3e-1 / 1.0e-1 at h=1e-2, 1.2e-2 / 1.0e-2 at the
    # default h=1e-3, 2e-3 / 2e-3 at h=1e-4; 3 % leaves room for other seeds.
    fast = smooth_loss(model, x, method="fast", terms="bpp", generator=gen())
    assert exact_bpp > 0
    assert abs(fast["grad_bpp"].item() / exact_bpp - 1) < 0.03
    g = flat_grad(model, fast["loss"])
    assert (g - exact_bpp_grad).norm() < 0.03 * exact_bpp_grad.norm()
    names = [n for n, _ in model.named_parameters()]
    sizes = [p.numel() for p in model.parameters()]
    for group in ("g_a.", "h_s."):  # the rate path through the scales is live and correct
        mask = torch.cat([torch.full((k,), n.startswith(group)) for n, k in zip(names, sizes)])
        assert (g - exact_bpp_grad)[mask].norm() < 0.05 * exact_bpp_grad[mask].norm(), group


def test_lower_bound_heuristic_breaks_finite_difference_gradients(model, x, exact_bpp_grad,
                                                                 monkeypatch):
    # Why smooth_loss runs under exact_bounds: with CompressAI's LowerBound backward the two
    # passes get different masks and the parameter gradient is off by O(1/h) (value still fine).
    monkeypatch.setattr(losses, "exact_bounds", lambda model: contextlib.nullcontext())
    g = flat_grad(model, smooth_loss(model, x, method="fast", terms="bpp", generator=gen())["loss"])
    assert (g - exact_bpp_grad).norm() > 1.0 * exact_bpp_grad.norm()


def test_on_a_trained_codec_fused_is_unbiased_and_fast_only_in_value(smoke_model, kodak_small):
    # A trained hyperprior on real photos. h_a sees |y| and trained latents crowd its kink at 0,
    # so the parameter gradient of fast's difference quotient (smoothed over the kink) and that
    # of double backprop (kink ignored) part ways: measured cosine 0.90-0.98 on one smoke model,
    # -0.30 on another. The value still agrees. This is why the default is ``fused``, whose
    # value and parameter gradient are unbiased estimates of exact's (mean of 16 draws here).
    model, x = smoke_model, kodak_small
    exact = smooth_loss(model, x, terms="bpp", method="exact", generator=gen())
    fast = smooth_loss(model, x, method="fast", terms="bpp", generator=gen())
    # value: O(h) bias plus the kink; 1-4 % on smoke codecs trained on different crops, and a
    # wrong slope (a sign or a factor) would be off by >= 50 %
    assert abs(fast["grad_bpp"].item() / exact["grad_bpp"].item() - 1) < 0.06
    torch.manual_seed(11)
    draws = 16
    g_exact = sum(flat_grad(model, smooth_loss(model, x, method="exact", generator=gen())["loss"])
                  for _ in range(draws)) / draws
    g_fused = sum(flat_grad(model, smooth_loss(model, x, method="fused", generator=gen())["loss"])
                  for _ in range(draws)) / draws
    assert torch.nn.functional.cosine_similarity(g_fused, g_exact, dim=0) > 0.98
    assert (g_fused - g_exact).norm() < 0.15 * g_exact.norm()


@pytest.mark.parametrize("method", ["exact", "fast"])
def test_grad_y_is_unbiased_in_value_and_gradient(model, x, frobenius, method):
    # Random projections (Hutchinson), unbiased for ||J||_F^2 / m and for its parameter
    # gradient; the reference is the full Jacobian. Value: the mean of 32 calls must be
    # within 4 standard errors (probability < 1e-3 even with Student-t tails at 31 dof), plus
    # 1 % finite-difference bias for `fast`, and the standard error must be small, so the check
    # has teeth. Gradient: E||mean - exact||^2 = tr(Cov)/32; allow 3x (plus the O(h) bias).
    value, grad = frobenius
    torch.manual_seed(3)
    vals, grads = [], []
    for _ in range(32):
        res = smooth_loss(model, x, terms="y", method=method, n_proj=4, generator=gen())
        vals.append(res["grad_y"].item())
        grads.append(flat_grad(model, res["loss"]))
    vals, grads = torch.tensor(vals), torch.stack(grads)
    mean, se = vals.mean().item(), vals.std().item() / math.sqrt(len(vals))
    assert se < 0.05 * value
    bias = 0.01 if method == "fast" else 0.0
    assert abs(mean - value) < 4 * se + bias * value, (mean, value, se)
    err2 = (grads.mean(0) - grad).pow(2).sum()
    expected2 = grads.var(0).sum() / len(grads)
    assert expected2 < 0.1 * grad.pow(2).sum()  # the draws are informative
    assert err2 < 3 * expected2 + (bias * grad.norm()) ** 2, (err2, expected2)


def test_fused_is_unbiased_for_the_sum_and_exact_for_one_term(model, x, exact_bpp,
                                                              exact_bpp_grad, frobenius):
    value = exact_bpp + frobenius[0]
    grad = exact_bpp_grad + frobenius[1]
    torch.manual_seed(4)
    vals, grads = [], []
    for _ in range(32):
        res = smooth_loss(model, x, method="fused", generator=gen())
        assert math.isnan(res["grad_bpp"].item()) and math.isnan(res["grad_y"].item())
        vals.append(res["loss"].item())
        grads.append(flat_grad(model, res["loss"]))
    vals, grads = torch.tensor(vals), torch.stack(grads)
    se = vals.std().item() / math.sqrt(len(vals))  # same statistics as the dy/dx test above
    assert se < 0.05 * value and abs(vals.mean().item() - value) < 4 * se
    expected2 = grads.var(0).sum() / len(grads)
    assert expected2 < 0.1 * grad.pow(2).sum()
    assert (grads.mean(0) - grad).pow(2).sum() < 3 * expected2
    for term in ("bpp", "y"):  # a single term has no cross term: exactly `exact`
        torch.manual_seed(5)
        fused = smooth_loss(model, x, terms=term, method="fused", generator=gen())
        torch.manual_seed(5)
        exact = smooth_loss(model, x, terms=term, method="exact", generator=gen())
        torch.testing.assert_close(fused["loss"], exact["loss"])
        torch.testing.assert_close(flat_grad(model, fused["loss"]), flat_grad(model, exact["loss"]))


def test_finite_difference_converges_only_with_shared_noise(model, x, exact_bpp):
    errors = []
    for h in (1e-1, 1e-2, 1e-3):
        fd = smooth_loss(model, x, method="fast", terms="bpp", generator=gen(), h=h,
                         create_graph=False)
        errors.append(abs(float(fd["grad_bpp"]) / exact_bpp - 1))
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.02
    # The trap: a clean pass with one noise sample and a perturbed pass with another. The
    # difference then measures the noise divided by the step, not the gradient: already an
    # order of magnitude off at the default h, and diverging as h shrinks (like 1/h^2).
    xg = x.clone().requires_grad_(True)
    with exact_bounds(model):
        out = codec_forward(model, xg, "noise", generator=gen(1))
    unshared = [float(smooth_loss(model, xg, method="fast", terms="bpp", out=out,
                                  generator=gen(2), h=h, create_graph=False)["grad_bpp"])
                for h in (1e-3, 1e-4)]
    assert unshared[0] > 10 * exact_bpp
    assert unshared[1] > 50 * unshared[0]


@pytest.mark.parametrize("method", ["fast", "fused", "exact"])
def test_reusing_the_clean_forward_gives_the_same_value_and_gradient(model, x, method):
    torch.manual_seed(5)
    ref = smooth_loss(model, x, generator=gen(7), method=method)
    xg = x.clone().requires_grad_(True)
    with exact_bounds(model):
        out = codec_forward(model, xg, "noise", generator=gen(7))
    torch.manual_seed(5)
    reused = smooth_loss(model, xg, out=out, generator=gen(7), method=method)
    assert torch.isfinite(reused["loss"]) and reused["loss"] > 0
    for k in ("grad_bpp", "grad_y", "loss"):  # fused: the terms are NaN (not separable)
        torch.testing.assert_close(reused[k], ref[k], equal_nan=True)
    torch.testing.assert_close(flat_grad(model, reused["loss"]), flat_grad(model, ref["loss"]))
    with pytest.raises(ValueError, match="generator"):
        smooth_loss(model, xg, out=out)
    with pytest.raises(ValueError, match="requires_grad"):
        smooth_loss(model, x, out=codec_forward(model, x, "noise", generator=gen(7)),
                    generator=gen(7))
    with pytest.raises(ValueError, match="exact_bounds"):
        smooth_loss(model, xg, out=codec_forward(model, xg, "noise", generator=gen(7)),
                    generator=gen(7))


@pytest.mark.parametrize("method", ["exact", "fast"])
def test_terms_switch_removes_each_term_exactly(model, x, method):
    def run(terms):
        torch.manual_seed(6)  # same projection vectors in every call
        return smooth_loss(model, x, terms=terms, method=method, generator=gen())

    both, only_y, only_bpp = run(("bpp", "y")), run("y"), run("bpp")
    assert only_y["grad_bpp"].item() == 0 and only_bpp["grad_y"].item() == 0
    assert both["grad_bpp"].item() > 0 and both["grad_y"].item() > 0
    for alone, term in ((only_y, "grad_y"), (only_bpp, "grad_bpp")):
        torch.testing.assert_close(alone["loss"], both[term])
        g_alone, g_both = param_grads(model, alone["loss"]), param_grads(model, both[term])
        for name, g in g_both.items():
            if g is None:
                assert g_alone[name] is None, name
            else:
                torch.testing.assert_close(g_alone[name], g, msg=name)


def test_fast_off_term_costs_nothing(model, x):
    calls, handle = count_g_a_calls(model)
    try:
        res = smooth_loss(model, x, method="fast", terms="bpp", n_proj=5, generator=gen())
        assert res["grad_y"].item() == 0 and res["grad_bpp"].item() > 0
        assert len(calls) == 2  # clean pass + one step along d (n_proj only serves dy/dx)
        calls.clear()
        res = smooth_loss(model, x, method="fast", terms="y", n_proj=3, generator=gen())
        assert res["grad_bpp"].item() == 0 and res["grad_y"].item() > 0
        assert len(calls) == 4
        calls.clear()
        res = smooth_loss(model, x, terms=(), generator=gen())
        assert len(calls) == 0 and res["loss"].item() == 0 and not res["loss"].requires_grad
    finally:
        handle.remove()


@pytest.mark.parametrize("method", ["fast", "fused", "exact"])
def test_gradients_reach_the_parameters(model, x, method):
    torch.manual_seed(8)
    grads = param_grads(model, smooth_loss(model, x, method=method, generator=gen())["loss"])
    g_a = {n: g for n, g in grads.items() if n.startswith("g_a.")}
    assert g_a and all(g is not None and g.abs().sum() > 0 for g in g_a.values())
    assert grads["h_s.4.weight"].abs().sum() > 0  # bpp_main depends on the scales
    # dy/dx alone depends on g_a only
    grads_y = param_grads(model, smooth_loss(model, x, terms="y", method=method,
                                             generator=gen())["loss"])
    assert all(g is None for n, g in grads_y.items() if not n.startswith("g_a."))
    last_bias = [n for n in g_a if n.endswith(".bias")][-1]  # shifts y by a constant:
    assert grads_y[last_bias] is None or grads_y[last_bias].abs().sum() == 0  # no dy/dx
    assert all(grads_y[n].abs().sum() > 0 for n in g_a if n != last_bias)


def test_create_graph_false_returns_detached_equal_values(model, x):
    torch.manual_seed(9)
    live = smooth_loss(model, x, generator=gen())
    torch.manual_seed(9)
    dead = smooth_loss(model, x, generator=gen(), create_graph=False)
    assert live["loss"].requires_grad and not dead["loss"].requires_grad
    torch.testing.assert_close(dead["loss"], live["loss"].detach())


def test_fast_refuses_quantisations_that_jump(model, x):
    with pytest.raises(ValueError, match="rounding jumps"):
        smooth_loss(model, x, quant="round", method="fast")
    with pytest.raises(ValueError, match="rounding jumps"):
        smooth_loss(model, x, quant="ste", method="fast")
    # y = g_a(x) precedes quantisation: the dy/dx term alone is the same under ste and noise
    torch.manual_seed(10)
    ste = smooth_loss(model, x, quant="ste", terms="y", create_graph=False)
    torch.manual_seed(10)
    noise = smooth_loss(model, x, quant="noise", terms="y", generator=gen(),
                        create_graph=False)
    torch.testing.assert_close(ste["grad_y"], noise["grad_y"])
    exact_round = smooth_loss(model, x, quant="round", method="exact", create_graph=False)
    assert exact_round["grad_bpp"].item() == 0  # torch.round has zero gradient


def test_exact_bounds_is_a_true_derivative_and_restores(model):
    lb = model.gaussian_conditional.lower_bound_scale
    s = torch.tensor([0.05, 0.2], requires_grad=True)
    with exact_bounds(model), exact_bounds(model):  # nests
        out = lb(s)
    (g,) = torch.autograd.grad(-out.sum(), s)  # pushing up: the heuristic would pass it below
    assert g.tolist() == [0.0, -1.0]
    (g,) = torch.autograd.grad(-lb(s).sum(), s)  # restored: CompressAI's heuristic again
    assert g.tolist() == [-1.0, -1.0]


@pytest.mark.parametrize("kwargs,match", [
    (dict(terms=("bpp", "psnr")), "terms"), (dict(method="double"), "method"),
    (dict(n_proj=0), "n_proj"), (dict(h=0.0), "h must"), (dict(quant="floor"), "quant")])
def test_smooth_loss_rejects_bad_arguments(model, x, kwargs, match):
    with pytest.raises(ValueError, match=match):
        smooth_loss(model, x, **kwargs)


# --------------------------------------------------------------------------------- pkdt_loss

def test_pkdt_loss_matches_hand_computation():
    x_new = torch.zeros(2, 3, 2, 2)
    x_hat = torch.full((2, 3, 2, 2), 0.5)
    x_hat[1] = -0.25
    out = {"x_hat": x_hat, "bpp": torch.tensor([0.30, 0.50])}
    bpp_tc = torch.tensor([0.20, 0.80])
    res = pkdt_loss(out, x_new, bpp_tc, alpha=2.0, beta=0.5, smooth=torch.tensor(4.0))
    d_loss, r_loss = (0.5 + 0.25) / 2, (0.1 + 0.3) / 2
    assert res["d_loss"].item() == pytest.approx(d_loss)
    assert res["r_loss"].item() == pytest.approx(r_loss)
    assert res["smooth_loss"].item() == 4.0
    assert res["loss"].item() == pytest.approx(d_loss + 2.0 * r_loss + 0.5 * 4.0)
    res0 = pkdt_loss(out, x_new, bpp_tc, alpha=2.0)
    assert res0["loss"].item() == pytest.approx(d_loss + 2.0 * r_loss)


def test_pkdt_loss_validates_inputs():
    out = {"x_hat": torch.zeros(2, 3, 4, 4), "bpp": torch.zeros(2, requires_grad=True)}
    x_new = torch.zeros(2, 3, 4, 4)
    with pytest.raises(ValueError, match="teacher"):
        pkdt_loss(out, x_new, torch.zeros(2, requires_grad=True), alpha=1.0)
    with pytest.raises(ValueError, match="shape"):
        pkdt_loss(out, x_new, torch.zeros(3), alpha=1.0)
    with pytest.raises(ValueError, match="differ"):
        pkdt_loss(out, x_new[:, :, :2], torch.zeros(2), alpha=1.0)
    with pytest.raises(ValueError, match="beta"):
        pkdt_loss(out, x_new, torch.zeros(2), alpha=1.0, beta=0.1)
    with pytest.raises(ValueError, match=">= 0"):
        pkdt_loss(out, x_new, torch.zeros(2), alpha=-1.0)


def test_pkdt_rate_gradient_reaches_student_only(x):
    torch.manual_seed(11)
    teacher, student = build_model("hyper", N=16, M=24), build_model("hyper", N=16, M=24)
    x_new = (x + 0.01 * torch.randn_like(x)).clamp(0, 1)
    with torch.no_grad():
        bpp_tc = codec_forward(teacher, x, "noise", generator=gen())["bpp"]
    out = codec_forward(student, x_new, "noise", generator=gen())
    sm = smooth_loss(student, x_new, generator=gen())
    res = pkdt_loss(out, x_new, bpp_tc, alpha=1.0, beta=0.1, smooth=sm)
    assert res["smooth_loss"] is sm["loss"]
    grads = param_grads(student, res["r_loss"])
    assert grads["g_a.0.weight"].abs().sum() > 0 and grads["h_s.0.weight"].abs().sum() > 0
    assert all(g is None for n, g in grads.items() if n.startswith("g_s."))  # rate ignores g_s
    res["loss"].backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert student.g_s[0].weight.grad.abs().sum() > 0  # D_loss trains the decoder



def test_rate_proxy_offset_is_the_mean_paired_difference(smoke_model, kodak_small):
    """diagnostics.rate_proxy_offset: noise-proxy minus rounded rate, per patch, with the same
    noise sample as a direct call (one generator, fixed seed)."""
    from nic_core import diagnostics
    from nic_core.models import codec_forward
    batches = [kodak_small[:1], kodak_small[1:]]
    r = diagnostics.rate_proxy_offset(smoke_model, batches, seed=5)
    g = torch.Generator().manual_seed(5)
    d = [float(codec_forward(smoke_model, b, "noise", generator=g)["bpp"][0]
               - codec_forward(smoke_model, b, "round")["bpp"][0]) for b in batches]
    assert r["n"] == 2 and r["offset"] == pytest.approx(sum(d) / 2, rel=1e-5)
    assert r["bpp_noise"] - r["bpp_round"] == pytest.approx(r["offset"], rel=1e-5)
    assert r["offset_ci95"][0] <= r["offset"] <= r["offset_ci95"][1]
