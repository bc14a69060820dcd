"""Shared fixtures: a briefly trained smoke codec and real image crops.

Data come from ``$NIC_DATA`` (``.ci/run`` points it at ``../shared/data``); without it the
fixtures fall back to scikit-image's bundled photos, so the suite runs offline anywhere.
"""
import os
import sys
from pathlib import Path

# The numeric thresholds were measured with AVX2 kernels; an AVX-512 CPU moves a few of them.
# Pinned before torch loads (also for `pytest` run without make, and the notebooks' kernels,
# which inherit the environment); an explicit setting wins.
for _k, _v in (("ATEN_CPU_CAPABILITY", "avx2"), ("ONEDNN_MAX_CPU_ISA", "AVX2"),
               ("MKL_ENABLE_INSTRUCTIONS", "AVX2")):
    os.environ.setdefault(_k, _v)
assert "torch" not in sys.modules, "torch loaded before tests/conftest.py could pin its kernels"

import pytest  # noqa: E402
import torch  # noqa: E402

from nic_core import config, data, runs

SMOKE = dict(model="hyper", N=48, M=64, lmbda=0.013, patch_size=128, batch_size=8, lr=1e-3,
             budget=300, budget_unit="steps", eval_limit=2, eval_crop=128, progress=False,
             threads=0, attack_iterations=0)


@pytest.fixture(scope="session")
def smoke_run_dir(tmp_path_factory):
    """Run folder of the smoke pretraining (trained once per test session, ~1 minute)."""
    run_dir = tmp_path_factory.mktemp("smoke_pretrain")
    cfg = config.defaults("pretrain", **SMOKE, run_dir=str(run_dir))
    runs.run_training("pretrain", cfg)
    return run_dir


@pytest.fixture(scope="session")
def _smoke_state(smoke_run_dir):
    from nic_core.checkpoints import load_checkpoint
    return load_checkpoint(smoke_run_dir / "checkpoint.pt")


@pytest.fixture()
def smoke_model(_smoke_state):
    """A small ``hyper`` codec (N=48, M=64) trained 300 steps; eval mode, CDFs updated.

    Function-scoped copy: tests may modify it freely.
    """
    from nic_core.models import model_from_state_dict
    model = model_from_state_dict("hyper", _smoke_state["state_dict"])
    model.update(force=True)
    return model.eval()


@pytest.fixture(scope="session")
def kodak_small():
    """Two real test images, centre 128x128 crops, as a [2,3,128,128] batch in [0,1]."""
    paths, _ = data.find_test_set("kodak", os.environ.get("NIC_DATA"))
    imgs = [t for _, t in data.load_images(paths[:2])]
    return torch.stack([data.centre_crop(t, 128) for t in imgs])
