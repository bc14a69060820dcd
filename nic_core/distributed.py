"""Data-parallel training and sharded evaluation with PyTorch's own engine (torchrun + DDP).

``torchrun --nproc_per_node=K -m nic_core.runs STAGE -f params.yaml`` starts K processes; each
calls :func:`init_from_env` (NCCL on GPUs, gloo on CPU). Training wraps the codec in
``DistributedDataParallel`` so the training forward all-reduces the gradients of the net
parameters; the aux parameters (the entropy bottleneck's ``quantiles``, trained by their own
optimiser on ``aux_loss``) are left out of DDP and averaged by :func:`average_grads`, so every
rank keeps identical weights. Attacks need no parameter gradients and run on the bare module
(:func:`unwrap`). Rank 0 alone logs, evaluates and writes checkpoints. The evaluation shards
its image groups over the ranks and gathers the rows (:func:`gather`).

Without torchrun (``WORLD_SIZE`` unset or 1) every function here is a no-op.
"""
from __future__ import annotations

import os
from typing import Any, Iterable, List, Tuple

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP


def world() -> Tuple[int, int]:
    """``(rank, world size)``; ``(0, 1)`` outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    return world()[0] == 0


def init_from_env(device: torch.device) -> bool:
    """Join the process group torchrun describes (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``).

    Returns True when running with more than one process. On CUDA each process uses GPU
    ``LOCAL_RANK`` (NCCL); on CPU the backend is gloo.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend)
    return True


def local_device(device: torch.device) -> torch.device:
    """This process's device: ``cuda:LOCAL_RANK`` under torchrun on GPUs, else ``device``."""
    if device.type == "cuda" and world()[1] > 1:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def wrap(model: torch.nn.Module, aux_names: Iterable[str]) -> torch.nn.Module:
    """``DistributedDataParallel(model)`` with the aux parameters left out (see module doc);
    the model itself when not distributed. DDP broadcasts rank 0's weights on construction."""
    if world()[1] == 1:
        return model
    aux_names = list(aux_names)
    DDP._set_params_and_buffers_to_ignore_for_model(model, aux_names)
    dev = next(model.parameters()).device
    wrapped = DDP(model, device_ids=[dev.index] if dev.type == "cuda" else None,
                  broadcast_buffers=False)
    with torch.no_grad():  # DDP left these out: start them from rank 0's values too
        for n, p in model.named_parameters():
            if n in aux_names:
                dist.broadcast(p.data, 0)
    return wrapped


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The codec inside a DDP wrapper (attacks, checkpoints, aux loss use it)."""
    return model.module if isinstance(model, DDP) else model


def average_grads(params: Iterable[torch.nn.Parameter]) -> None:
    """All-reduce (mean) the gradients of parameters DDP does not handle."""
    rank, size = world()
    if size == 1:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad)
        p.grad /= size


def all_true(flag: bool) -> bool:
    """True on every rank only if ``flag`` is True on every rank (e.g. a finite loss)."""
    if world()[1] == 1:
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int32)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def any_true(flag: bool) -> bool:
    """True on every rank if ``flag`` is True on any rank (e.g. a stop signal)."""
    return not all_true(not flag)


def mean_of(values: dict) -> dict:
    """Average a dict of floats over the ranks (the logged loss of the global batch)."""
    if world()[1] == 1 or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    dist.all_reduce(t)
    t /= world()[1]
    return {k: float(v) for k, v in zip(keys, t.tolist())}


def gather(obj: Any) -> List[Any]:
    """Every rank's ``obj``, in rank order, on every rank (``all_gather_object``)."""
    if world()[1] == 1:
        return [obj]
    out: List[Any] = [None] * world()[1]
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if world()[1] > 1:
        dist.barrier()


def shutdown() -> None:
    """Leave the process group (end of a torchrun command)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
