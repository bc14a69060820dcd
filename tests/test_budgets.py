"""Nested budgets (nic_core.budgets): the worst case at eps 1e-3 over the eps 5e-4 attacks too."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from nic_core import budgets
from nic_core.results import load_results

ROOT = Path(__file__).resolve().parents[1]


def _row(psnr, bpp, held=True, winner="bpp"):
    return {"psnr-rgb": psnr, "ms-ssim-rgb": None, "bpp": bpp, "bpp-est": bpp,
            "delta-psnr": psnr - 30.0, "delta-bpp": bpp - 1.0, "noise-mse": 1e-3,
            "noise-psnr": 30.0, "budget-use": 1.0, "seconds": 1.0, "held": held,
            "winner": winner}


def _file(eps, worst, clean=(30.0, 1.0), names=("a", "b")):
    """A worst-case results dict: ``worst`` = per image (psnr-side row, rate-side row)."""
    per_image = [{"name": n, "psnr-rgb": clean[0], "bpp": clean[1],
                  "attacks": {"worst-psnr": p, "worst-bpp": b}} for n, (p, b) in zip(names, worst)]
    blocks = {f"worst-{w}": {"eps": eps, "members": ["psnr", "bpp"], "wins": {}, "results": {}}
              for w in ("psnr", "bpp")}
    return {"name": f"m eps {eps:g}", "results": {"psnr-rgb": [clean[0]], "bpp": [clean[1]]},
            "config": {"evaluation": {"eps": eps, "rate_tol": 0.05, "psnr_tol": 1.0}},
            "attacks": blocks, "per_image": per_image, "findings": []}


def test_nest_takes_the_worse_row_that_held_per_image_and_recounts():
    large = _file(1e-3, [(_row(24.0, 1.0, winner="psnr"), _row(29.5, 1.20)),
                         (_row(25.0, 1.0, winner="psnr"), _row(29.5, 1.30))])
    small = _file(5e-4, [(_row(26.0, 1.0, winner="psnr"), _row(29.6, 1.35)),  # small wins bpp
                         (_row(24.5, 1.0, winner="psnr"), _row(28.0, 1.50, held=False))])
    out = budgets.nest(large, small)
    wb = [r["attacks"]["worst-bpp"] for r in out["per_image"]]
    assert [r["bpp"] for r in wb] == [1.35, 1.30]  # image b: the 1.50 broke the PSNR rule
    assert wb[0]["winner"] == "bpp (eps 0.0005)" and wb[1]["winner"] == "bpp"
    assert wb[0]["budget-use"] == 0.5 and wb[1]["budget-use"] == 1.0  # of the larger budget
    wp = [r["attacks"]["worst-psnr"]["psnr-rgb"] for r in out["per_image"]]
    assert wp == [24.0, 24.5]
    blk = out["attacks"]["worst-bpp"]
    assert blk["results"]["bpp"] == [pytest.approx(1.325)]
    assert blk["wins"] == {"psnr": 0, "bpp": 1, "psnr (eps 0.0005)": 0, "bpp (eps 0.0005)": 1}
    assert out["attacks"]["worst-psnr"]["results"]["psnr-rgb"] == [pytest.approx(24.25)]
    assert out["config"]["evaluation"]["nested"] == {"eps": 5e-4, "name": "m eps 0.0005"}
    assert out["findings"] == ["b: the eps 0.0005 attacks beat the eps 0.001 ones on psnr",
                               "a: the eps 0.0005 attacks beat the eps 0.001 ones on bpp"]
    assert large["per_image"][0]["attacks"]["worst-bpp"]["bpp"] == 1.20  # input left as it was


def test_nest_refuses_what_is_not_one_model_at_two_budgets():
    rows = [(_row(24.0, 1.0), _row(29.5, 1.2))] * 2
    big, small = _file(1e-3, rows), _file(5e-4, rows)
    with pytest.raises(ValueError, match="smaller budget"):
        budgets.nest(small, big)
    with pytest.raises(ValueError, match="different models"):
        budgets.nest(big, _file(5e-4, rows, clean=(30.2, 1.0)))
    with pytest.raises(ValueError, match="other images"):
        budgets.nest(big, _file(5e-4, rows, names=("a", "c")))
    other = _file(5e-4, rows)
    other["config"]["evaluation"]["psnr_tol"] = 2.0
    with pytest.raises(ValueError, match="other rules"):
        budgets.nest(big, other)
    del other["attacks"]["worst-bpp"]
    with pytest.raises(ValueError, match="not a worst-case evaluation"):
        budgets.nest(big, other)
    # issue 33: files that name their weights must name the same ones
    hashed = _file(5e-4, rows)
    big["config"]["evaluation"]["weights_sha256"] = "a" * 64
    hashed["config"]["evaluation"]["weights_sha256"] = "b" * 64
    with pytest.raises(ValueError, match="other weights"):
        budgets.nest(big, hashed)
    hashed["config"]["evaluation"]["weights_sha256"] = "a" * 64
    assert budgets.nest(big, hashed)["per_image"]


def test_committed_nested_files_are_the_nest_of_their_two_files(tmp_path):
    """Every committed eps 1e-3 nested file is reproduced by the CLI from its two inputs, and its
    worst case is at least as strong as either budget's on every image."""
    files = sorted(ROOT.glob("results/cpu/*/metrics_p2_eps1e-3_nested.json"))
    assert len(files) >= 6
    for f in files:
        nested = load_results(f)
        large = f.with_name("metrics_p2_eps1e-3.json")
        small = f.with_name("metrics_p2_retrained.json")
        small = small if small.exists() else f.with_name("metrics_p2.json")
        assert nested == budgets.nest(load_results(large), load_results(small)), f
        for a, b, c in zip(*(load_results(p)["per_image"] for p in (f, large, small))):
            n = a["attacks"]["worst-bpp"]
            for o in (b["attacks"]["worst-bpp"], c["attacks"]["worst-bpp"]):
                assert n["bpp"] >= o["bpp"] or not o["held"], (f, a["name"])
            assert a["attacks"]["worst-psnr"]["psnr-rgb"] <= b["attacks"]["worst-psnr"]["psnr-rgb"]
    f = files[0]
    out = tmp_path / "n.json"
    r = subprocess.run([sys.executable, "-m", "nic_core.budgets",
                        str(f.with_name("metrics_p2_eps1e-3.json")),
                        str(f.with_name("metrics_p2.json")), "--out", str(out)],
                       capture_output=True, text=True, cwd=ROOT)
    if f.with_name("metrics_p2_retrained.json").exists():
        assert r.returncode == 1 and "different models" in r.stderr
    else:
        assert r.returncode == 0, r.stderr
        assert json.loads(out.read_text()) == json.loads(f.read_text())


def test_cli_ends_a_mistake_with_one_error_line(tmp_path):
    """Swapped budgets: one ``error:`` line, status 1, no file written."""
    d = ROOT / "results/cpu/hyper-q4"
    out = tmp_path / "n.json"
    r = subprocess.run([sys.executable, "-m", "nic_core.budgets", str(d / "metrics_p2.json"),
                        str(d / "metrics_p2_eps1e-3.json"), "--out", str(out)],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 1 and not out.exists()
    assert "\nerror: the smaller budget (eps 0.001) must be below the larger" in "\n" + r.stderr
    assert "Traceback" not in r.stderr
