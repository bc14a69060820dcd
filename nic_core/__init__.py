"""nic_core: attacks, defences and evaluation of learned image codecs (CompressAI), after Cao et
al., "Enhancing Adversarial Training with Prior Knowledge Distillation for Robust Image
Compression" (arXiv 2403.06700).

The public API, importable from here (each name is loaded from its module on first use, so
``import nic_core`` stays light)::

    from nic_core import codec_forward, attack, evaluate_robustness, zoo
    codec = zoo.load("hyper-q4")
    out = attack(codec, x, kind="apgd-psnr", eps=5e-4, iterations=100)

The modules (``nic_core.attacks``, ``nic_core.evaluate``, ...) are documented in DESIGN.md.
"""
from __future__ import annotations

import importlib

_API = {  # public name -> the module that defines it
    "build_model": "models", "codec_forward": "models", "model_from_state_dict": "models",
    "psnr": "metrics", "real_codec": "metrics",
    "attack": "attacks", "ATTACKS": "attacks", "parse_spec": "attacks",
    "rd_loss": "losses", "smooth_loss": "losses", "pkdt_loss": "losses",
    "train": "trainers", "make_objective": "trainers",
    "evaluate_robustness": "evaluate", "save_results": "results", "load_results": "results",
    "load_model": "checkpoints", "save_checkpoint": "checkpoints", "load_checkpoint": "checkpoints",
    "load_images": "data", "find_test_set": "data", "centre_crop": "data",
    "ENSEMBLES": "config", "PROTOCOL": "config", "attack_list": "config",
    "paired_test": "stats", "fdr": "stats",
}
_MODULES = ("zoo", "attacks", "evaluate", "models", "metrics", "losses", "trainers", "config",
            "data", "checkpoints", "defenses", "distributed", "explorer", "stats", "worst_case",
            "results", "journal", "transfer", "budgets")
__all__ = sorted(_API) + list(_MODULES)


def __getattr__(name: str):
    if name in _API:
        value = getattr(importlib.import_module(f".{_API[name]}", __name__), name)
    elif name in _MODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module 'nic_core' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return __all__
