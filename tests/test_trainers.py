"""The one training loop: schedule, resume, checkpoints and CompressAI interoperability."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from nic_core import checkpoints, config, data
from nic_core.metrics import psnr, real_codec
from nic_core.models import build_model, codec_forward
from nic_core.trainers import batch_stream, lr_factor, make_objective, train


def test_lr_schedule_matches_paper():
    # pretraining: 1e-4, halved every 25 epochs after the first 50 (of 100)
    assert [lr_factor(e, 50, 25) for e in (0, 49, 50, 74, 75, 99)] == [1, 1, .5, .5, .25, .25]
    assert lr_factor(10_000, 0, 25) == 1.0


def test_batch_stream_deterministic_and_resumable():
    ds = [torch.full((3, 4, 4), float(i)) for i in range(10)]
    full = [b[:, 0, 0, 0].tolist() for _, b in zip(range(7), batch_stream(ds, 3, seed=1))]
    resumed = [b[:, 0, 0, 0].tolist() for _, b in zip(range(3), batch_stream(ds, 3, 1, 4))]
    assert resumed == full[4:7]
    epoch0 = sum(full[:3], [])
    assert len(set(epoch0)) == 9  # a permutation within an epoch (drop last)


def _cfg(tmp_path, **kw):
    base = dict(model="hyper", N=16, M=24, patch_size=64, batch_size=2, budget=6, lr=1e-3,
                progress=False, run_dir=str(tmp_path), seed=3, threads=0)
    base.update(kw)
    return {**config.defaults("pretrain", **base), "stage": "pretrain"}


@pytest.fixture(scope="module")
def tiny_data():
    paths, _ = data.find_train_set(None)
    return data.ImageFolderDataset(paths[:6], patch_size=64, train=True)


def _train(cfg, ds, stop_after=None):
    torch.manual_seed(0)
    model = build_model("hyper", N=16, M=24)
    hist = train(model, ds, make_objective(cfg), cfg, cfg["run_dir"], stop_after=stop_after)
    return model, hist


def test_resume_continues_exactly(tmp_path, tiny_data):
    a_cfg = _cfg(tmp_path / "a")
    a, hist_a = _train(a_cfg, tiny_data)
    b_cfg = _cfg(tmp_path / "b")
    _train(b_cfg, tiny_data, stop_after=3)           # "killed" after 3 of 6 steps
    ck = checkpoints.load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    assert ck["step"] == 3
    b, hist_b = _train(b_cfg, tiny_data)             # a fresh process would do the same
    assert [r["step"] for r in hist_b] == list(range(1, 7))
    for k, v in a.state_dict().items():
        torch.testing.assert_close(v, b.state_dict()[k], msg=k)
    assert [r["loss"] for r in hist_a] == pytest.approx([r["loss"] for r in hist_b])


def test_training_reduces_loss(tmp_path, tiny_data):
    cfg = _cfg(tmp_path, budget=40, lr=3e-3)
    _, hist = _train(cfg, tiny_data)
    first = sum(r["loss"] for r in hist[:5]) / 5
    last = sum(r["loss"] for r in hist[-5:]) / 5
    assert last < 0.7 * first
    rows = [json.loads(s) for s in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert len(rows) == 40 and {"loss", "bpp_loss", "mse_loss", "lr", "aux_loss"} <= set(rows[0])


def test_nan_guard_stops_with_clear_error(tmp_path, tiny_data):
    cfg = _cfg(tmp_path)
    model = build_model("hyper", N=16, M=24)
    def bad(model, x):
        out = codec_forward(model, x, "noise")
        return {"loss": out["bpp"].mean() * float("nan")}
    with pytest.raises(FloatingPointError, match="not finite"):
        train(model, tiny_data, bad, cfg, tmp_path, max_nan_steps=2)


def test_checkpoint_is_plain_and_weights_only(smoke_run_dir):
    ck = torch.load(smoke_run_dir / "checkpoint.pt", weights_only=True)
    assert {"state_dict", "optimizer", "aux_optimizer", "step", "config", "rng"} <= set(ck)
    assert ck["config"]["model"] == "hyper" and ck["step"] == 300
    model = checkpoints.load_model(smoke_run_dir / "checkpoint.pt")
    assert not model.training


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        checkpoints.load_checkpoint(tmp_path / "nope.pt")


def test_compressai_eval_model_reads_our_checkpoint(smoke_run_dir, tmp_path):
    img_dir = tmp_path / "imgs"
    img_dir.mkdir()
    paths, _ = data.find_test_set("kodak", os.environ.get("NIC_DATA"))
    full = data.load_images(paths[:1])[0][1]  # eval_model also computes MS-SSIM: needs >= 161 px
    h, w = full.shape[-2:]
    crop = full[:, (h - 256) // 2:(h + 256) // 2, (w - 256) // 2:(w + 256) // 2]
    arr = (crop.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    Image.fromarray(arr).save(img_dir / "crop.png")
    x = torch.from_numpy(arr).permute(2, 0, 1)[None].float() / 255
    res = subprocess.run(
        [sys.executable, "-m", "compressai.utils.eval_model", "checkpoint", str(img_dir),
         "-a", "bmshj2018-hyperprior", "-p", str(smoke_run_dir / "checkpoint.pt")],
        capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    theirs = json.loads(res.stdout[res.stdout.index("{"):])["results"]
    model = checkpoints.load_model(smoke_run_dir / "checkpoint.pt")
    ours = real_codec(model, x)
    assert theirs["bpp"][0] == pytest.approx(float(ours["bpp"][0]), rel=1e-6)
    assert theirs["psnr-rgb"][0] == pytest.approx(float(psnr(x, ours["x_hat"])[0]), abs=0.05)


def test_two_fresh_runs_of_one_config_are_identical(tmp_path):
    """The seed covers the initial weights as well as crops, batches and noise."""
    from nic_core import runs
    cfg = config.defaults("pretrain", N=16, M=16, patch_size=64, batch_size=2, budget=2,
                          progress=False)
    hist = []
    for name in ("a", "b"):
        _, h = runs.run_training("pretrain", {**cfg, "run_dir": str(tmp_path / name)})
        hist.append([(r["loss"], r["aux_loss"]) for r in h])
    assert len(hist[0]) == 2 and hist[0] == hist[1]
    _, h = runs.run_training("pretrain", {**cfg, "seed": 1, "run_dir": str(tmp_path / "c")})
    assert [(r["loss"], r["aux_loss"]) for r in h] != hist[0]


# ------------------------------------------------------------------------------- Stage II

def _pkdt_cfg(tmp_path, **kw):
    base = dict(model="hyper", N=16, M=24, patch_size=64, batch_size=3, budget=6, lr=1e-3,
                progress=False, run_dir=str(tmp_path), seed=3, n_p=3, n_b=2, eps=1e-3,
                beta=1e-3)
    base.update(kw)
    return config.defaults("pkdt", **base)


def test_stage2_teacher_sees_clean_student_sees_attacked(monkeypatch):
    from nic_core import trainers
    torch.manual_seed(0)
    student, teacher = build_model("hyper", N=16, M=24), build_model("hyper", N=16, M=24)
    calls = []
    real_forward = trainers.codec_forward

    def spy(model, x, quant="round", generator=None):
        out = real_forward(model, x, quant, generator=generator)
        calls.append((model, x.detach().clone(), quant, out))
        return out
    monkeypatch.setattr(trainers, "codec_forward", spy)
    x = torch.rand(3, 3, 64, 64)
    make_objective(_pkdt_cfg("unused", teacher_rate="round"), teacher)(student, x)
    assert [c[2] for c in calls if c[0] is teacher] == ["round"]  # the old estimator, on request
    calls.clear()
    terms = make_objective(_pkdt_cfg("unused"), teacher)(student, x)
    (t_model, t_in, t_quant, t_out), = [c for c in calls if c[0] is teacher]
    (s_model, s_in, s_quant, s_out), = [c for c in calls if c[0] is student]
    assert t_quant == "noise" and s_quant == "noise"  # one rate estimator on both sides of eq. 4
    torch.testing.assert_close(t_in, x)                       # teacher: the clean batch
    assert (s_in[:2] - x[:2]).pow(2).mean() > 1e-5            # x1*, x2*: attacked ...
    assert ((s_in[:2] - x[:2]).pow(2).flatten(1).mean(1) <= 1e-3).all()  # ... within eps
    torch.testing.assert_close(s_in[2], x[2])                 # x3: clean
    r_loss = (t_out["bpp"] - s_out["bpp"]).abs().mean()
    assert float(terms["r_loss"].detach()) == pytest.approx(float(r_loss.detach()), rel=1e-5)
    assert float(terms["d_loss"].detach()) == pytest.approx(
        float((s_in - s_out["x_hat"]).abs().mean().detach()), rel=1e-5)
    terms["loss"].backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert sum(float(p.grad.abs().sum()) for p in student.g_a.parameters()) > 0


def test_stage2_run_reduces_loss_and_resumes_exactly(tmp_path, tiny_data):
    def run(cfg, stop_after=None):
        torch.manual_seed(0)
        student = build_model("hyper", N=16, M=24)
        torch.manual_seed(1)
        teacher = build_model("hyper", N=16, M=24)
        hist = train(student, tiny_data, make_objective(cfg, teacher), cfg, cfg["run_dir"],
                     stop_after=stop_after)
        return student, hist

    cfg = _pkdt_cfg(tmp_path / "long", budget=30, lr=3e-3)
    _, hist = run(cfg)
    first = sum(r["loss"] for r in hist[:5]) / 5
    last = sum(r["loss"] for r in hist[-5:]) / 5
    assert last < 0.8 * first, (first, last)
    assert {"d_loss", "r_loss", "smooth_loss"} <= set(hist[0])
    a_cfg, b_cfg = _pkdt_cfg(tmp_path / "a"), _pkdt_cfg(tmp_path / "b")
    a, hist_a = run(a_cfg)
    run(b_cfg, stop_after=3)
    b, hist_b = run(b_cfg)
    assert [r["step"] for r in hist_b] == list(range(1, 7))
    assert [r["loss"] for r in hist_a] == pytest.approx([r["loss"] for r in hist_b])
    for k, v in a.state_dict().items():
        torch.testing.assert_close(v, b.state_dict()[k], msg=k)


def test_eval_only_cli_writes_results_beside_the_checkpoint(smoke_run_dir, tmp_path):
    from nic_core import evaluate, runs
    out = tmp_path / "m.json"
    assert runs.main(["pretrain", "--eval-only", str(smoke_run_dir / "checkpoint.pt"),
                      "-p", "eval_limit", "1", "-p", "eval_crop", "128", "-p", "progress",
                      "false", "-p", "attack_iterations", "2", "--out", str(out),
                      "--name", "smoke"]) == 0
    res = evaluate.load_results(out)
    assert res["name"] == "smoke" and set(res["attacks"]) == {"psnr", "bpp"}
    assert res["attacks"]["psnr"]["iterations"] == 2 and len(res["per_image"]) == 1
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        runs.main(["pretrain", "--eval-only", str(tmp_path / "none.pt")])


def test_missing_pretrained_or_teacher_names_the_notebook(smoke_run_dir, tmp_path):
    from nic_core import runs
    cfg = _pkdt_cfg(tmp_path / "run", pretrained=str(tmp_path / "none.pt"),
                    teacher=str(tmp_path / "none2.pt"))
    with pytest.raises(FileNotFoundError, match=r"pretrained checkpoint .* run "
                                                r"notebooks/01_pretrain.ipynb first"):
        runs.run_training("pkdt", cfg)
    cfg["pretrained"] = str(smoke_run_dir / "checkpoint.pt")
    with pytest.raises(FileNotFoundError, match=r"teacher checkpoint .* run "
                                                r"notebooks/02_teacher.ipynb first"):
        runs.run_training("pkdt", cfg)
    cfg["method"] = "adv"  # the baselines need no teacher
    cfg["budget"] = 1
    _, hist = runs.run_training("pkdt", cfg)
    assert len(hist) == 1


def test_pack_unpack_resumes_close_to_uninterrupted(tmp_path, tiny_data):
    """A packed run (weights + bfloat16 optimiser state, the files committed under models/)
    unpacks into a resumable run folder; resuming lands close to the uninterrupted run."""
    a_cfg = _cfg(tmp_path / "a")
    a, hist_a = _train(a_cfg, tiny_data)
    b_cfg = _cfg(tmp_path / "b")
    _train(b_cfg, tiny_data, stop_after=3)
    files = checkpoints.pack(tmp_path / "b", tmp_path / "packed")
    assert set(files) == {"model", "resume", "history"}
    assert (tmp_path / "packed" / "SHA256SUMS").read_text().count("\n") == 3
    m = checkpoints.load_model(files["model"])  # the weights file alone is a model
    assert set(m.state_dict()) == set(a.state_dict())
    c_cfg = _cfg(tmp_path / "c")
    checkpoints.unpack(tmp_path / "packed", tmp_path / "c")
    assert checkpoints.load_checkpoint(tmp_path / "c" / "checkpoint.pt")["step"] == 3
    c, hist_c = _train(c_cfg, tiny_data)
    assert [r["step"] for r in hist_c] == list(range(1, 7))
    # bfloat16 moments: not bit-identical, but the same run (losses within 1 %)
    assert [r["loss"] for r in hist_c] == pytest.approx([r["loss"] for r in hist_a], rel=1e-2)
    with pytest.raises(ValueError, match="newer"):  # never overwrite a more advanced run
        checkpoints.unpack(tmp_path / "packed", tmp_path / "a")
    assert not checkpoints.finished(tmp_path / "packed" / "model.pt")["finished"]  # step 3 of 6
    assert checkpoints.finished(tmp_path / "a" / "checkpoint.pt")["finished"]
    files = checkpoints.pack(tmp_path / "a", tmp_path / "packed", with_resume=False)
    assert set(files) == {"model", "history"}  # a finished run: no stale resume state left
    assert not (tmp_path / "packed" / "resume.pt").exists()
    assert checkpoints.main(["finished", str(tmp_path / "c")]) == 0


def test_init_starts_a_rate_point_from_a_trained_codec(smoke_run_dir, tmp_path):
    """Pretraining with ``init`` starts from that codec's weights (fine-tuning another lmbda);
    a codec of another size is refused, naming what differs."""
    from nic_core import runs
    ck = str(smoke_run_dir / "checkpoint.pt")
    cfg = {**config.defaults("pretrain", N=48, M=64, init=ck, lmbda=0.0483,
                             run_dir=str(tmp_path)), "stage": "pretrain"}
    model = runs.build_student(cfg, "cpu")
    ref = checkpoints.load_model(ck)
    assert model.training
    for k, v in ref.named_parameters():
        torch.testing.assert_close(dict(model.named_parameters())[k], v, msg=k)
    with pytest.raises(ValueError, match="does not fit model='hyper' N=32"):
        runs.build_student({**cfg, "N": 32}, "cpu")
    with pytest.raises(FileNotFoundError, match="init checkpoint"):
        runs.build_student({**cfg, "init": str(tmp_path / "none.pt")}, "cpu")
    fresh = runs.build_student({**cfg, "init": None}, "cpu")
    assert not torch.equal(fresh.g_a[0].weight, model.g_a[0].weight)


def test_init_widen_grows_m_and_starts_as_the_narrow_codec(smoke_run_dir, tmp_path):
    """``init_widen``: a Hyper with twice the latent channels decodes exactly what the trained
    narrow codec decodes, pays almost no rate for the unused channels, and its new decoder
    weights receive a gradient (they would stay at zero if the new latents were exactly zero);
    without the flag, or with a smaller N, it is refused."""
    from nic_core import runs
    from nic_core.models import widen_hyper
    ck = str(smoke_run_dir / "checkpoint.pt")
    narrow = checkpoints.load_model(ck).eval()
    cfg = {**config.defaults("pretrain", N=48, M=128, init=ck, init_widen=True,
                             run_dir=str(tmp_path)), "stage": "pretrain"}
    wide = runs.build_student(cfg, "cpu")
    assert wide.training and wide.g_a[6].weight.shape[0] == 128
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = codec_forward(narrow, x, "round"), codec_forward(wide.eval(), x, "round")
    torch.testing.assert_close(b["x_hat"], a["x_hat"], rtol=0, atol=0)
    assert 0 < (b["bpp"] - a["bpp"]).max() < 0.01  # 64 new channels at a scale of 0.2
    out = codec_forward(wide.train(), x, "noise")
    ((out["x_hat"] - x) ** 2).mean().backward()
    assert wide.g_s[0].weight.grad[64:].abs().sum() > 0
    with pytest.raises(ValueError, match="set init_widen true"):
        runs.build_student({**cfg, "init_widen": False}, "cpu")
    with pytest.raises(ValueError, match="may only grow"):
        runs.build_student({**cfg, "N": 32}, "cpu")
    with pytest.raises(ValueError, match="may only grow"):
        widen_hyper(narrow, build_model("hyper", N=48, M=64))
    with pytest.raises(ValueError, match="two 'hyper' codecs"):
        widen_hyper(narrow, build_model("cheng2020-anchor", N=48))


def test_widen_hyper_grows_n_and_starts_as_the_narrow_codec(smoke_run_dir):
    """A larger transform width N (every conv, GDN and the hyper-latent z): the same decoded
    image (up to float summation order), the same scales for the old latents, a small rate for
    the new z channels, GDN coupling no old channel to a new one, and a gradient for the zero
    weights out of the new channels in every layer of the decoder."""
    from nic_core.models import widen_hyper
    narrow = checkpoints.load_model(str(smoke_run_dir / "checkpoint.pt")).eval()
    n0, m0 = narrow.g_a[0].out_channels, narrow.g_a[6].out_channels
    wide = widen_hyper(narrow, build_model("hyper", N=n0 + 16, M=m0)).eval()
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = codec_forward(narrow, x, "round"), codec_forward(wide, x, "round")
        ya, yb = narrow.g_a(x), wide.g_a(x)
    torch.testing.assert_close(b["x_hat"], a["x_hat"], rtol=0, atol=1e-5)
    torch.testing.assert_close(yb, ya, rtol=0, atol=1e-5)
    torch.testing.assert_close(b["likelihoods"]["y"], a["likelihoods"]["y"], rtol=0, atol=1e-5)
    assert 0 < (b["bpp"] - a["bpp"]).max() < 0.05  # 16 fresh hyper-latent channels
    for gdn in (wide.g_a[1], wide.g_s[3]):
        assert gdn.gamma_reparam(gdn.gamma)[:n0, n0:].abs().max() == 0
    out = codec_forward(wide.train(), x, "noise")
    ((out["x_hat"] - x) ** 2).mean().backward()
    for conv in (wide.g_s[2], wide.g_s[4]):  # ConvTranspose2d: weight [in, out, k, k]
        assert conv.weight.grad[n0:].abs().sum() > 0
    assert wide.g_s[6].weight.grad[n0:].abs().sum() > 0


def test_split_hyper_grows_n_with_twins_in_use_from_the_start(smoke_run_dir, tmp_path):
    """``widen_mode split``: every transform channel split into twins computes the narrow codec's
    y and x_hat (only float summation order differs), the twins carry the same signal but get
    different gradients (unequal shares of the weights out of them), the old hyper-latent keeps
    its likelihoods, and widths it cannot reach are refused."""
    from nic_core import runs
    from nic_core.models import split_hyper
    ck = str(smoke_run_dir / "checkpoint.pt")
    narrow = checkpoints.load_model(ck).eval()
    n0, m0 = narrow.g_a[0].out_channels, narrow.g_a[6].out_channels
    cfg = {**config.defaults("pretrain", N=2 * n0, M=m0, init=ck, init_widen=True,
                             widen_mode="split", run_dir=str(tmp_path)), "stage": "pretrain"}
    wide = runs.build_student(cfg, "cpu").eval()
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = codec_forward(narrow, x, "round"), codec_forward(wide, x, "round")
        h = wide.g_a[:2](x)  # after the first GDN: twin j + n0 equals channel j
    torch.testing.assert_close(b["x_hat"], a["x_hat"], rtol=0, atol=1e-5)
    torch.testing.assert_close(b["y"], a["y"], rtol=0, atol=1e-4)
    torch.testing.assert_close(b["likelihoods"]["y"], a["likelihoods"]["y"], rtol=0, atol=1e-5)
    torch.testing.assert_close(b["likelihoods"]["z"][:, :n0], a["likelihoods"]["z"], rtol=0,
                               atol=1e-5)
    torch.testing.assert_close(h[:, n0:], h[:, :n0], rtol=0, atol=1e-6)
    assert h[:, n0:].abs().mean() > 1e-3  # the twins carry signal: in use from the start
    def twin_gap(model):  # relative difference of the twins' gradients in the first layer
        out = codec_forward(model.train(), x, "noise", torch.Generator().manual_seed(1))
        ((out["x_hat"] - x) ** 2).mean().backward()
        g = model.g_a[0].weight.grad
        return float((g[n0:] - g[:n0]).abs().sum() / g[:n0].abs().sum())
    assert twin_gap(wide) > 0.03  # unequal shares: the twins drift apart
    assert twin_gap(split_hyper(narrow, build_model("hyper", N=2 * n0, M=m0), noise=0)) < 1e-6
    with pytest.raises(ValueError, match="N < N_wide <= 2N"):
        split_hyper(narrow, build_model("hyper", N=2 * n0 + 8, M=m0))
    with pytest.raises(ValueError, match="N < N_wide <= 2N"):
        split_hyper(narrow, build_model("hyper", N=n0 + 8, M=m0 + 8))


def test_sigterm_writes_a_checkpoint_and_resume_finishes_identically(tmp_path, tiny_data):
    """SIGTERM mid-training: a checkpoint at the signal, a clean exit (status 0) with a message,
    and the rerun reaches the same final weights as an uninterrupted run."""
    import os
    import signal
    import subprocess
    import sys
    import textwrap
    script = textwrap.dedent(f"""
        import os, signal, sys, torch
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_trainers import _cfg, _train, tiny_data
        from nic_core import data, trainers
        paths, _ = data.find_train_set(None)
        ds = data.ImageFolderDataset(paths[:6], patch_size=64, train=True)
        cfg = _cfg(os.environ["RUN_DIR"], budget=40)
        real = trainers.train_step
        def step_then_signal(*a, **k):
            out = real(*a, **k)
            step_then_signal.n += 1
            if step_then_signal.n == 5 and os.environ.get("KILL"):
                os.kill(os.getpid(), signal.SIGTERM)
            return out
        step_then_signal.n = 0
        trainers.train_step = step_then_signal
        _train(cfg, ds)
        print("FINISHED")
    """)
    env = {**os.environ, "KILL": "1", "OMP_NUM_THREADS": "1", "RUN_DIR": str(tmp_path / "b")}
    p = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "SIGTERM at step 5: checkpoint saved" in p.stdout and "FINISHED" not in p.stdout
    assert checkpoints.load_checkpoint(tmp_path / "b" / "checkpoint.pt")["step"] == 5
    env.pop("KILL")
    p = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0 and "FINISHED" in p.stdout, p.stderr[-2000:]
    # the same run uninterrupted, in the same kind of process (one thread, the same kernels: in
    # this process another thread count drifts past the tolerance on an AVX-512 CPU)
    p = subprocess.run([sys.executable, "-c", script], env={**env, "RUN_DIR": str(tmp_path / "a")},
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and "FINISHED" in p.stdout, p.stderr[-2000:]
    a = checkpoints.load_model(tmp_path / "a" / "checkpoint.pt")
    b = checkpoints.load_model(tmp_path / "b" / "checkpoint.pt")
    # the weights (the CDF tables are integers derived from them: a last-bit difference can
    # move one count)
    theirs = dict(b.named_parameters())
    for k, v in a.named_parameters():
        torch.testing.assert_close(v, theirs[k], rtol=1e-4, atol=1e-6, msg=k)


@pytest.mark.parametrize("kind", ["empty", "truncated", "foreign", "no-state-dict"])
def test_unusable_checkpoint_is_a_clear_error(smoke_run_dir, tmp_path, kind):
    """Each bad file names itself and says what to do, instead of PyTorch's raw error."""
    good = (smoke_run_dir / "checkpoint.pt").read_bytes()
    bad = tmp_path / "checkpoint.pt"
    if kind == "no-state-dict":
        torch.save({"weights": torch.zeros(2)}, bad)
    else:
        bad.write_bytes({"empty": b"", "truncated": good[:len(good) // 3],
                         "foreign": b"<html>404 not found</html>"}[kind])
    with pytest.raises(checkpoints.CheckpointError, match=str(bad).replace(".", r"\.")) as e:
        checkpoints.load_checkpoint(bad)
    assert {"empty": "empty", "truncated": "truncated or corrupt", "foreign": "truncated or corrupt",
            "no-state-dict": "not a nic_core"}[kind] in str(e.value)
    cfg = _cfg(tmp_path)  # resuming from it fails before any training, with the same message
    with pytest.raises(checkpoints.CheckpointError):
        _train(cfg, [torch.rand(3, 64, 64)] * 4)


def test_checkpoint_that_would_run_code_is_refused(tmp_path):
    """A pickle whose loading would call os.system is refused (weights_only) with a message
    saying why; the command never runs."""
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "payload": Evil()}, path)
    with pytest.raises(checkpoints.CheckpointError, match="could run arbitrary code"):
        checkpoints.load_checkpoint(path)
    with pytest.raises(checkpoints.CheckpointError):
        checkpoints.load_model(path, name="hyper")
    assert not marker.exists()


def test_unwritable_or_full_run_folder_fails_before_training(tmp_path, monkeypatch):
    import shutil as _shutil
    from nic_core import runs
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):  # root ignores permissions: simulate the OS refusing
            def refuse(*a, **k):
                raise PermissionError(13, "Permission denied")
            monkeypatch.setattr(checkpoints.tempfile, "mkstemp", refuse)
        cfg = _cfg(ro / "run")
        with pytest.raises(PermissionError, match=r"run folder .*ro/run is not writable"):
            runs.run_training("pretrain", cfg)
    finally:
        ro.chmod(0o700)
        monkeypatch.undo()
    usage = _shutil.disk_usage(tmp_path)
    monkeypatch.setattr(checkpoints.shutil, "disk_usage",
                        lambda p: usage._replace(free=10 * 2 ** 20))
    with pytest.raises(OSError, match="only 10 MiB free"):
        runs.run_training("pretrain", _cfg(tmp_path / "full"))
    assert not (tmp_path / "full" / "checkpoint.pt").exists()


def test_kill_9_loses_at_most_ckpt_every_steps(tmp_path):
    """A real SIGKILL mid-training (no handler can run): the checkpoint on disk is whole, the
    rerun resumes from the last periodic checkpoint and finishes the budget."""
    import signal
    import time
    run = tmp_path / "run"

    def args(budget):
        return [sys.executable, "-m", "nic_core.runs", "pretrain", "-p", "N", "16", "-p", "M",
                "24", "-p", "patch_size", "64", "-p", "batch_size", "2", "-p", "budget",
                str(budget), "-p", "ckpt_every", "3", "-p", "threads", "1", "-p", "progress",
                "false", "-p", "run_dir", str(run), "--no-eval"]
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(args(400), cwd=root, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    hist = run / "history.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and (not hist.exists() or
                                      len(hist.read_text().splitlines()) < 8):
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    logged = len(hist.read_text().splitlines())
    saved = checkpoints.load_checkpoint(run / "checkpoint.pt")["step"]  # whole, loadable
    assert saved % 3 == 0 and logged - 3 <= saved <= logged, (saved, logged)
    budget = saved + 6
    res = subprocess.run(args(budget), cwd=root, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    rows = [json.loads(r) for r in hist.read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, budget + 1))  # nothing lost or repeated
    assert checkpoints.load_checkpoint(run / "checkpoint.pt")["step"] == budget


def test_resume_a_run_that_started_from_a_loaded_codec(smoke_run_dir, tmp_path, tiny_data):
    """Stages I/II start from a loaded (``update()``-d) codec; resuming must accept the run's
    checkpoint although its CDF tables have other lengths (CompressAI resizes only empty
    buffers)."""
    ck = smoke_run_dir / "checkpoint.pt"
    cfg = {**config.defaults("pretrain", N=48, M=64, patch_size=64, batch_size=2, budget=4,
                             lr=1e-3, progress=False, run_dir=str(tmp_path)), "stage": "pretrain"}
    torch.manual_seed(0)  # a run whose tables differ from the smoke codec's: other ranges
    fresh = build_model("hyper", N=48, M=64)
    with torch.no_grad():
        fresh.entropy_bottleneck.quantiles.mul_(3)
    train(fresh, tiny_data, make_objective(cfg), cfg, tmp_path, stop_after=2)
    saved = checkpoints.load_checkpoint(tmp_path / "checkpoint.pt")["state_dict"]
    start = checkpoints.load_model(ck)
    differ = [k for k, v in start.named_buffers() if k.endswith("_quantized_cdf")
              and v.shape != saved[k].shape]
    assert differ, "the CDF tables kept their length: this test would not test anything"
    hist = train(start, tiny_data, make_objective(cfg), cfg, tmp_path)
    assert [r["step"] for r in hist] == [1, 2, 3, 4]


def test_stage2_roles_get_their_own_iterations(monkeypatch):
    """x1 gets the psnr attack with n_p iterations, x2 the bpp attack with n_b (swapping the
    two parameters must change what runs)."""
    from nic_core import trainers
    seen = []

    def spy(model, x, kind, eps, iterations, **kw):
        seen.append((list(kind), list(iterations)))
        return {"x_adv": x.clone()}
    monkeypatch.setattr(trainers.attacks, "attack", spy)
    torch.manual_seed(0)
    student, teacher = build_model("hyper", N=16, M=24), build_model("hyper", N=16, M=24)
    x = torch.rand(3, 3, 64, 64)
    make_objective(_pkdt_cfg("unused", n_p=7, n_b=2), teacher)(student, x)
    make_objective(_pkdt_cfg("unused", n_p=2, n_b=7), teacher)(student, x)
    assert seen == [(["psnr", "bpp"], [7, 2]), (["psnr", "bpp"], [2, 7])]


def test_schedule_applied_and_teacher_untouched_over_a_run(tmp_path, tiny_data):
    """The optimiser really runs at the logged, halving learning rate; the frozen teacher keeps
    its weights and eval mode through a whole Stage II train()."""
    torch.manual_seed(0)
    student, teacher = build_model("hyper", N=16, M=24), build_model("hyper", N=16, M=24)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    cfg = _pkdt_cfg(tmp_path, budget=6, lr=1e-3, lr_decay_start=2, lr_decay_every=2, n_p=1, n_b=1)
    used = []
    real_step = torch.optim.Adam.step

    def spy_step(self, *a, **k):
        used.append(self.param_groups[0]["lr"])
        return real_step(self, *a, **k)
    import unittest.mock as um
    with um.patch.object(torch.optim.Adam, "step", spy_step):
        hist = train(student, tiny_data, make_objective(cfg, teacher), cfg, cfg["run_dir"])
    want = [1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4, 2.5e-4]
    assert [r["lr"] for r in hist] == pytest.approx(want)
    assert used[0::2] == pytest.approx(want)  # net optimiser (the aux one steps in between)
    assert used[1::2] == pytest.approx([cfg["aux_lr"]] * 6)
    assert not teacher.training and all(not p.requires_grad for p in teacher.parameters())
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_failed_save_keeps_the_old_checkpoint(smoke_run_dir, tmp_path, monkeypatch):
    """A crash while writing (disk full, kill) leaves the previous checkpoint intact."""
    path = tmp_path / "checkpoint.pt"
    path.write_bytes((smoke_run_dir / "checkpoint.pt").read_bytes())
    old = path.read_bytes()
    model = checkpoints.load_model(path)

    def broken(obj, f, *a, **k):
        f.write(b"half a checkpoint")
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(checkpoints.torch, "save", broken)
    with pytest.raises(OSError, match="No space"):
        checkpoints.save_checkpoint(path, model, {"model": "hyper"}, step=99)
    assert path.read_bytes() == old
    assert not [p for p in tmp_path.iterdir() if p.name != "checkpoint.pt"]  # no temp left


def test_bf16_training_step_tracks_float32(tmp_path, tiny_data):
    """precision bf16: the same 6 steps give losses within a few % of float32's (bf16 has an
    8-bit mantissa: ~0.4 % per op), and the weights move."""
    _, h32 = _train(_cfg(tmp_path / "a"), tiny_data)
    m16, h16 = _train(_cfg(tmp_path / "b", precision="bf16"), tiny_data)
    l32, l16 = [r["loss"] for r in h32], [r["loss"] for r in h16]
    assert l16 != l32
    assert l16 == pytest.approx(l32, rel=0.05)


def test_cudnn_modes(monkeypatch):
    from nic_core import runs
    b, d = torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic
    try:
        runs.set_cudnn("benchmark")
        assert torch.backends.cudnn.benchmark and not torch.backends.cudnn.deterministic
        runs.set_cudnn("deterministic")
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        with pytest.raises(ValueError, match="cudnn"):
            runs.set_cudnn("fast")
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = b, d
    with pytest.raises(ValueError, match="precision"):
        config.validate("pretrain", {"precision": "fp16"})


def test_hard_stage_freezes_g_a_and_trains_on_the_real_rate(smoke_run_dir, tmp_path):
    """``train_quant ste`` + ``freeze g_a`` (soft-then-hard): the training forward's rate is the
    rate of real rounding, not the noise proxy; g_a is neither optimised nor changed by training
    while the decoder is; a ``freeze`` name that is not a module is refused."""
    from nic_core import runs
    from nic_core.trainers import pretrain_objective
    ck = str(smoke_run_dir / "checkpoint.pt")
    cfg = _cfg(tmp_path, N=48, M=64, init=ck, train_quant="ste", freeze="g_a", budget=4,
               lr=1e-3)
    model = runs.build_student(cfg, "cpu")
    g_a0 = [p.detach().clone() for p in model.g_a.parameters()]
    g_s0 = [p.detach().clone() for p in model.g_s.parameters()]
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    terms = pretrain_objective(cfg, model, x)
    with torch.no_grad():
        real = codec_forward(model, x, "round")["bpp"].mean()
        proxy = codec_forward(model, x, "noise")["bpp"].mean()
    assert abs(float(terms["bpp_loss"].detach()) - float(real)) < 1e-5
    assert abs(float(proxy) - float(real)) > 1e-3  # the two rates differ: the test can fail
    ds = [torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    train(model, ds, make_objective(cfg), cfg, tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(g_a0, model.g_a.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(g_s0, model.g_s.parameters()))
    with pytest.raises(ValueError, match="freeze"):
        config.validate("pretrain", {**config.defaults("pretrain"), "freeze": "encoder"})
