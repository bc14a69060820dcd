"""Every command-line entry point ends a user's mistake the same way (nic_core.cli): one
``error:`` line naming what is wrong, exit status 1, no traceback. Bad images (issue 12: "every
bad case of data holds in every entry point") are tried on the training / evaluation CLI, the
transfer / saturation CLI, the explorer's CLI and JPEG's curve; the download command's own
cases are in tests/test_data.py, the explorer widget's in tests/test_explorer.py.
"""
import ast
import importlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nic_core import cli

ROOT = Path(__file__).resolve().parents[1]
MODEL = "models/cpu/hyper-q4/model.pt"  # committed; loading it is all these commands get to do


@pytest.fixture(scope="module")
def bad_root(tmp_path_factory):
    """A data root whose Kodak folder holds a truncated PNG first and a good one second."""
    root = tmp_path_factory.mktemp("bad_data")
    (root / "kodak").mkdir()
    rng = np.random.default_rng(0)
    good = root / "kodak" / "kodim02.png"
    Image.fromarray(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)).save(good)
    (root / "kodak" / "kodim01.png").write_bytes(good.read_bytes()[:300])
    return root


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("NIC_DEBUG", None)
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def _call(module: str, *args: str, capsys) -> tuple:
    """``python -m nic_core.MODULE ARGS`` in this process: ``cli.run`` on the module's main
    (what its ``__main__`` block does; test_every_command_line_module_... checks that)."""
    main = importlib.import_module(f"nic_core.{module}").main
    code = cli.run(main, list(args))
    return code, capsys.readouterr().err


def _assert_clean_error(code: int, err: str, *needles: str) -> None:
    assert code == 1, err
    assert "Traceback" not in err and err.startswith("error: "), err
    for n in needles:
        assert n in err, err


EVAL = ("-p", "eval_limit", "2", "-p", "progress", "false")


@pytest.mark.parametrize("command", [
    ("runs", "pretrain", "--eval-only", MODEL, "--out", "{tmp}/m.json", *EVAL),
    ("evaluate", "saturation", "--model", f"a={MODEL}", "--iterations", "1",
     "--out", "{tmp}/s.json", *EVAL),
    ("explorer", "-p", "image", "kodim01", "-p", "checkpoints", MODEL,
     "-p", "precompute", "false", "-p", "progress", "false", "--out", "{tmp}/f.png"),
    ("jpeg", "--out", "{tmp}/j.json", *EVAL),
], ids=["runs-eval", "evaluate-saturation", "explorer", "jpeg"])
def test_a_truncated_image_is_a_one_line_error(command, bad_root, tmp_path, capsys,
                                               monkeypatch):
    monkeypatch.chdir(ROOT)
    args = [a.format(tmp=tmp_path) for a in command[1:]]
    code, err = _call(command[0], *args, "-p", "data_root", str(bad_root), capsys=capsys)
    _assert_clean_error(code, err, "cannot read image", "kodim01.png", "truncated")
    assert not list(tmp_path.iterdir()), "no results file for a failed run"


def test_a_real_command_line_ends_with_the_error_line(bad_root, tmp_path):
    """The same through ``python -m`` in a fresh process (exit status, stderr)."""
    proc = _run("nic_core.runs", "pretrain", "--eval-only", MODEL, "--out",
                str(tmp_path / "m.json"), *EVAL, "-p", "data_root", str(bad_root))
    _assert_clean_error(proc.returncode, proc.stderr[proc.stderr.find("error: "):],
                        "cannot read image", "kodim01.png")
    assert "Traceback" not in proc.stderr


def test_parameter_and_checkpoint_mistakes_are_one_line_errors(tmp_path, capsys):
    _assert_clean_error(*_call("runs", "pretrain", "-p", "lr", "-1", capsys=capsys),
                        "'lr'", "-1")
    _assert_clean_error(*_call("runs", "pretrain", "-p", "epz", "1", capsys=capsys),
                        "'epz'", "did you mean 'eps'")
    _assert_clean_error(*_call("runs", "pretrain", "-p", "budget", "many", capsys=capsys),
                        "'budget'", "must be an integer")  # a wrong type, not a traceback
    _assert_clean_error(*_call("runs", "pretrain", "-p", "data_root", "x", "-p",
                               "eval_worst_case", "", "-p", "progress", "maybe",
                               capsys=capsys), "'progress'", "True or False")
    missing = tmp_path / "nope.pt"
    _assert_clean_error(*_call("runs", "pretrain", "--eval-only", str(missing),
                               capsys=capsys), str(missing))
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    _assert_clean_error(*_call("runs", "pretrain", "--eval-only", str(empty), capsys=capsys),
                        str(empty), "empty")
    _assert_clean_error(*_call("explorer", "-p", "eps", "-0.1", "--out", str(tmp_path / "f"),
                               capsys=capsys), "'eps'")


def test_nic_debug_shows_the_traceback(monkeypatch, capsys):
    def main(argv):
        raise ValueError("bad value")

    assert cli.run(main, []) == 1
    assert "error: bad value" in capsys.readouterr().err
    monkeypatch.setenv("NIC_DEBUG", "1")
    with pytest.raises(ValueError, match="bad value"):
        cli.run(main, [])

    def interrupted(argv):
        raise KeyboardInterrupt

    assert cli.run(interrupted, []) == 130

    def bug(argv):
        raise RuntimeError("a bug keeps its traceback")

    monkeypatch.delenv("NIC_DEBUG")
    with pytest.raises(RuntimeError):
        cli.run(bug, [])


def test_every_command_line_module_ends_through_cli_run():
    """Each ``if __name__ == "__main__"`` block of nic_core calls ``cli.run(main)``."""
    found = []
    for path in sorted((ROOT / "nic_core").glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test):
                found.append(path.stem)
                assert "cli.run(main)" in ast.unparse(node), path
    assert {"runs", "evaluate", "explorer", "jpeg", "data", "download", "figures",
            "checkpoints", "diagnostics", "bench", "viz"} <= set(found)
