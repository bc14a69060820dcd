"""scripts/reproduce_cpu.sh, run dry: with ``PY=echo`` each Python command is printed instead of
run, so every step can be dispatched in a second without training or evaluating anything."""
import os
import re
import subprocess
from pathlib import Path

from nic_core import registry

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "reproduce_cpu.sh"


def dry(*steps):
    return subprocess.run([str(SCRIPT), *steps], env={**os.environ, "PY": "echo"}, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def default_steps():
    return re.search(r"STEPS=\((.*?)\)", SCRIPT.read_text(), re.S).group(1).split()


def test_every_default_step_reaches_a_branch_of_the_script():
    """Each step of STEPS (but `figures`, which runs `make figures`) is dispatched: the dry run
    of all of them ends with status 0 and no "unknown" step or rate point."""
    steps = [s for s in default_steps() if s != "figures"]
    assert len(steps) > 150
    out = dry(*steps)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "unknown" not in out.stdout + out.stderr


def test_every_results_file_is_written_by_the_last_step_of_its_command():
    """For each results file of the registry made by an evaluation step, that step (the last of
    its command) names the very file: as existing, or as the --out of the command it would run.
    A codec measured clean only (a `clean-*` step) writes metrics_clean.json beside the
    metrics_p2.json its key names (nic_core.tables.codecs reads it there)."""
    checked = 0
    for key, (path, cmd) in registry.RUNS.items():
        step = cmd.split()[-1]
        if not step.startswith(("eval-", "clean-", "jpeg")):
            continue  # trainings, ablations, tunings: folders of files, not one file
        if step.startswith("clean-"):
            path = path.replace("metrics_p2.json", "metrics_clean.json")
        out = dry(step)
        assert out.returncode == 0 and path in out.stdout, (key, step, out.stdout, out.stderr)
        checked += 1
    assert checked > 100


def test_an_unknown_rate_point_or_codec_stops_the_script():
    """A typo in a step's rate point stops with status 2 and names the known ones, for every
    stage (no training from a codec that does not exist, no evaluation of a guessed folder)."""
    for step in ("teacher-q9", "pkdt-q9", "eval-pkdt-q9", "eval-k24-pkdt-q9", "eval-k24-q9"):
        out = dry(step)
        assert out.returncode == 2, step
        assert "unknown rate point 'q9'" in out.stderr and "q6widep256long2" in out.stderr, step
    out = dry("q9")
    assert out.returncode == 2 and "no params/cpu/01_pretrain_hyper-q9.yaml" in out.stderr


def test_a_rate_point_resolves_to_its_codec_its_teacher_and_its_params(tmp_path):
    """In a copy of the script and params without results (a fresh machine's view), Stage II at
    q2 trains from hyper-q2 with hyper-q2's lmbda and its own teacher, and its Kodak-24
    evaluation reads the packed model and writes the registry's file."""
    import shutil
    for d in ("scripts", "params"):
        shutil.copytree(ROOT / d, tmp_path / d)
    run = [str(tmp_path / "scripts" / "reproduce_cpu.sh")]
    env = {**os.environ, "PY": "echo"}
    out = subprocess.run(run + ["pkdt-q2"], env={**env, "RETRAIN": "1"}, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr
    line = next(ln for ln in out.stdout.splitlines() if "nic_core.runs pkdt" in ln)
    assert "-p teacher models/cpu/hyper-q2-teacher/model.pt" in line
    assert "-p lmbda 0.0035" in line and "-p pretrained models/cpu/hyper-q2/model.pt" in line
    assert "-p run_dir runs/cpu/hyper-q2-pkdt" in line
    (tmp_path / "models" / "cpu" / "hyper-q2-pkdt").mkdir(parents=True, exist_ok=True)
    (tmp_path / "models" / "cpu" / "hyper-q2-pkdt" / "model.pt").touch()  # trained
    out = subprocess.run(run + ["eval-k24-pkdt-q2"], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "--eval-only models/cpu/hyper-q2-pkdt/model.pt" in out.stdout
    assert f"--out {registry.RUNS['pkdt-q2-kodak24'][0]}" in out.stdout
