"""The committed models as a zoo, in the manner of ``compressai.zoo``: ``list()`` names them,
``load(id)`` returns the codec (eval mode, entropy tables built) after checking its weights
against the folder's ``SHA256SUMS``, ``info(id)`` describes one from its own weights.

    >>> from nic_core import zoo
    >>> zoo.list()[:3]
    ['cheng-q4', 'cheng-q4-pkdt', 'cheng-q4-teacher']
    >>> codec = zoo.load("hyper-q4")

The zoo is ``models/cpu`` of this repository (another folder of packed runs through
``$NIC_MODELS``; ``python -m nic_core.checkpoints pack`` makes one). An id's architecture comes
from its checkpoint's config; its width (N, M) is read off the weights themselves, so a
config that misdescribes them cannot mislead (issue 33). ``python -m nic_core.zoo`` prints the
table.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, Dict, List

import torch

from . import checkpoints, cli
from .download import sha256_file

DEFAULT_ROOT = Path(__file__).resolve().parent.parent / "models" / "cpu"


def root() -> Path:
    """The zoo's folder: ``$NIC_MODELS`` if set, else the repository's ``models/cpu``."""
    return Path(os.environ.get("NIC_MODELS") or DEFAULT_ROOT)


def list() -> List[str]:  # noqa: A001 - the zoo's verb, as compressai.zoo's names
    """The ids of the zoo: every folder with a ``model.pt`` and a ``SHA256SUMS``, sorted."""
    folder = root()
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir()
                  if (p / "model.pt").is_file() and (p / "SHA256SUMS").is_file())


def path(model_id: str) -> Path:
    """The ``model.pt`` of ``model_id``; a ValueError naming the ids for an unknown one."""
    ids = list()
    if model_id not in ids:
        raise ValueError(f"unknown zoo model {model_id!r} in {root()}; "
                         f"choose one of: {', '.join(ids) or '(none)'}")
    return root() / model_id / "model.pt"


def verify(model_id: str) -> str:
    """Check ``model.pt`` against the folder's ``SHA256SUMS``; returns the sha256.

    Raises:
        ValueError: the file's hash differs from the recorded one, or none is recorded.
    """
    file = path(model_id)
    sums = {}
    for line in (file.parent / "SHA256SUMS").read_text().splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            sums[name.strip().lstrip("*")] = digest
    if "model.pt" not in sums:
        raise ValueError(f"{file.parent / 'SHA256SUMS'} records no hash for model.pt")
    got = sha256_file(file)
    if got != sums["model.pt"]:
        raise ValueError(f"{file}: sha256 {got[:12]}... differs from SHA256SUMS "
                         f"({sums['model.pt'][:12]}...): the weights are not the committed ones")
    return got


def width(state_dict: Dict[str, torch.Tensor]) -> Dict[str, int]:
    """N and M from the weights: the hyperprior's channels (``entropy_bottleneck.quantiles``,
    N) and the input channels of the hyper-analysis' first conv (the latents y, M)."""
    return {"N": int(state_dict["entropy_bottleneck.quantiles"].shape[0]),
            "M": int(state_dict["h_a.0.weight"].shape[1])}


def info(model_id: str) -> Dict[str, Any]:
    """What ``model_id`` is: architecture, N and M from its weights (``config_width``: whether
    its config says the same), lmbda and stage from its config, training steps, the path and the
    recorded sha256 (not recomputed: see :func:`verify`)."""
    file = path(model_id)
    ckpt = checkpoints.load_checkpoint(file)
    cfg = ckpt.get("config", {})
    digest = next((ln.split()[0] for ln in (file.parent / "SHA256SUMS").read_text().splitlines()
                   if ln.strip().endswith("model.pt")), None)
    own = width(ckpt["state_dict"])
    return {"id": model_id, "model": cfg.get("model"), **own,
            "config_width": all(cfg.get(k) in (None, own[k]) for k in  # Cheng has no M
                                (("N",) if str(cfg.get("model")).startswith("cheng") else own)),
            "lmbda": cfg.get("lmbda"), "stage": ckpt.get("stage", cfg.get("stage")),
            "method": cfg.get("method") if ckpt.get("stage") == "pkdt" else None,
            "step": ckpt.get("step"), "path": str(file), "sha256": digest}


def load(model_id: str, device="cpu", check: bool = True) -> torch.nn.Module:
    """The codec ``model_id`` in eval mode with its entropy tables built (``update(force=True)``),
    after :func:`verify` (``check=False`` skips it)."""
    if check:
        verify(model_id)
    return checkpoints.load_model(path(model_id), device=device)


def main(argv=None) -> int:
    """``python -m nic_core.zoo [--verify]``: the zoo as a Markdown table."""
    ap = argparse.ArgumentParser(prog="python -m nic_core.zoo", description=main.__doc__)
    ap.add_argument("--verify", action="store_true", help="also check every sha256")
    args = ap.parse_args(argv)
    print("| id | model | N | M | lmbda | stage | method | step | config's N, M |")
    print("|---|---|---|---|---|---|---|---|---|")
    for model_id in list():
        i = info(model_id)
        if args.verify:
            verify(model_id)
        print("| " + " | ".join(str(i[k]) if i[k] is not None else "-" for k in
                                ("id", "model", "N", "M", "lmbda", "stage", "method", "step"))
              + (" | as the weights |" if i["config_width"] else " | **differ from the weights** |"))
    return 0


if __name__ == "__main__":
    raise SystemExit(cli.run(main))
