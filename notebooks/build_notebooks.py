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
            "results = runs.evaluate_run(model, {**cfg, 'stage': 'pretrain'}, name='pretrained')\n"
            "print(results['dataset'])\n"
            "viz.table1([results])"),
    ])


NOTEBOOKS = {"01_pretrain.ipynb": pretrain}


def build(out_dir: Path = HERE) -> list:
    written = []
    for name, make in NOTEBOOKS.items():
        path = out_dir / name
        nbformat.write(make(), path)
        written.append(path)
    return written


if __name__ == "__main__":
    for p in build():
        print("wrote", p)
