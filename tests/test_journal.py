"""Resumable evaluation (nic_core.journal): a stopped evaluation never does an image group twice.

The command-line tests stop a real ``python -m nic_core.runs --eval-only`` (the smoke codec, 3
crops of 64, a few iterations) after its first image group with SIGTERM, and under torchrun
with kill -9, then rerun it: every per-image value equals an uninterrupted run's. A changed
setting (command) and changed weights (in process) are each refused naming what differs; a torn
journal line is survived.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nic_core import journal
from nic_core.evaluate import evaluate_robustness
from nic_core.journal import Journal, weights_sha256
from nic_core.results import without_timings

ROOT = Path(__file__).resolve().parents[1]
def _strip(obj):
    """Results without what differs between runs of the same work (timings, descriptions)."""
    return without_timings(obj, also=("description",))


# ---- the journal file itself -------------------------------------------------------------

def test_journal_round_trip_torn_line_and_refusal(tmp_path):
    path = tmp_path / "m.json.journal"
    head = {"settings": {"eps": 5e-4, "iterations": {"psnr": 10}}, "weights": "abc"}
    j = Journal(path, head).load()
    assert len(j) == 0
    j.append("0", [{"psnr": 30.5}])
    j.append("1", [{"psnr": 29.25}], {"psnr": {"kodim02": torch.full((3, 2, 2), 0.5)}})
    # a kill -9 while a record was being written: a line without its newline
    with open(path, "ab") as f:
        f.write(b'{"key": "2", "rows": [{"psn')
    j2 = Journal(path, head).load()
    assert sorted(j2.records) == ["0", "1"]
    assert j2.rows("0") == [{"psnr": 30.5}] and j2.tensors("0") is None
    assert torch.equal(j2.tensors("1")["psnr"]["kodim02"], torch.full((3, 2, 2), 0.5))
    j2.append("2", [{"psnr": 28.0}])  # the torn tail is cut off before appending
    lines = path.read_text().splitlines()
    assert len(lines) == 4 and all(json.loads(line) for line in lines)
    assert sorted(Journal(path, head).load().records) == ["0", "1", "2"]
    # another evaluation's journal is refused, naming what differs and how to start afresh
    other = {"settings": {"eps": 1e-3, "iterations": {"psnr": 10}}, "weights": "abc"}
    with pytest.raises(ValueError, match=r"settings\.eps: was 0\.0005, now 0\.001.*--fresh"):
        Journal(path, other).load()
    assert len(Journal(path, other, fresh=True).load()) == 0 and not path.exists()
    assert not (tmp_path / "m.json.journal.d").exists()
    # a damaged line that is not the last is no torn write: refused, not skipped
    path.write_text(json.dumps({"journal": 1, "header": head}) + "\nnot json\n"
                    + json.dumps({"key": "0", "rows": []}) + "\n")
    with pytest.raises(ValueError, match="damaged"):
        Journal(path, head).load()


def test_weights_hash_follows_the_weights_not_the_object(smoke_model):
    a = weights_sha256(smoke_model)
    copy = type(smoke_model)(N=48, M=64)
    copy.load_state_dict(smoke_model.state_dict())
    assert weights_sha256(copy) == a
    with torch.no_grad():
        next(copy.parameters()).view(-1)[0] += 1e-6
    assert weights_sha256(copy) != a


def test_resumed_evaluation_equals_uninterrupted(smoke_model, kodak_small, tmp_path, monkeypatch):
    """In process: a journal holding only the first group (as a stop leaves it) is resumed; the
    results equal, image by image, the uninterrupted run's (the attack streams are per group),
    and the adversarial images of the journalled group are read back."""
    imgs = [(f"k{i}", t[:, :64, :64]) for i, t in enumerate(kodak_small)] + \
        [("k2", kodak_small[0][:, 64:, 64:])]
    kw = dict(attacks=("psnr", "bpp@noise"), worst_case=("psnr", "noise"), iterations=3,
              progress=False, name="smoke")
    adv_full = {}
    full = evaluate_robustness(smoke_model, imgs, adversarial=adv_full, **kw)
    path = tmp_path / "m.json.journal"
    adv_a = {}
    evaluate_robustness(smoke_model, imgs, journal=path, adversarial=adv_a, **kw)
    lines = path.read_text().splitlines()
    assert len(lines) == 1 + 3  # header + one record per image group
    path.write_text("\n".join(lines[:2]) + "\n")  # stopped after the first group
    calls = []
    import nic_core.evaluate as ev
    orig = ev._group_rows
    monkeypatch.setattr(ev, "_group_rows", lambda model, items, idx, *a:
                        calls.append(idx) or orig(model, items, idx, *a))
    adv_b = {}
    resumed = evaluate_robustness(smoke_model, imgs, journal=path, adversarial=adv_b, **kw)
    assert calls == [[1], [2]]  # the journalled group was not redone
    assert _strip(resumed) == _strip(full)
    for key in adv_full:
        for n in adv_full[key]:
            assert torch.equal(adv_b[key][n], adv_full[key][n]), (key, n)
    assert full["config"]["evaluation"]["weights_sha256"] == weights_sha256(smoke_model)
    # other weights (one moved by 1e-3): refused, never mixed into the same results
    with torch.no_grad():
        smoke_model.g_a[0].weight.view(-1)[0] += 1e-3
    with pytest.raises(ValueError, match=r"settings\.weights_sha256: was '[0-9a-f]{8}"):
        evaluate_robustness(smoke_model, imgs, journal=path, **kw)


# ---- the command, stopped by signals -----------------------------------------------------

ARGS = ["-p", "eval_limit", "3", "-p", "eval_crop", "64", "-p", "attack_iterations", "80",
        "-p", "eval_attacks", "psnr,bpp", "-p", "eval_worst_case", "psnr,noise",
        "-p", "threads", "1", "-p", "progress", "false"]


def _cmd(ckpt, out, *extra):
    return [sys.executable, "-m", "nic_core.runs", "pretrain", "--eval-only", str(ckpt),
            "--out", str(out), *ARGS, *extra]


ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _run(cmd):
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=ENV)


def _stop_after_first_group(cmd, jpath: Path, sig) -> subprocess.CompletedProcess:
    """Start ``cmd``, send ``sig`` as soon as its journal holds one image group."""
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=ENV)
    t0 = time.time()
    while time.time() - t0 < 300 and p.poll() is None:
        if jpath.is_file() and len(jpath.read_text().splitlines()) >= 2:
            p.send_signal(sig)
            break
        time.sleep(0.02)
    out, err = p.communicate(timeout=300)
    return subprocess.CompletedProcess(cmd, p.returncode, out, err)


@pytest.fixture(scope="module")
def uninterrupted(smoke_run_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("journal") / "full.json"
    res = _run(_cmd(smoke_run_dir / "checkpoint.pt", out))
    assert res.returncode == 0, res.stderr[-3000:]
    assert not journal.journal_path(out).exists()  # removed once the results are written
    return json.loads(out.read_text())


def test_sigterm_stops_cleanly_refuses_a_changed_run_and_resumes(smoke_run_dir, uninterrupted,
                                                                 tmp_path):
    ckpt = smoke_run_dir / "checkpoint.pt"
    out = tmp_path / "m.json"
    jpath = journal.journal_path(out)
    res = _stop_after_first_group(_cmd(ckpt, out), jpath, signal.SIGTERM)
    assert res.returncode == 128 + signal.SIGTERM, (res.returncode, res.stderr[-3000:])
    stopped = [line for line in res.stderr.splitlines() if line.startswith("stopped:")]
    assert len(stopped) == 1 and stopped[0].startswith("stopped: 1 of 3 images saved in"), \
        res.stderr[-2000:]
    assert "rerun the same command to resume" in stopped[0] and not out.exists()
    kept = jpath.read_text()

    # a changed setting: refused, named, journal untouched
    res = _run(_cmd(ckpt, out, "-p", "eps", "0.001"))
    errors = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
    assert res.returncode == 1 and len(errors) == 1, res.stderr[-2000:]
    assert "settings.eps: was 0.0005, now 0.001" in errors[0] and "--fresh" in errors[0]
    assert jpath.read_text() == kept and not out.exists()

    # the same command resumes: one group read back, the results those of an uninterrupted run
    res = _run(_cmd(ckpt, out))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "resuming: 1 of 3 images" in res.stdout, res.stdout[-2000:]
    assert _strip(json.loads(out.read_text())) == _strip(uninterrupted)
    assert not jpath.exists()


def test_fresh_starts_over_another_evaluations_journal(smoke_run_dir, tmp_path):
    out = tmp_path / "m.json"
    jpath = journal.journal_path(out)
    jpath.write_text(json.dumps({"journal": 1, "header": {"settings": {"eps": 1}}}) + "\n")
    res = _run(_cmd(smoke_run_dir / "checkpoint.pt", out, "-p", "attack_iterations", "2",
                    "--fresh"))
    assert res.returncode == 0 and "resuming" not in res.stdout, res.stderr[-2000:]
    assert json.loads(out.read_text())["attacks"]["psnr"]["iterations"] == 2
    assert not jpath.exists()


def _kill_all_with(arg: str) -> None:
    """kill -9 every process whose command line holds ``arg`` (a job and all its workers)."""
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and arg.encode() in (d / "cmdline").read_bytes():
                os.kill(int(d.name), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            pass


def test_each_rank_journals_its_shard_and_a_resume_may_change_the_process_count(
        smoke_run_dir, uninterrupted, tmp_path):
    """Under torchrun with 2 processes each rank journals its own file; the job killed (-9,
    all of it) once rank 1 saved its group, a torn line added, resumes on 1 process from every
    complete group of both ranks and gives the uninterrupted results."""
    from tests.test_distributed import _free_port
    ckpt = smoke_run_dir / "checkpoint.pt"
    out = tmp_path / "m.json"
    jpath = journal.journal_path(out)
    rank1 = jpath.with_name(jpath.name + ".rank1")
    torchrun = lambda: [sys.executable, "-m", "torch.distributed.run",  # noqa: E731
                        "--nproc_per_node=2", f"--master_port={_free_port()}",
                        *_cmd(ckpt, out)[1:]]
    p = subprocess.Popen(torchrun(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=ENV)
    lines = lambda f: len(f.read_text().splitlines()) if f.is_file() else 0  # noqa: E731
    t0 = time.time()
    while time.time() - t0 < 300 and p.poll() is None:
        if lines(rank1) >= 2:  # rank 1 saved its group (1); rank 0 has groups 0 and 2
            _kill_all_with(str(out))  # the workers too (torchrun starts them in own sessions)
            break
        time.sleep(0.02)
    _, err = p.communicate(timeout=60)
    assert p.returncode == -signal.SIGKILL, err[-3000:]
    saved = max(0, lines(jpath) - 1) + lines(rank1) - 1
    assert lines(rank1) == 2 and saved in (1, 2) and not out.exists()
    with open(rank1, "ab") as f:  # as if killed while writing a record: a torn last line
        f.write(b'{"key": "2", "rows": [{"name": "kod')
    res = _run(_cmd(ckpt, out))
    assert res.returncode == 0 and f"resuming: {saved} of 3 images" in res.stdout, \
        res.stderr[-2000:]
    assert _strip(json.loads(out.read_text())) == _strip(uninterrupted)
    assert not jpath.exists() and not rank1.exists()

