"""Checkpoints: plain dicts, atomic writes, ``weights_only`` loads, CompressAI interoperability.

A checkpoint is ``{"state_dict", "optimizer", "aux_optimizer", "step", "epoch", "config",
"rng", "format"}`` with only tensors and plain values, so ``torch.load(..., weights_only=True)``
reads it and CompressAI's ``python -m compressai.utils.eval_model checkpoint ... -p FILE`` finds
the weights under ``"state_dict"``. CDF tables are rebuilt with ``update(force=True)`` before
saving (stale tables are a known CompressAI trap after fine-tuning).
"""
from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from .models import model_from_state_dict

FORMAT = "nic_core/1"


def rng_state() -> Dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_torch_save(obj: Any, path) -> Path:
    """``torch.save`` to a temp file in the same folder, then ``os.replace``: never a half file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def save_checkpoint(path, model, config: Dict[str, Any], optimizer=None, aux_optimizer=None,
                    step: int = 0, epoch: int = 0, extra: Optional[Dict[str, Any]] = None) -> Path:
    """Update the CDFs (force) and write a plain-dict checkpoint atomically."""
    model.update(force=True)
    ckpt = {
        "format": FORMAT,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "aux_optimizer": aux_optimizer.state_dict() if aux_optimizer is not None else None,
        "step": int(step),
        "epoch": int(epoch),
        "config": dict(config),
        "rng": rng_state(),
    }
    if extra:
        ckpt.update(extra)
    return atomic_torch_save(ckpt, path)


def load_checkpoint(path, map_location="cpu") -> Dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; a clear error when it is missing."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ValueError(f"{path} is not a nic_core/CompressAI checkpoint (no 'state_dict')")
    return ckpt


def load_model(path, name: Optional[str] = None, device="cpu") -> torch.nn.Module:
    """Rebuild the codec stored in a checkpoint (CompressAI ``from_state_dict``), eval mode.

    Args:
        path: checkpoint file.
        name: architecture; defaults to the checkpoint's ``config["model"]``.
    """
    ckpt = load_checkpoint(path)
    name = name or ckpt.get("config", {}).get("model")
    if name is None:
        raise ValueError(f"{path}: no config['model']; pass name= explicitly")
    model = model_from_state_dict(name, ckpt["state_dict"])
    model.update(force=True)
    return model.to(device).eval()
