"""Diagnostics of training choices, measured rather than assumed.

``rate_proxy_offset``: how far the training rate proxy (additive uniform noise) is from the rate
with real rounding, per model, on training patches. Stage II's R_loss (eq. 4 of the paper)
compares the teacher's rate with the student's; if the two came from different proxies the
systematic offset between them would become a target the student is trained towards.

    python -m nic_core.diagnostics rate-proxy CHECKPOINT [CHECKPOINT ...] --out FILE.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List

import torch

from . import checkpoints, cli, data, stats
from .models import codec_forward


@torch.no_grad()
def rate_proxy_offset(model: torch.nn.Module, batches: List[torch.Tensor],
                      seed: int = 0) -> Dict[str, Any]:
    """Per-patch rate (bpp) with rounding and with the noise proxy, and their difference.

    Args:
        model: a codec (eval mode is fine: :func:`codec_forward` sets the quantisation).
        batches: list of [B,3,H,W] float batches in [0,1].
        seed: noise seed (one generator for all batches).

    Returns:
        dict with ``bpp_round``, ``bpp_noise`` (means), ``offset`` = mean(noise - round) with its
        ``offset_stderr`` and ``offset_ci95`` over patches, and ``n`` patches.
    """
    g = torch.Generator().manual_seed(seed)
    rnd, noi = [], []
    for x in batches:
        rnd.append(codec_forward(model, x, "round")["bpp"])
        noi.append(codec_forward(model, x, "noise", generator=g)["bpp"])
    r, n = torch.cat(rnd), torch.cat(noi)
    ci = stats.bootstrap_ci((n - r).tolist())
    return {"bpp_round": r.mean().item(), "bpp_noise": n.mean().item(), "offset": ci["mean"],
            "offset_stderr": ci["se"], "offset_ci95": [ci["lo"], ci["hi"]], "n": ci["n"]}


def training_batches(data_root, patch_size: int = 128, batch_size: int = 8, n_batches: int = 8,
                     seed: int = 0) -> List[torch.Tensor]:
    """Fixed random training crops (the patches Stage II trains on)."""
    paths, _ = data.find_train_set(data_root)
    ds = data.ImageFolderDataset(paths, patch_size=patch_size, train=True)
    torch.manual_seed(seed)
    idx = torch.randperm(len(ds))[:batch_size * n_batches].tolist()
    xs = torch.stack([ds[i] for i in idx])
    return list(xs.split(batch_size))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    rp = sub.add_parser("rate-proxy", help="rounded vs noise-proxy rate per model")
    rp.add_argument("checkpoints", nargs="+")
    rp.add_argument("--data-root", default=None)
    rp.add_argument("--batches", type=int, default=8)
    rp.add_argument("--out", help="write the results here (JSON)")
    args = ap.parse_args(argv)
    batches = training_batches(args.data_root, n_batches=args.batches)
    rows = {}
    for ck in args.checkpoints:
        rows[ck] = rate_proxy_offset(checkpoints.load_model(ck), batches)
        r = rows[ck]
        print(f"{ck}: round {r['bpp_round']:.4f} bpp, noise {r['bpp_noise']:.4f} bpp, "
              f"noise - round {r['offset']:+.4f} +- {r['offset_stderr']:.4f} (n={r['n']})")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"command": "python -m nic_core.diagnostics "
                                              "rate-proxy", "results": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
