"""The verdicts' statistics (issue 33): paired t-intervals, sign-flip p-values, Benjamini-Hochberg
over every cell of a table, and the committed grid's marks read off its corrected p-values."""
import csv
from pathlib import Path

import pytest

from nic_core import claims, stats

ROOT = Path(__file__).resolve().parents[1]


def test_paired_test_numbers():
    v = stats.paired_test([1.0, 2.0, 3.0, 4.0])
    # mean 2.5, se 1.2910 / 2, t(0.975, 3) = 3.1824: [0.446, 4.554]
    assert (v["mean"], v["n"]) == (2.5, 4)
    assert v["lo"] == pytest.approx(0.4457, abs=1e-3) and v["hi"] == pytest.approx(4.5543, abs=1e-3)
    assert v["p"] == 0.125 and v["exact"]  # 4 images: 2 of 16 sign patterns are as extreme
    assert stats.paired_test([0.3, 0.1, 0.5, 0.2, 0.4, 0.6, 0.2, 0.1])["p"] == 2 / 256
    mixed = stats.paired_test([0.5, -0.4, 0.3, -0.2, 0.1, 0.2, -0.3, 0.1])
    assert mixed["p"] > 0.5 and mixed["zero_in_ci"]
    many = stats.paired_test([0.2 + 0.01 * i for i in range(24)])  # random flips beyond 16
    assert not many["exact"] and many["p"] < 1e-3
    with pytest.raises(ValueError, match="at least 2"):
        stats.paired_test([1.0])


def test_benjamini_hochberg():
    assert stats.fdr([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.02, 0.04, 0.04, 0.02])
    assert stats.fdr([]) == []


def test_a_cell_significant_alone_is_not_after_the_correction():
    one = {"mean": 0.4, "good": 1, "p": 0.03}
    assert claims.decide([one])[0]["verdict"] == "confirmed at this scale"
    crowd = claims.decide([one] + [{"mean": 0.1, "good": 1, "p": 0.6}] * 9)
    assert crowd[0]["q"] == pytest.approx(0.3) and crowd[0]["verdict"].startswith("not confirmed")
    assert claims.decide([{"mean": -0.4, "good": 1, "p": 0.001}])[0]["verdict"] == \
        "refuted at this scale"


def test_the_committed_grid_marks_follow_its_corrected_p_values():
    """results/cpu/tables/verdict_grid.csv (make figures): every cell's q is Benjamini-Hochberg
    over all the grid's p-values, its mark follows q < 0.05 and its direction, and no cell on
    the 4 DIV2K images is marked (a sign-flip test over 4 images cannot go below p = 0.125)."""
    with open(ROOT / "results/cpu/tables/verdict_grid.csv") as f:
        cells = list(csv.DictReader(f))
    assert len(cells) > 150
    qs = stats.fdr([float(c["p"]) for c in cells])
    for c, q in zip(cells, qs):
        assert float(c["q"]) == pytest.approx(q, abs=1e-3), c
        good = (float(c["mean"]) > 0) == (c["side"] == "psnr")
        want = ("not confirmed (not significant at FDR 5 %)" if q >= 0.05 else
                "confirmed at this scale" if good else "refuted at this scale")
        assert c["verdict"] == want, c
    div2k = [c for c in cells if "DIV2K" in c["setting"]]
    assert div2k and all(c["verdict"].startswith("not confirmed") for c in div2k)
    assert all(int(c["n"]) == 4 for c in div2k)


def test_the_absolute_ruler_reverses_pkdt_over_adversarial_training():
    """Issue 33's example, from the committed grid: on hyper-q4, Kodak 8, PKDT takes less damage
    than adversarial training (+0.45 dB) but its PSNR *under* the worst psnr attack is 0.50 dB
    lower, because it starts 0.95 dB lower clean."""
    with open(ROOT / "results/cpu/tables/verdict_grid.csv") as f:
        cells = {(c["ruler"], c["setting"], c["comparison"], c["side"]): c
                 for c in csv.DictReader(f)}
    key = ("hyper-q4, Kodak 8", "PKDT > adversarial training", "psnr")
    damage, absolute = cells[("damage", *key)], cells[("absolute", *key)]
    assert float(damage["mean"]) == pytest.approx(0.45, abs=0.005)
    assert float(absolute["mean"]) == pytest.approx(-0.50, abs=0.01)
    assert float(absolute["clean"]) == pytest.approx(-0.95, abs=0.01)
    assert damage["verdict"] == "confirmed at this scale"
    assert absolute["verdict"] == "refuted at this scale"


def test_rejudging_the_worst_case_under_another_rate_hold():
    """worst_case.rejudge on the committed hyper-q1 results: at 5 % it gives the file's own worst
    case; at 10 % random noise no longer wins any image (the gradient attacks that moved the
    rate 6-10 % now count) and the worst case deepens."""
    from nic_core import results, worst_case
    r = results.load_results(ROOT / "results/cpu/hyper-q1/metrics_p2.json")
    same = worst_case.rejudge(r, 0.05)
    assert same["attacks"]["worst-psnr"]["results"] == r["attacks"]["worst-psnr"]["results"]
    assert same["attacks"]["worst-psnr"]["wins"]["noise"] == 2
    loose = worst_case.rejudge(r, 0.10)
    assert loose["attacks"]["worst-psnr"]["wins"]["noise"] == 0
    assert loose["attacks"]["worst-psnr"]["results"]["delta-psnr"][0] == pytest.approx(-1.719,
                                                                                         abs=1e-3)
    assert loose["config"]["evaluation"]["rate_tol"] == 0.10
    nested = results.load_results(ROOT / "results/cpu/hyper-q4/metrics_p2_eps1e-3_nested.json")
    with pytest.raises(ValueError, match="nested over two budgets"):
        worst_case.rejudge(nested, 0.10)


def test_the_committed_sensitivity_table_shows_the_rate_hold_deciding_cells():
    """Issue 33: with a 10 % rate hold PKDT > adversarial training at lmbda 0.0018 moves from
    -0.08 dB (not significant) to +0.27 dB (confirmed)."""
    text = (ROOT / "results/cpu/tables/sensitivity_rate_tol.md").read_text()
    assert "| damage | lmbda 0.0018 (hyper-q1) | PKDT > adversarial training | psnr | -0.08 ~ | " \
           "+0.27 ✓ |" in text
    changed, cells = (int(n) for n in text.split(" cells change")[0].split(" of "))
    assert 0 < changed < cells / 10


def _curve_results(name, shift_db, rate_factor=1.0):
    """Four results files of one method (nic_core.bd.CURVES' keys) on two images, clean and under
    the worst attacks, PSNR ``shift_db`` above a fixed curve."""
    from nic_core import bd
    out = {}
    for i, key in enumerate(bd.CURVES[name]):
        rows = []
        for j, img in enumerate(("a", "b")):
            bpp = (0.3 + 0.25 * i) * (1 + 0.1 * j) * rate_factor
            q = 26 + 2.5 * i + j + shift_db
            att = {"worst-psnr": {"bpp": bpp, "psnr-rgb": q - 4},
                   "worst-bpp": {"bpp": 1.4 * bpp, "psnr-rgb": q - 0.5}}
            rows.append({"name": img, "bpp": bpp, "psnr-rgb": q, "attacks": att})
        out[key] = {"name": key, "per_image": rows}
    return out


def test_bd_per_image_recovers_a_known_shift():
    from nic_core import bd
    found = {**_curve_results("pretrained", 0.0), **_curve_results("pkdt", 0.5)}
    d = bd.per_image_bd(found, "pretrained", "pkdt", "worst-psnr", "psnr")
    assert d == pytest.approx({"a": 0.5, "b": 0.5}, abs=1e-6)
    found = {**_curve_results("pretrained", 0.0), **_curve_results("pkdt", 0.0, 1.2)}
    r = bd.per_image_bd(found, "pretrained", "pkdt", None, "rate")
    assert r == pytest.approx({"a": 20.0, "b": 20.0}, abs=1e-3)  # 1.2 x the rate: +20 %


def test_the_committed_matched_rate_ruler_under_attack():
    """results/cpu/tables/bd_under_attack.md: over the four rate points, PKDT's curve under the
    psnr attack lies below adversarial training's (refuted at FDR 5 %)."""
    text = (ROOT / "results/cpu/tables/bd_under_attack.md").read_text()
    row = next(ln for ln in text.splitlines()
               if "PKDT > adversarial training" in ln and "BD-PSNR" in ln)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2] == "8" and float(cells[3]) == pytest.approx(-0.62, abs=0.005)
    assert cells[-1] == "refuted at this scale"
