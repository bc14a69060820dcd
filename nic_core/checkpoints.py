"""Checkpoints: plain dicts, atomic writes, ``weights_only`` loads, CompressAI interoperability.

A checkpoint is ``{"state_dict", "optimizer", "aux_optimizer", "step", "epoch", "config",
"rng", "format"}`` with only tensors and plain values, so ``torch.load(..., weights_only=True)``
reads it and CompressAI's ``python -m compressai.utils.eval_model checkpoint ... -p FILE`` finds
the weights under ``"state_dict"``. CDF tables are rebuilt with ``update(force=True)`` before
saving (stale tables are a known CompressAI trap after fine-tuning).
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import pickle
import random
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from . import cli
from .models import model_from_state_dict

FORMAT = "nic_core/1"


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: empty, truncated, foreign or unsafe (the message
    names the file and what to do)."""


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


def check_writable(folder, need_bytes: int = 200 * 2 ** 20) -> Path:
    """Fail before any work when ``folder`` cannot hold checkpoints: not creatable, not
    writable, or less than ``need_bytes`` free (a checkpoint is written next to the old one
    before replacing it)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-test.")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise PermissionError(f"run folder {folder} is not writable ({e.strerror}): choose "
                              "another run_dir, or fix its permissions") from None
    free = shutil.disk_usage(folder).free
    if free < need_bytes:
        raise OSError(f"run folder {folder}: only {free / 2**20:.0f} MiB free on its disk, "
                      f"{need_bytes / 2**20:.0f} MiB needed for checkpoints: free space or "
                      "choose another run_dir")
    return folder


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


def load_weights(model: torch.nn.Module, state_dict: Dict[str, torch.Tensor]) -> None:
    """``model.load_state_dict(state_dict)``, first resizing the entropy models' CDF buffers
    (``_quantized_cdf``, ``_offset``, ``_cdf_length``) to the stored shapes: their length
    changes with the weights, and CompressAI resizes only empty buffers (a model that was
    already ``update()``-d, e.g. a loaded pretrained codec, would refuse a later checkpoint)."""
    own = dict(model.named_buffers())
    for k, v in state_dict.items():
        if k.rsplit(".", 1)[-1] in ("_quantized_cdf", "_offset", "_cdf_length") and k in own \
                and own[k].shape != v.shape:
            own[k].resize_(v.shape)
    model.load_state_dict(state_dict)


def load_checkpoint(path, map_location="cpu") -> Dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; a clear error when it is missing."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes): a copy or download that did not "
                              "finish; copy it again, or delete it to start the run afresh")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "Unsupported global" not in str(e) and "GLOBAL" not in str(e):
            raise CheckpointError(f"{path} ({size} bytes) is not a readable PyTorch checkpoint: "
                                  "it is truncated or corrupt, or another kind of file. Copy it "
                                  "again, or delete it to restart the run") from None
        raise CheckpointError(  # weights_only refused an object whose loading could run code
            f"{path} was refused: it holds Python objects other than tensors and plain values, "
            "and unpickling them could run arbitrary code. "
            "Load only checkpoints written by nic_core or CompressAI; never pass "
            "weights_only=False for a file you did not make") from None
    except Exception as e:  # truncated zip, foreign bytes (KeyError, EOFError, ...)
        raise CheckpointError(
            f"{path} ({size} bytes) is not a readable PyTorch checkpoint: it is truncated or "
            f"corrupt, or another kind of file ({type(e).__name__}: {str(e)[:120]}). Copy it "
            "again; for a run folder, delete it to restart (packed runs: python -m "
            "nic_core.checkpoints unpack models/cpu/NAME RUN_DIR)") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"{path} is not a nic_core/CompressAI checkpoint (no "
                              "'state_dict'): point the parameter at a checkpoint.pt or "
                              "model.pt written by nic_core")
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


# --- committing a run: weights and a compact resumable state, each small enough for git -------

def _cast_state(state: Any, dtype) -> Any:
    """Optimizer state with every floating tensor of dim >= 1 cast to ``dtype``."""
    if isinstance(state, torch.Tensor):
        return state.to(dtype) if state.is_floating_point() and state.dim() > 0 else state
    if isinstance(state, dict):
        return {k: _cast_state(v, dtype) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(_cast_state(v, dtype) for v in state)
    return state


def finished(path) -> Dict[str, Any]:
    """Whether the checkpoint's run reached its ``budget`` (in steps or epochs)."""
    ckpt = load_checkpoint(path)
    cfg = ckpt.get("config", {})
    unit, budget = cfg.get("budget_unit", "steps"), cfg.get("budget")
    done = ckpt.get("step" if unit == "steps" else "epoch", 0)
    ok = budget is not None and done >= budget
    return {"finished": ok, "message": f"{path}: {'finished' if ok else 'not finished'} "
            f"({unit[:-1]} {done:g} of {budget})"}


def pack(run_dir, out_dir, with_resume: bool = True) -> Dict[str, Path]:
    """Split ``run_dir/checkpoint.pt`` into files fit to commit under ``out_dir``:

    * ``model.pt``: weights with their CDF tables, step, config (what :func:`load_model`,
      the evaluation and CompressAI's ``eval_model`` read);
    * ``resume.pt``: optimisers (moments in bfloat16: half the size, resuming stays close to
      but is not bit-identical with an uninterrupted run), RNG state, step;
    * ``history.jsonl.gz`` (when the run has a history), and ``SHA256SUMS``.

    ``with_resume=False`` (a finished run): no ``resume.pt``; an old one there is removed.
    """
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    ckpt = load_checkpoint(run_dir / "checkpoint.pt")
    model = {k: ckpt[k] for k in ("format", "state_dict", "step", "epoch", "config", "stage")
             if k in ckpt}
    resume = {"format": ckpt.get("format"), "step": ckpt["step"], "rng": ckpt["rng"],
              "optimizer": _cast_state(ckpt["optimizer"], torch.bfloat16),
              "aux_optimizer": ckpt["aux_optimizer"]}
    files = {"model": atomic_torch_save(model, out_dir / "model.pt")}
    if with_resume:
        files["resume"] = atomic_torch_save(resume, out_dir / "resume.pt")
    elif (out_dir / "resume.pt").exists():  # a finished run: a stale resume state would mislead
        (out_dir / "resume.pt").unlink()
    hist = run_dir / "history.jsonl"
    if hist.is_file():
        files["history"] = out_dir / "history.jsonl.gz"
        with gzip.GzipFile(files["history"], "wb", mtime=0) as f:
            f.write(hist.read_bytes())
    sums = "".join(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}\n"
                   for p in sorted(files.values()))
    (out_dir / "SHA256SUMS").write_text(sums)
    return files


def unpack(packed_dir, run_dir) -> Path:
    """Rebuild ``run_dir/checkpoint.pt`` (and ``history.jsonl``) from :func:`pack`'s files, so
    the run resumes where it was packed. Refuses to overwrite a newer checkpoint."""
    packed_dir, run_dir = Path(packed_dir), Path(run_dir)
    model = load_checkpoint(packed_dir / "model.pt")
    resume = torch.load(packed_dir / "resume.pt", map_location="cpu", weights_only=True)
    if resume["step"] != model["step"]:
        raise ValueError(f"{packed_dir}: model.pt (step {model['step']}) and resume.pt (step "
                         f"{resume['step']}) belong to different steps")
    target = run_dir / "checkpoint.pt"
    if target.is_file() and load_checkpoint(target)["step"] > model["step"]:
        raise ValueError(f"{target} is newer (step {load_checkpoint(target)['step']}) than the "
                         f"packed state (step {model['step']}); not overwritten")
    ckpt = {**model, "optimizer": _cast_state(resume["optimizer"], torch.float32),
            "aux_optimizer": resume["aux_optimizer"], "rng": resume["rng"]}
    atomic_torch_save(ckpt, target)
    hist = packed_dir / "history.jsonl.gz"
    if hist.is_file():
        (run_dir / "history.jsonl").write_bytes(gzip.decompress(hist.read_bytes()))
    return target


def main(argv=None) -> int:
    """``python -m nic_core.checkpoints pack RUN_DIR OUT_DIR [--final]`` / ``unpack OUT_DIR RUN_DIR``
    / ``finished RUN_DIR`` (exit status 0 when the run reached its budget, else 1)."""
    ap = argparse.ArgumentParser(prog="python -m nic_core.checkpoints", description=main.__doc__)
    ap.add_argument("command", choices=["pack", "unpack", "finished"])
    ap.add_argument("src")
    ap.add_argument("dst", nargs="?")
    ap.add_argument("--final", action="store_true",
                    help="pack: weights and history only (no resume.pt), for a finished run")
    args = ap.parse_args(argv)
    if args.command == "finished":
        state = finished(Path(args.src) / "checkpoint.pt")
        print(state["message"])
        return 0 if state["finished"] else 1
    if args.dst is None:
        ap.error(f"{args.command} needs a destination folder")
    if args.command == "pack":
        for k, p in pack(args.src, args.dst, with_resume=not args.final).items():
            print(f"{k}: {p} ({p.stat().st_size / 1e6:.1f} MB)")
    else:
        print(f"restored {unpack(args.src, args.dst)}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
