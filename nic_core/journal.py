"""Resumable evaluation: a journal of finished work, and a clean stop on SIGTERM / SIGINT.

A long evaluation (:func:`nic_core.evaluate.evaluate_robustness`, the saturation and transfer
commands) appends each finished unit of work (an image group's clean and attacked rows, and its
adversarial images when asked for) to a journal beside its output, the moment it is done::

    results/m.json.journal          rank 0 (the only one without torchrun)
    results/m.json.journal.rank1    rank 1, ... (each rank journals its own shard)
    results/m.json.journal.d/       the units' tensors (adversarial images), one .pt file each

The first line of each file is a header: the evaluation's settings, the sha256 of the weights
(:func:`weights_sha256`) and of the images. Each further line is one JSON record, written with
append + flush + fsync; a torn last line (the process killed while writing it) is ignored and
cut off before the next append. Rerunning the same command reads every rank's file and skips
the units already there, whatever the number of processes now; a header that differs refuses
with one error naming what differs (``--fresh`` or deleting the files starts afresh), so rows
of two models or two protocols are never mixed. Once the results file is written the caller
removes the journal (:func:`remove`).

:func:`stop_on_signals` turns SIGTERM / SIGINT into :class:`Stopped` (exit status 128 + the
signal's number under :func:`nic_core.cli.run`), deferred while a record is being written; the
work in progress is lost, every journalled unit survives, and so does a ``kill -9``.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import threading
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

import torch

from .results import plain_values

__all__ = ["Journal", "Stopped", "stop_on_signals", "weights_sha256", "tensors_sha256",
           "journal_path", "remove"]

VERSION = 1


def weights_sha256(model: torch.nn.Module) -> str:
    """sha256 over the model's parameters (name, shape, dtype, values; in name order): the same
    weights give the same hash whatever file or device they came from. Buffers (entropy tables,
    derived from the weights by ``update(force=True)``) are left out."""
    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
        t = p.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


def tensors_sha256(named: List[Tuple[str, torch.Tensor]]) -> str:
    """sha256 over ``(name, tensor)`` pairs (e.g. the evaluation images), in the given order."""
    h = hashlib.sha256()
    for name, t in named:
        t = t.detach().cpu().float().contiguous()
        h.update(f"{name}:{tuple(t.shape)};".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def journal_path(out, tag: str = "") -> Path:
    """The journal of results file ``out`` (``out.journal``, or ``out.TAG.journal`` for one of
    several evaluations written into one file, e.g. one per model of a saturation sweep)."""
    out = Path(out)
    return out.with_name(out.name + (f".{tag}" if tag else "") + ".journal")


def _rank_file(path: Path, rank: int) -> Path:
    return path if rank == 0 else path.with_name(f"{path.name}.rank{rank}")


def _files(path: Path) -> List[Path]:
    """The journal's files of every rank that wrote one."""
    files = [path] if path.is_file() else []
    return files + sorted(p for p in path.parent.glob(f"{path.name}.rank*") if p.is_file())


def remove(path) -> None:
    """Delete a journal: every rank's file and its tensors folder (once the results are saved)."""
    path = Path(path)
    for f in _files(path):
        f.unlink(missing_ok=True)
    d = path.with_name(path.name + ".d")
    if d.is_dir():
        for f in d.iterdir():
            f.unlink(missing_ok=True)
        d.rmdir()


def _differences(old: Any, new: Any, prefix: str = "") -> List[str]:
    """Where two headers differ, as ``key: was X, now Y`` (nested keys dotted)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new), key=str):
            out += _differences(old.get(k), new.get(k), f"{prefix}{k}.")
        return out
    if old == new:
        return []
    short = lambda v: (repr(v) if len(repr(v)) <= 40 else repr(v)[:37] + "...")  # noqa: E731
    return [f"{prefix.rstrip('.')}: was {short(old)}, now {short(new)}"]


class Journal:
    """The finished units of one evaluation, read from every rank's file; new ones appended to
    this rank's file.

    Args:
        path: rank 0's file (see :func:`journal_path`); the others' lie beside it.
        header: plain-valued description of the evaluation (settings, weights and images
            hashes). A journal written under another header is refused (``ValueError``).
        fresh: delete an existing journal first instead of resuming it.
        rank: this process's rank (``nic_core.distributed.world()``); rank 0 does the deleting.
    """

    def __init__(self, path, header: Mapping[str, Any], fresh: bool = False, rank: int = 0):
        self.path = Path(path)
        self.header = plain_values(dict(header))
        self.rank = rank
        self.file = _rank_file(self.path, rank)
        self.tensors_dir = self.path.with_name(self.path.name + ".d")
        if fresh and rank == 0:
            remove(self.path)
        self.records: Dict[str, Dict[str, Any]] = {}

    def load(self) -> "Journal":
        """Read every rank's file (call after ``fresh``'s deletion, on every rank)."""
        for f in _files(self.path):
            for rec in self._read(f):
                self.records[rec["key"]] = rec
        return self

    def _read(self, f: Path) -> Iterator[Dict[str, Any]]:
        lines = f.read_bytes().split(b"\n")
        # the last element is b"" when the file ends with a newline; anything else is torn
        complete, torn = lines[:-1], lines[-1]
        recs = []
        for i, line in enumerate(complete):
            try:
                recs.append(json.loads(line))
            except json.JSONDecodeError:
                if i == len(complete) - 1 and not torn:  # torn, then a newline by chance
                    break
                raise ValueError(f"{f}: line {i + 1} is not a journal record (a damaged "
                                 f"journal): delete {f} (or rerun with --fresh) to start afresh"
                                 ) from None
        if not recs:
            return iter(())
        head = recs[0].get("header") if recs[0].get("journal") == VERSION else None
        if head is None:
            raise ValueError(f"{f} is not a journal of this version: delete it (or rerun with "
                             "--fresh) to start afresh")
        diff = _differences(head, self.header)
        if diff:
            raise ValueError(f"{f} was written by another evaluation ({'; '.join(diff[:3])}"
                             f"{'; ...' if len(diff) > 3 else ''}): rerun with --fresh, or "
                             f"delete {f}, to start afresh")
        return iter(r for r in recs[1:] if "key" in r)

    def __contains__(self, key: str) -> bool:
        return key in self.records

    def __len__(self) -> int:
        return len(self.records)

    def rows(self, key: str) -> Any:
        """The rows journalled under ``key``."""
        return self.records[key]["rows"]

    def tensors(self, key: str) -> Optional[Any]:
        """The tensors journalled under ``key``; ``None`` when none were, or their file is gone
        (e.g. a journal committed without its ``.d`` folder): the unit is then to be redone."""
        name = self.records[key].get("tensors")
        f = self.tensors_dir / name if name else None
        return torch.load(f, weights_only=True) if f is not None and f.is_file() else None

    def append(self, key: str, rows: Any, tensors: Optional[Any] = None) -> None:
        """Add one finished unit, durably: its tensors file first (atomic), then its record
        line (append + flush + fsync); SIGTERM / SIGINT wait until both are written."""
        with _deferred_signals():
            rec: Dict[str, Any] = {"key": key, "rows": plain_values(rows)}
            if tensors is not None:
                from .checkpoints import atomic_torch_save
                name = hashlib.sha1(key.encode()).hexdigest()[:16] + ".pt"
                atomic_torch_save(tensors, self.tensors_dir / name)
                rec["tensors"] = name
            self._start_file()
            with open(self.file, "ab") as f:
                f.write(json.dumps(rec, allow_nan=False).encode() + b"\n")
                f.flush()
                os.fsync(f.fileno())
            self.records[key] = rec

    def _start_file(self) -> None:
        """This rank's file with its header, a torn last line cut off (once per process)."""
        if getattr(self, "_started", False):
            return
        self.file.parent.mkdir(parents=True, exist_ok=True)
        good = b""
        if self.file.is_file():
            data = self.file.read_bytes()
            good = data[:data.rfind(b"\n") + 1]
            # a torn line that happens to end in "\n" was not read as a record: drop it too
            lines = good.split(b"\n")[:-1]
            keep = []
            for line in lines:
                try:
                    json.loads(line)
                    keep.append(line + b"\n")
                except json.JSONDecodeError:
                    break
            good = b"".join(keep)
        if not good:
            good = json.dumps({"journal": VERSION, "header": self.header},
                              allow_nan=False).encode() + b"\n"
        with open(self.file, "wb") as f:
            f.write(good)
            f.flush()
            os.fsync(f.fileno())
        self._started = True


class Stopped(KeyboardInterrupt):
    """An evaluation stopped by SIGTERM / SIGINT; what was journalled survives. Under
    :func:`nic_core.cli.run` its message is printed and the exit status is ``status``."""

    def __init__(self, message: str, status: int = 130):
        super().__init__(message)
        self.message, self.status = message, status


_state = threading.local()


@contextlib.contextmanager
def _deferred_signals():
    """A section a signal must not cut (a journal record being written): the stop waits."""
    depth = getattr(_state, "critical", 0)
    _state.critical = depth + 1
    try:
        yield
    finally:
        _state.critical = depth
        pending = getattr(_state, "pending", None)
        if depth == 0 and pending is not None:
            _state.pending = None
            raise pending


@contextlib.contextmanager
def stop_on_signals(message):
    """While inside, SIGTERM and SIGINT raise :class:`Stopped` with ``message()`` (a callable,
    so it can say how much was saved by then), exit status 128 + the signal's number. Outside
    the main thread (no signal handlers there) it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        exc = Stopped(message(), 128 + signum)
        if getattr(_state, "critical", 0):
            _state.pending = exc
        else:
            raise exc

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)
