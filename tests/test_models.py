import pytest
import torch

from nic_core.metrics import real_codec
from nic_core.models import (QUANT_MODES, build_model, codec_forward, model_from_state_dict,
                             pad)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_model("hyper", N=16, M=24).eval()


def test_build_by_name_and_quality():
    m = build_model("hyper", quality=3)
    assert m.g_a[0].weight.shape[0] == 128 and m.g_a[6].weight.shape[0] == 192
    c = build_model("cheng2020-anchor", N=32)
    assert c.g_a[0].conv1.weight.shape[0] == 32
    with pytest.raises(ValueError, match="unknown model"):
        build_model("jpeg")
    with pytest.raises(ValueError, match="quality"):
        build_model("cheng2020-attn", quality=8)


@pytest.mark.parametrize("quant", QUANT_MODES)
def test_codec_forward_outputs_and_bpp_split(tiny, quant):
    x = torch.rand(2, 3, 64, 96)
    out = codec_forward(tiny, x, quant)
    assert out["x_hat"].shape == x.shape
    assert out["y"].shape == (2, 24, 4, 8)  # y of the input padded to 64x128
    for k in ("bpp", "bpp_main", "bpp_hyper"):
        assert out[k].shape == (2,) and torch.all(out[k] > 0)
    torch.testing.assert_close(out["bpp"], out["bpp_main"] + out["bpp_hyper"])
    bits_y = -torch.log2(out["likelihoods"]["y"]).sum((1, 2, 3))
    torch.testing.assert_close(out["bpp_main"], bits_y / (64 * 96))


def test_modes_differ_as_documented(tiny):
    x = torch.rand(1, 3, 64, 64, requires_grad=True)
    r, s = codec_forward(tiny, x, "round"), codec_forward(tiny, x, "ste")
    torch.testing.assert_close(r["x_hat"], s["x_hat"])  # ste rounds in the forward pass
    torch.testing.assert_close(r["bpp"], s["bpp"])
    g_round = torch.autograd.grad(r["x_hat"].sum(), x)[0]
    g_ste = torch.autograd.grad(s["x_hat"].sum(), x)[0]
    assert g_round.abs().max() == 0  # the CompressAI trap: rounding kills the input gradient
    assert g_ste.abs().max() > 0
    gen1, gen2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    n1 = codec_forward(tiny, x, "noise", generator=gen1)["bpp"]
    n2 = codec_forward(tiny, x, "noise", generator=gen2)["bpp"]
    torch.testing.assert_close(n1, n2)  # one shared noise sample
    assert not torch.allclose(n1, r["bpp"])


def test_quant_mode_independent_of_train_flag(tiny):
    x = torch.rand(1, 3, 64, 64)
    tiny.train()
    try:
        a = codec_forward(tiny, x, "round")["x_hat"]
    finally:
        tiny.eval()
    torch.testing.assert_close(a, codec_forward(tiny, x, "round")["x_hat"])
    assert "quantize" not in vars(tiny.gaussian_conditional)  # patch removed afterwards


def test_padding_excluded_from_bpp(tiny):
    x = torch.rand(1, 3, 70, 100)
    xp, unpad = pad(x)
    assert xp.shape[-2:] == (128, 128)
    out = codec_forward(tiny, x, "round")
    assert out["x_hat"].shape == x.shape
    bits = -torch.log2(out["likelihoods"]["y"]).sum() - torch.log2(out["likelihoods"]["z"]).sum()
    torch.testing.assert_close(out["bpp"][0], bits / (70 * 100))


def test_bad_input(tiny):
    with pytest.raises(ValueError, match="B,3,H,W"):
        codec_forward(tiny, torch.rand(3, 64, 64))
    with pytest.raises(ValueError, match="float"):
        codec_forward(tiny, torch.zeros(1, 3, 64, 64, dtype=torch.uint8))
    with pytest.raises(ValueError, match="quant"):
        codec_forward(tiny, torch.rand(1, 3, 64, 64), "floor")


def test_real_bitstream_decodes_to_round_forward(tiny):
    x = torch.rand(2, 3, 64, 80)
    r = real_codec(tiny, x, check=True)
    assert r["x_hat"].shape == x.shape
    assert r["max_abs_diff"] < 1e-4
    assert torch.all(r["bytes"] > 0)


def test_real_vs_estimated_bpp_on_trained_model(smoke_model, kodak_small):
    est = codec_forward(smoke_model, kodak_small, "round")["bpp"]
    real = real_codec(smoke_model, kodak_small)["bpp"].float()
    rel = ((real - est) / est).abs()
    assert torch.all(rel < 0.05), (est, real)


def test_state_dict_roundtrip_through_compressai(tiny):
    tiny.update(force=True)
    again = model_from_state_dict("hyper", tiny.state_dict()).eval()
    x = torch.rand(1, 3, 64, 64)
    torch.testing.assert_close(codec_forward(tiny, x)["x_hat"], codec_forward(again, x)["x_hat"])


def test_bf16_autocast_keeps_the_entropy_models_in_float32(tiny):
    """precision bf16 (issue 12): the transforms run in bfloat16, likelihoods and rates stay
    float32 and close to the float32 forward's; nothing stays patched afterwards."""
    from compressai.entropy_models import EntropyModel

    from nic_core.models import autocast
    torch.manual_seed(1)
    x = torch.rand(2, 3, 64, 64)
    ref = codec_forward(tiny, x, "round")
    seen = []
    ems = [m for m in tiny.modules() if isinstance(m, EntropyModel)]
    # the likelihood's lower bound runs inside each entropy model's forward: what it sees
    hooks = [em.likelihood_lower_bound.register_forward_hook(lambda m, i, o: seen.append(
        (i[0].dtype, o.dtype, torch.is_autocast_enabled("cpu")))) for em in ems]
    try:
        with autocast(torch.device("cpu"), "bf16"):
            out = codec_forward(tiny, x, "round")
    finally:
        for h in hooks:
            h.remove()
    assert len(seen) == 2 and all(s == (torch.float32, torch.float32, False) for s in seen)
    assert out["x_hat"].dtype == out["y"].dtype == torch.float32
    assert out["likelihoods"]["y"].dtype == torch.float32
    # bf16 transforms move the latents a little: the rate within 5 %, not bitwise
    torch.testing.assert_close(out["bpp"], ref["bpp"], rtol=0.05, atol=0)
    assert not torch.equal(out["x_hat"], ref["x_hat"])  # the autocast did run
    assert all("forward" not in em.__dict__ for em in ems)
    with autocast(torch.device("cpu"), "fp32"):
        torch.testing.assert_close(codec_forward(tiny, x, "round")["x_hat"], ref["x_hat"])
    with pytest.raises(ValueError, match="precision"):
        autocast(torch.device("cpu"), "fp16")


def test_committed_models_are_what_models_readme_promises():
    """Every folder under models/cpu is listed in its README, matches its SHA256SUMS, loads
    with weights_only=True with its entropy coders' CDF tables, stays under 10 MB (all of models/ near 100 MB, issue 9) and has its
    results committed beside it (results/cpu/NAME)."""
    import hashlib
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "models" / "cpu"
    readme = (root / "README.md").read_text()
    dirs = sorted(d for d in root.iterdir() if d.is_dir())
    assert len(dirs) >= 10
    total = 0
    for d in dirs:
        assert f"`{d.name}`" in readme, d.name
        for line in (d / "SHA256SUMS").read_text().splitlines():
            digest, name = line.split()
            data = (d / name).read_bytes()
            assert hashlib.sha256(data).hexdigest() == digest, (d.name, name)
            total += len(data)
        assert (d / "model.pt").stat().st_size < 10e6, d.name
        state = torch.load(d / "model.pt", weights_only=True, map_location="cpu")
        assert isinstance(state, dict) and state, d.name
        sd = state["state_dict"]  # with the update(force=True) tables of both entropy models
        cdfs = [k for k in sd if k.endswith("_quantized_cdf")]
        assert len(cdfs) == 2 and all(sd[k].numel() > 100 for k in cdfs), d.name
        results = root.parents[1] / "results" / "cpu" / d.name
        assert any(results.glob("metrics_*.json")), d.name
    assert total < 110e6, total / 1e6
