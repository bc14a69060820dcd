"""The numbered notebooks are the source (edited and saved in JupyterLab): checked for what
matters (the parameters cell equals the schema, validation follows it), executed headless with
papermill like pyhf's notebook tests, and re-run cell by cell like a JupyterLab user would.

Each test sets up what it needs in its own folder: 02 and 03 get their pretrained / teacher
checkpoints from the session's smoke codec, not from another test's run.
"""
import ast
import json
from pathlib import Path

import nbformat
import papermill as pm
import pytest
import yaml

from nic_core import checkpoints, config, runs
from nic_core.metrics import psnr, real_codec

ROOT = Path(__file__).resolve().parents[1]
NB = ROOT / "notebooks"
STAGES = {"01_pretrain": "pretrain", "02_teacher": "teacher", "03_pkdt": "pkdt",
          "04_ablations": "ablation", "05_figures": "figures", "06_attack_explorer": "explorer"}


def parameters_cell(nb):
    i = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    return i, nb.cells[i]


def structure_problems(path: Path, stage: str) -> list:
    """What would make a notebook disagree with the schema (empty when it agrees)."""
    nb = nbformat.read(path, as_version=4)
    i, cell = parameters_cell(nb)
    values = {}
    for node in ast.parse(cell.source).body:
        if isinstance(node, ast.Assign):
            values[node.targets[0].id] = ast.literal_eval(node.value)
    want = config.defaults(stage)
    want.pop("stage")
    problems = []
    if values != want:
        diff = sorted(set(values) ^ set(want)) or \
            sorted(k for k in want if values.get(k) != want[k])
        problems.append(f"{path.name}: parameters cell differs from config.schema({stage!r}) "
                        f"in {diff}; paste config.parameters_source({stage!r})")
    if "from_notebook" not in nb.cells[i + 1].source:
        problems.append(f"{path.name}: the cell after the parameters must validate them")
    return problems


@pytest.mark.parametrize("stem", sorted(STAGES))
def test_parameters_cell_matches_the_schema(stem):
    assert structure_problems(NB / f"{stem}.ipynb", STAGES[stem]) == []
    smoke = yaml.safe_load((ROOT / "params" / "smoke" / f"{stem}.yaml").read_text())
    want = config.defaults(STAGES[stem])
    want.pop("stage")
    assert smoke == want, f"params/smoke/{stem}.yaml differs from the notebook's defaults"


def test_an_edited_and_saved_notebook_still_passes(tmp_path):
    """Editing prose and code, saving outputs (as JupyterLab does) breaks no test; changing a
    default without the schema is caught, naming the parameter."""
    nb = nbformat.read(NB / "01_pretrain.ipynb", as_version=4)
    nb.cells[0].source += "\n\nMy own notes."
    code = next(c for c in nb.cells[3:] if c.cell_type == "code")
    code.source = "# tried a smaller figure\n" + code.source
    code.outputs = [nbformat.v4.new_output("stream", name="stdout", text="step 1 ...\n")]
    code.execution_count = 7
    path = tmp_path / "01_pretrain.ipynb"
    nbformat.write(nb, path)
    assert structure_problems(path, "pretrain") == []
    i, cell = parameters_cell(nb)
    cell.source = cell.source.replace("budget = 150", "budget = 151")
    nbformat.write(nb, path)
    assert "['budget']" in structure_problems(path, "pretrain")[0]


def test_validation_reads_parameters_explicitly():
    """Only the schema's names are read: what later cells define never matters; names the
    parameters cells assign (papermill's injected one, the notebook's own) must be known."""
    ns = {"budget": 3, "cfg": {"x": 1}, "history": [], "results": {}, "codec": object(),
          "psnr": 31.2, "In": ["", config.parameters_source("pretrain"), "# Parameters\nbudget = 3\n"]}
    assert config.from_notebook("pretrain", ns)["budget"] == 3
    with pytest.raises(ValueError, match="did you mean 'budget'"):
        config.from_notebook("pretrain", {**ns, "budgte": 4,
                                          "In": ns["In"] + ["# Parameters\nbudgte = 4\n"]})
    edited = config.parameters_source("pretrain") + "\nlmbad = 0.1"  # typo in the own cell
    with pytest.raises(ValueError, match="did you mean 'lmbda'"):
        config.from_notebook("pretrain", {**ns, "lmbad": 0.1, "In": ["", edited]})


def _papermill(stem, cwd, **params):
    out = cwd / f"{stem}.out.ipynb"
    pm.execute_notebook(str(NB / f"{stem}.ipynb"), str(out), parameters=params, cwd=str(cwd),
                        kernel_name="python3", progress_bar=False)
    return out


def _check_metrics(run_dir: Path):
    """The metrics the notebook wrote are the checkpoint's real numbers on its test images."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    ck = run_dir / "checkpoint.pt"
    model = checkpoints.load_model(ck)
    cfg = {**metrics["config"], "data_root": metrics["config"].get("data_root")}
    (name, img), = runs.test_images({**cfg, "eval_limit": 1})[0][:1]
    x = img.unsqueeze(0)
    real = real_codec(model, x)
    row = metrics["per_image"][0]
    assert row["name"] == name
    assert row["bpp"] == pytest.approx(float(real["bpp"][0]), rel=1e-6)
    assert row["psnr-rgb"] == pytest.approx(float(psnr(x, real["x_hat"])), abs=1e-3)
    assert metrics["results"]["bpp"][0] == pytest.approx(
        sum(r["bpp"] for r in metrics["per_image"]) / len(metrics["per_image"]), rel=1e-6)


@pytest.mark.parametrize("stem", ["01_pretrain", "02_teacher", "03_pkdt"])
def test_notebook_runs_with_defaults(stem, smoke_run_dir, tmp_path):
    ck = str(smoke_run_dir / "checkpoint.pt")
    given = {"01_pretrain": {}, "02_teacher": {"pretrained": ck},
             "03_pkdt": {"pretrained": ck, "teacher": ck}}[stem]
    _papermill(stem, tmp_path, **given)
    _check_metrics(tmp_path / "runs" / "smoke" / stem)


def test_ablations_notebook_trains_each_variant(smoke_run_dir, tmp_path):
    """04: every Table 2 variant is its own run with its own override, results copied."""
    ck = str(smoke_run_dir / "checkpoint.pt")
    _papermill("04_ablations", tmp_path, pretrained=ck, teacher=ck, variants="no-smooth,no-dbpp",
               results_dir=str(tmp_path / "results"))
    runs_dir = tmp_path / "runs" / "smoke" / "04_ablations"
    cfgs = {v: checkpoints.load_checkpoint(runs_dir / v / "checkpoint.pt")["config"]
            for v in ("no-smooth", "no-dbpp")}
    assert cfgs["no-smooth"]["beta"] == 0.0 and cfgs["no-smooth"]["smooth_terms"] == "bpp,y"
    assert cfgs["no-dbpp"]["beta"] > 0 and cfgs["no-dbpp"]["smooth_terms"] == "y"
    for v in cfgs:
        _check_metrics(runs_dir / v)
        copied = json.loads((tmp_path / "results" / v / "metrics.json").read_text())
        assert copied == json.loads((runs_dir / v / "metrics.json").read_text())
    assert not (runs_dir / "no-dydx").exists()


def test_figures_notebook_remakes_the_committed_tables(tmp_path):
    """05 (what make figures runs) rebuilds the committed tables byte for byte (no more, no
    fewer) and draws a PNG and a PDF for each figure it can."""
    from nic_core import figures
    _papermill("05_figures", tmp_path, root=str(ROOT), out_dir=str(tmp_path / "fig"),
               tables_dir=str(tmp_path / "tab"), visual_iterations=3)  # the grid's attack: short
    made = sorted(p.name for p in (tmp_path / "tab").iterdir())
    assert made == sorted(p.name for p in (ROOT / "results" / "cpu" / "tables").iterdir())
    assert {"table1.md", "table1_kodak24.md", "table2_q4long.md", "verdict_grid.md"} <= set(made)
    for name in made:  # every table it makes is committed, each byte for byte
        assert (tmp_path / "tab" / name).read_text() == \
            (ROOT / "results" / "cpu" / "tables" / name).read_text(), name
    fig = tmp_path / "fig"
    made = sorted(p.name for p in fig.iterdir()) if fig.exists() else []
    committed = sorted(p.name for p in (ROOT / "figures").iterdir()
                       if p.stem.startswith(("fig1_", "fig3_", "fig4_", "fig5_", "fig_verdicts",
                                             "fig_tuning", "fig_codec_steps", "learning_",
                                             "visual_")))
    assert made == committed, (made, committed)
    assert figures.PALETTE["pkdt"] != figures.PALETTE["adv"]


def test_rerunning_cells_like_jupyterlab(tmp_path):
    """Run every cell, then the validation cell and the training cell again (the most common
    thing a notebook user does): nothing breaks, the parameter ``model`` keeps its value."""
    from nbclient import NotebookClient
    nb = nbformat.read(NB / "01_pretrain.ipynb", as_version=4)
    i, cell = parameters_cell(nb)
    cell.source = cell.source.replace("budget = 150", "budget = 4") \
        .replace("attack_iterations = 20", "attack_iterations = 0")
    client = NotebookClient(nb, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}},
                            timeout=600)
    with client.setup_kernel():
        for j, c in enumerate(nb.cells):
            client.execute_cell(c, j)
        train = next(j for j, c in enumerate(nb.cells) if "run_training" in c.source)
        for j in (i + 1, train, i + 1):
            client.execute_cell(nb.cells[j], j)
        probe = nbformat.v4.new_code_cell("print(repr(model), cfg['model'], type(codec).__name__)")
        nb.cells.append(probe)
        client.execute_cell(probe, len(nb.cells) - 1)
    text = "".join(o.get("text", "") for o in probe.outputs)
    assert text.split() == ["'hyper'", "hyper", "ScaleHyperprior"]


def test_misspelt_parameter_is_an_error(tmp_path):
    with pytest.raises(pm.PapermillExecutionError, match="did you mean 'budget'"):
        _papermill("01_pretrain", tmp_path, budgte=3)


def test_wrong_type_is_an_error(tmp_path):
    with pytest.raises(pm.PapermillExecutionError, match="must be an integer"):
        _papermill("01_pretrain", tmp_path, budget="many")
