"""Write the numbered notebooks from this one file (the source of truth for their cells).

Run ``python notebooks/build_notebooks.py`` after editing; ``tests/test_notebooks.py`` fails when
a committed notebook differs from what this script writes. The ``parameters`` cell of each
notebook is generated from ``nic_core.config.defaults(stage)``, so the smoke defaults live in
one place.
"""
from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from nic_core import config  # noqa: E402

PAPER = "Cao et al., *Enhancing Adversarial Training with Prior Knowledge Distillation for " \
        "Robust Image Compression*, arXiv 2403.06700"


def parameters_cell(stage: str, **overrides) -> nbformat.NotebookNode:
    cfg = config.defaults(stage, **overrides)
    cfg.pop("stage")  # fixed by the notebook, not a parameter
    spec = config.schema(stage)
    width = max(len(f"{k} = {v!r}") for k, v in cfg.items())
    lines = ["# Parameters (smoke-sized defaults; papermill -p NAME VALUE or -f params/...yaml)"]
    lines += [f"{k} = {v!r}".ljust(width + 2) + f"# {spec[k][3]}" for k, v in cfg.items()]
    cell = new_code_cell("\n".join(lines))
    cell.metadata["tags"] = ["parameters"]
    return cell


def validate_cell(stage: str) -> nbformat.NotebookNode:
    return new_code_cell(
        "# Validate right after the parameters: unknown names, wrong types and ranges fail here\n"
        "from nic_core import config\n"
        f"cfg = config.from_notebook({stage!r}, globals())\n"
        "cfg")


def notebook(cells) -> nbformat.NotebookNode:
    nb = new_notebook(cells=cells)
    for i, cell in enumerate(nb.cells):  # stable ids: the committed files are reproducible
        cell.id = f"cell-{i:02d}"
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def pretrain() -> nbformat.NotebookNode:
    return notebook([
        new_markdown_cell(
            "# 01 · Pretraining the codec\n\n"
            f"The *pre-trained model* of {PAPER} (section 3.A): a CompressAI codec trained with "
            "the rate-distortion loss `lmbda * 255^2 * MSE + bpp`, net + aux optimisers. "
            "Then its clean rate-distortion on the test set (estimated and real bpp from "
            "bitstreams, PSNR, MS-SSIM) and its robustness under the paper's psnr and bpp "
            "attacks, written to `<run_dir>/metrics.json` (CompressAI eval JSON, extended).\n\n"
            "Defaults are smoke-sized (a minute on 2 CPU cores). The CPU reproduction: "
            "`papermill notebooks/01_pretrain.ipynb runs/cpu/01_pretrain.ipynb "
            "-f params/cpu/01_pretrain.yaml`."),
        parameters_cell("pretrain"),
        validate_cell("pretrain"),
        new_code_cell(
            "from pathlib import Path\n"
            "from nic_core import runs, viz\n\n"
            "model, history = runs.run_training('pretrain', cfg)\n"
            "viz.plot_training_curve(history, path=Path(cfg['run_dir']) / 'training_curve.png',\n"
            "                        title=f\"pretraining {cfg['model']}\");"),
        new_markdown_cell(
            "## Clean rate-distortion and robustness\n\n"
            "Real bpp comes from `compress()` after `update(force=True)`; attacks follow the "
            "paper's eq. 6 (psnr attack) and eq. 7 (bpp attack) with budget `eps` on the mean "
            "squared noise."),
        new_code_cell(
            "results = runs.evaluate_run(model, cfg)\n"
            "print(results['dataset'])\n"
            "viz.table1([results])"),
    ])


def teacher() -> nbformat.NotebookNode:
    return notebook([
        new_markdown_cell(
            "# 02 · Stage I: the robust teacher\n\n"
            f"Stage I of {PAPER} (section 2.1, Algorithm 1 lines 1-9): fine-tune the "
            "pretrained codec with `RD_loss + alpha * smooth_loss`, where `smooth_loss` "
            "(eq. 1) penalises the input gradients of `bpp_main` and of the latent `y` "
            "(see `nic_core.losses.smooth_loss` for the exact norms). The result is the "
            "*gradient model* of Table 1 and the teacher of Stage II.\n\n"
            "Needs the checkpoint of `01_pretrain.ipynb` (parameter `pretrained`). "
            "Ablations: `smooth_terms='bpp'` drops dy/dx, `smooth_terms='y'` drops "
            "dbpp_main/dx."),
        parameters_cell("teacher"),
        validate_cell("teacher"),
        new_code_cell(
            "from pathlib import Path\n"
            "from nic_core import runs, viz\n\n"
            "model, history = runs.run_training('teacher', cfg)\n"
            "viz.plot_training_curve(history, keys=runs.curve_keys(cfg),\n"
            "                        path=Path(cfg['run_dir']) / 'training_curve.png',\n"
            "                        title='Stage I: RD_loss + alpha * smooth_loss');"),
        new_markdown_cell("## Teacher vs pretrained: clean and under attack"),
        new_code_cell(
            "results = runs.evaluate_run(model, cfg)\n"
            "rows = runs.with_predecessors(cfg, results)\n"
            "display(viz.table1(rows))\n"
            "viz.plot_attack_deltas(rows);"),
    ])


def pkdt() -> nbformat.NotebookNode:
    return notebook([
        new_markdown_cell(
            "# 03 · Stage II: prior-knowledge distillation (PKDT)\n\n"
            f"Stage II of {PAPER} (section 2.2, Algorithm 1 lines 10-22). Each step: a batch "
            "`[x1, x2, x3]`; `x1` is psnr-attacked (`n_p` iterations) and `x2` bpp-attacked "
            "(`n_b`) against the current student in one batched call; the frozen teacher's "
            "bpp on the *clean* batch is the prior knowledge; loss = `||x_new - x_hat||_1 + "
            "alpha * |bpp_tc - bpp_ft| + beta * smooth_loss` (eq. 3-5).\n\n"
            "Baselines with the same loop: `method='adv'` (plain adversarial training, RD loss "
            "on the attacked batch, no teacher) and `method='ma2023'` (Chen & Ma's fine-tuning "
            "defence). Needs the checkpoints of notebooks 01 and 02."),
        parameters_cell("pkdt"),
        validate_cell("pkdt"),
        new_code_cell(
            "from pathlib import Path\n"
            "from nic_core import runs, viz\n\n"
            "model, history = runs.run_training('pkdt', cfg)\n"
            "viz.plot_training_curve(history, keys=runs.curve_keys(cfg),\n"
            "                        path=Path(cfg['run_dir']) / 'training_curve.png',\n"
            "                        title=f\"Stage II ({cfg['method']})\");"),
        new_markdown_cell(
            "## Table 1: pretrained vs teacher vs Stage II\n\n"
            "Read from each run's `metrics.json`; rows evaluated with other settings are "
            "left out (and said so)."),
        new_code_cell(
            "results = runs.evaluate_run(model, cfg)\n"
            "rows = runs.with_predecessors(cfg, results)\n"
            "display(viz.table1(rows))\n"
            "viz.plot_rd(rows)\n"
            "viz.plot_attack_deltas(rows);"),
    ])


NOTEBOOKS = {"01_pretrain.ipynb": pretrain, "02_teacher.ipynb": teacher, "03_pkdt.ipynb": pkdt}


def explorer_parameters_cell() -> nbformat.NotebookNode:
    """The explorer's parameters cell, from ``nic_core.explorer.SCHEMA`` (its own schema)."""
    from nic_core import explorer as ex

    cfg = ex.defaults()
    width = max(len(f"{k} = {v!r}") for k, v in cfg.items())
    lines = ["# Parameters (smoke-sized defaults; papermill -p NAME VALUE)"]
    lines += [f"{k} = {v!r}".ljust(width + 2) + f"# {ex.SCHEMA[k][3]}" for k, v in cfg.items()]
    cell = new_code_cell("\n".join(lines))
    cell.metadata["tags"] = ["parameters"]
    return cell


def explorer() -> nbformat.NotebookNode:
    return notebook([
        new_markdown_cell(
            "# 06 · Attack explorer\n\n"
            f"Look at the white-box attacks of {PAPER} (section 2.3) one image at a time: "
            "pick a Kodak image (a centre crop), an attack (the paper's psnr attack, eq. 6, and "
            "bpp attack, eq. 7, Chen & Ma's Ma2023, PGD, FGSM, random noise), the budget `eps` "
            "(mean squared noise per pixel; the paper uses 0.0005 and 0.001, i.e. a noise PSNR "
            "of 33 / 30 dB), the number of iterations, and the codecs to compare (by default "
            "the pretrained model of notebook 01 and the PKDT model of notebook 03).\n\n"
            "Shown side by side: the original, the adversarial image, the noise amplified, each "
            "model's reconstruction of the clean and of the attacked image, a table of bpp "
            "(estimated and real, from bitstreams) and PSNR clean vs attacked with the achieved "
            "noise MSE, and PSNR / bpp against eps.\n\n"
            "Results are cached per (image, attack, eps, iterations, model); `precompute` fills "
            "the eps grid in advance so the slider is instant. Without trained checkpoints the "
            "notebook says which notebook to run first and, with `train_if_missing`, trains a "
            "tiny codec on the spot (seconds) so there is something to see. Run headless "
            "(papermill / nbval) it stores one static figure at the default eps."),
        explorer_parameters_cell(),
        new_code_cell(
            "# Validate right after the parameters: the explorer's own schema, checked like\n"
            "# config.from_notebook checks the training stages (unknown names, types, ranges)\n"
            "from nic_core import explorer\n"
            "cfg = explorer.from_notebook(globals())\n"
            "cfg"),
        new_markdown_cell("## Codecs and test image"),
        new_code_cell(
            "ex = explorer.setup(cfg)\n"
            "cfg['image'] = explorer.pick_image(ex, cfg['image'])\n"
            "if cfg['precompute']:  # the eps grid in advance: the slider below is then instant\n"
            "    ex.precompute(cfg['image'], cfg['attack'], cfg['iterations'], progress=cfg['progress'])\n"
            "print(f\"{len(ex.models)} model(s): {', '.join(ex.models)}; {ex.n_attacks} attacks computed\")"),
        new_markdown_cell(
            "## Static figure at the default eps\n\n"
            "What a headless run (papermill, nbval) keeps: widget output is not stored in the "
            "notebook, this figure and table are."),
        new_code_cell("ex.show(cfg['image'], cfg['attack'], cfg['eps'], cfg['iterations'])"),
        new_markdown_cell(
            "## Interactive explorer\n\n"
            "Slow controls update when released (`continuous_update=False`); the current eps "
            "is computed first, then (with *precompute*) the rest of the grid, with a progress "
            "bar. Nothing already computed is ever recomputed."),
        new_code_cell(
            "ui = ex.widget(cfg['image'], cfg['attack'], cfg['eps'], cfg['iterations'],\n"
            "               precompute=cfg['precompute'])\n"
            "ui.box"),
    ])


NOTEBOOKS["06_attack_explorer.ipynb"] = explorer


STAGE_OF = {"01_pretrain": "pretrain", "02_teacher": "teacher", "03_pkdt": "pkdt"}


def smoke_params(stem: str) -> str:
    """``params/smoke/<stem>.yaml``: the notebook's default parameters, as a file."""
    import yaml
    from nic_core import explorer as _explorer

    if stem in STAGE_OF:
        cfg = config.defaults(STAGE_OF[stem])
        cfg.pop("stage")
    else:
        cfg = _explorer.defaults()
    return (f"# Smoke-sized defaults of notebooks/{stem}.ipynb (written by "
            "notebooks/build_notebooks.py;\n# identical to the notebook's parameters cell).\n"
            + yaml.safe_dump(cfg, sort_keys=False))


def build(out_dir: Path = HERE, params_dir: Path = HERE.parent / "params" / "smoke") -> list:
    written = []
    params_dir.mkdir(parents=True, exist_ok=True)
    for name, make in NOTEBOOKS.items():
        path = out_dir / name
        nbformat.write(make(), path)
        written.append(path)
        stem = name[:-len(".ipynb")]
        (params_dir / f"{stem}.yaml").write_text(smoke_params(stem))
        written.append(params_dir / f"{stem}.yaml")
    return written


if __name__ == "__main__":
    for p in build():
        print("wrote", p)
