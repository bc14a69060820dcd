"""The numbered notebooks: in sync with their generator, and executed headless with papermill.

Like pyhf's notebook tests: papermill from pytest, default (smoke) parameters, in order, each
notebook reading the run folders its predecessors wrote.
"""
import json
import os
import sys
from pathlib import Path

import nbformat
import papermill as pm
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "notebooks"))
import build_notebooks  # noqa: E402

CHAIN = [n for n in ("01_pretrain", "02_teacher", "03_pkdt") if n + ".ipynb" in build_notebooks.NOTEBOOKS]


def test_committed_notebooks_match_generator(tmp_path):
    for path in build_notebooks.build(tmp_path, tmp_path / "smoke"):
        folder = "params/smoke" if path.suffix == ".yaml" else "notebooks"
        committed = ROOT / folder / path.name
        assert committed.exists(), f"{path.name} missing: run make notebooks"
        assert committed.read_text() == path.read_text(), \
            f"{path.name} differs from notebooks/build_notebooks.py: run make notebooks"


def test_each_notebook_has_parameters_then_validation():
    for name in build_notebooks.NOTEBOOKS:
        nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
        tags = [c.metadata.get("tags", []) for c in nb.cells]
        i = next(i for i, t in enumerate(tags) if "parameters" in t)
        assert "config.from_notebook" in nb.cells[i + 1].source


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("nb")


def _run(name, workdir, **params):
    out = workdir / f"{name}.out.ipynb"
    pm.execute_notebook(str(ROOT / "notebooks" / f"{name}.ipynb"), str(out), parameters=params,
                        cwd=str(workdir), kernel_name="python3", progress_bar=False)
    return nbformat.read(out, as_version=4)


@pytest.mark.parametrize("name", CHAIN)
def test_notebook_runs_with_defaults(name, workdir):
    _run(name, workdir)
    stage_dir = workdir / "runs" / "smoke" / name
    metrics = json.loads((stage_dir / "metrics.json").read_text())
    assert {"name", "description", "results"} <= set(metrics)
    assert metrics["results"]["psnr-rgb"][0] > 10
    assert (stage_dir / "checkpoint.pt").exists()


def test_misspelt_parameter_is_an_error(workdir):
    with pytest.raises(pm.PapermillExecutionError, match="did you mean 'budget'"):
        _run("01_pretrain", workdir, budgte=3)


def test_wrong_type_is_an_error(workdir):
    with pytest.raises(pm.PapermillExecutionError, match="must be an integer"):
        _run("01_pretrain", workdir, budget="many")
