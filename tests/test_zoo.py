"""The zoo of committed models (nic_core.zoo) and ``python -m nic_core.evaluate model ID``."""
import json
import shutil
from pathlib import Path

import pytest
import torch

from nic_core import data, metrics, transfer, zoo

ROOT = Path(__file__).resolve().parents[1]


def test_the_zoo_lists_the_committed_models_with_their_own_width():
    ids = zoo.list()
    assert {"hyper-q4", "hyper-q4-pkdt", "cheng-q4", "hyper-q6-wide-p256-long2"} <= set(ids)
    assert ids == sorted(p.name for p in (ROOT / "models" / "cpu").iterdir() if p.is_dir())
    wide = zoo.info("hyper-q6-wide-p256-long2")
    assert (wide["model"], wide["N"], wide["M"], wide["lmbda"]) == ("hyper", 64, 192, 0.0483)
    # issue 33: this checkpoint's config says N 48, M 64; the weights say 64, 96
    pkdt = zoo.info("hyper-q4-pkdt")
    assert (pkdt["N"], pkdt["M"], pkdt["stage"], pkdt["method"]) == (64, 96, "pkdt", "pkdt")
    assert not pkdt["config_width"] and zoo.info("hyper-q4")["config_width"]
    assert zoo.info("hyper-q4-adv")["method"] == "adv"


def test_load_gives_the_committed_clean_numbers():
    """hyper-q4 from the zoo codes Kodak's first crop exactly as its committed results say."""
    paths, desc = data.find_test_set("kodak")
    if desc.startswith("FALLBACK"):
        pytest.skip("needs Kodak ($NIC_DATA)")
    model = zoo.load("hyper-q4")
    x = data.centre_crop(data.load_image(paths[0]), 256)[None]
    real = metrics.real_codec(model, x)
    committed = json.loads((ROOT / "results/cpu/hyper-q4/metrics_p2.json").read_text())
    row = committed["per_image"][0]
    assert row["name"] == paths[0].stem
    assert abs(float(metrics.psnr(x, real["x_hat"])) - row["psnr-rgb"]) < 0.01
    assert abs(float(real["bpp"]) - row["bpp"]) < 1e-6


def _tmp_zoo(tmp_path, monkeypatch, *ids):
    for i in ids:
        shutil.copytree(ROOT / "models" / "cpu" / i, tmp_path / i,
                        ignore=shutil.ignore_patterns("resume.pt", "history.jsonl.gz"))
    monkeypatch.setenv("NIC_MODELS", str(tmp_path))


def test_a_changed_or_unknown_model_is_refused(tmp_path, monkeypatch):
    _tmp_zoo(tmp_path, monkeypatch, "hyper-q1")
    assert zoo.list() == ["hyper-q1"]
    assert len(zoo.verify("hyper-q1")) == 64
    blob = bytearray((tmp_path / "hyper-q1" / "model.pt").read_bytes())
    blob[-100] ^= 1
    (tmp_path / "hyper-q1" / "model.pt").write_bytes(bytes(blob))
    with pytest.raises(ValueError, match="differs from SHA256SUMS"):
        zoo.load("hyper-q1")
    with pytest.raises(ValueError, match="unknown zoo model 'hyper-q9'.*hyper-q1"):
        zoo.path("hyper-q9")


def test_evaluate_model_records_the_weights_own_config_and_hash(tmp_path, monkeypatch):
    """``python -m nic_core.evaluate model hyper-q4-pkdt``: the results say N 64, M 96 (its
    weights), not its checkpoint config's 48 / 64, and name the sha256 the zoo checked."""
    _tmp_zoo(tmp_path / "zoo", monkeypatch, "hyper-q4-pkdt")
    out = tmp_path / "m.json"
    torch.manual_seed(0)
    assert transfer.main(["model", "hyper-q4-pkdt", "--out", str(out), "-p", "eval_limit", "1",
                          "-p", "eval_crop", "64", "-p", "attack_iterations", "2",
                          "-p", "eval_worst_case", "psnr,apgd-psnr,noise"]) == 0
    res = json.loads(out.read_text())
    cfg = res["config"]
    assert (res["name"], cfg["model"], cfg["N"], cfg["M"], cfg["lmbda"]) == \
        ("hyper-q4-pkdt", "hyper", 64, 96, 0.013)
    recorded = (ROOT / "models/cpu/hyper-q4-pkdt/SHA256SUMS").read_text().split("model.pt")[0]
    assert f"file sha256 {recorded.split()[-1]}" in res["description"]
    assert len(cfg["evaluation"]["weights_sha256"]) == 64
    assert cfg["eps"] == 5e-4 and cfg["evaluation"]["worst_case"] == ["psnr", "apgd-psnr", "noise"]
    assert "pkdt model" in res["description"] and "N 64, M 96" in res["description"]
    assert not Path(str(out) + ".journal").exists()


def test_eval_only_records_the_weights_width_not_the_checkpoint_config(tmp_path):
    """``python -m nic_core.runs pretrain --eval-only`` on hyper-q4-pkdt (whose checkpoint config
    says N 48, M 64): the results' config says what the weights are, N 64, M 96."""
    from nic_core import runs
    out = tmp_path / "m.json"
    assert runs.main(["pretrain", "-p", "eval_limit", "1", "-p", "eval_crop", "64",
                      "-p", "attack_iterations", "1",
                      "--eval-only", str(ROOT / "models/cpu/hyper-q4-pkdt/model.pt"),
                      "--out", str(out)]) == 0
    cfg = json.loads(out.read_text())["config"]
    assert (cfg["N"], cfg["M"], cfg["lmbda"], cfg["stage"]) == (64, 96, 0.013, "pkdt")
