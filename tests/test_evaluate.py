"""Robustness evaluation, its JSON format, and the Table 1 / R-D views of it."""
import json
import math

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

from nic_core import viz  # noqa: E402
from nic_core.evaluate import ATTACK_KEYS, CLEAN_KEYS, evaluate_robustness, load_results, \
    save_results  # noqa: E402
from nic_core.models import build_model  # noqa: E402

ITERS = 6


@pytest.fixture(scope="module")
def smoke(_smoke_state):
    from nic_core.models import model_from_state_dict
    model = model_from_state_dict("hyper", _smoke_state["state_dict"])
    model.update(force=True)
    return model.eval()


@pytest.fixture(scope="module")
def images(kodak_small):
    return [(f"kodim{i + 1:02d}", t) for i, t in enumerate(kodak_small)]


@pytest.fixture(scope="module")
def results(smoke, images):
    smoke.train()  # evaluation must use eval mode and give the training mode back
    r = evaluate_robustness(smoke, images, attacks=("psnr", "bpp"), eps=5e-4,
                            iterations={"psnr": ITERS, "bpp": ITERS // 2}, name="smoke",
                            description="test", config={"lmbda": 0.013, "betas": (0.9, 0.99)},
                            dataset="kodak crops", progress=False)
    assert smoke.training and all(m.training for m in smoke.modules())
    smoke.eval()
    return r


def test_results_keys_and_shapes(results, images):
    assert results["name"] == "smoke" and results["dataset"] == "kodak crops"
    assert set(results["results"]) == set(CLEAN_KEYS)
    assert all(isinstance(v, list) and len(v) == 1 for v in results["results"].values())
    assert set(results["attacks"]) == {"psnr", "bpp"}
    for kind, block in results["attacks"].items():
        assert set(block) == {"eps", "iterations", "lr", "quant", "results"}
        assert set(block["results"]) == set(ATTACK_KEYS)
    assert results["attacks"]["psnr"]["iterations"] == ITERS
    assert results["attacks"]["bpp"]["iterations"] == ITERS // 2
    assert results["config"]["lmbda"] == 0.013
    assert results["config"]["betas"] == [0.9, 0.99]  # plain JSON values
    assert results["config"]["evaluation"]["real"] is True
    per = results["per_image"]
    assert [p["name"] for p in per] == [n for n, _ in images]
    assert per[0]["height"] == 128 and per[0]["width"] == 128


def test_means_and_deltas_consistent(results):
    per = results["per_image"]
    psnr_mean = sum(p["psnr-rgb"] for p in per) / len(per)
    assert math.isclose(results["results"]["psnr-rgb"][0], psnr_mean, rel_tol=1e-12)
    for p in per:
        for kind, a in p["attacks"].items():
            assert math.isclose(a["delta-psnr"], a["psnr-rgb"] - p["psnr-rgb"], abs_tol=1e-9)
            assert math.isclose(a["delta-bpp"], a["bpp"] - p["bpp"], abs_tol=1e-9)
            assert 0 < a["noise-mse"] <= 5e-4
            assert math.isclose(a["noise-psnr"], -10 * math.log10(a["noise-mse"]))
        # the attacks did something, in the direction of their name
        assert p["attacks"]["psnr"]["delta-psnr"] < -0.25
        assert p["attacks"]["bpp"]["delta-bpp"] > 0.0
    # MS-SSIM is undefined under 161 px: None, never NaN
    assert results["results"]["ms-ssim-rgb"] == [None]


def test_real_bpp_close_to_estimate(results):
    for p in results["per_image"]:
        assert p["bpp"] == pytest.approx(p["bpp-est"], rel=0.05)
        assert p["bpp_main-est"] < p["bpp-est"]
        for a in p["attacks"].values():
            assert a["bpp"] == pytest.approx(a["bpp-est"], rel=0.05)
    assert results["results"]["encoding_time"][0] > 0


def test_clean_only_mode(smoke, kodak_small):
    r = evaluate_robustness(smoke, kodak_small[:1], attacks=(), progress=False, real=False)
    assert r["attacks"] == {}
    assert r["per_image"][0]["name"] == "image000" and r["per_image"][0]["attacks"] == {}
    assert r["results"]["bpp"] == r["results"]["bpp-est"]  # no bitstreams: the estimate
    assert r["results"]["encoding_time"] == [None]
    assert r["results"]["psnr-rgb"][0] > 15


def test_mixed_sizes_and_ms_ssim(smoke, kodak_small):
    big = torch.nn.functional.interpolate(kodak_small[:1], size=(192, 176), mode="bilinear",
                                          align_corners=False).clamp(0, 1)[0]
    r = evaluate_robustness(smoke, [("small", kodak_small[0]), ("big", big)], attacks=(),
                            progress=False)
    small, large = r["per_image"]
    assert (small["height"], large["height"], large["width"]) == (128, 192, 176)
    assert small["ms-ssim-rgb"] is None and 0 < large["ms-ssim-rgb"] <= 1
    assert r["results"]["ms-ssim-rgb"] == [large["ms-ssim-rgb"]]  # mean skips None


def test_json_round_trip_exact(results, tmp_path):
    path = save_results(results, tmp_path / "sub" / "metrics.json")
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    json.loads(text)  # strict JSON
    assert load_results(path) == results
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"]  # no temp file left


def test_save_writes_nan_as_null(tmp_path):
    r = {"name": "m", "results": {"psnr-rgb": [float("nan")], "bpp": [float("inf")]}}
    loaded = load_results(save_results(r, tmp_path / "r.json"))
    assert loaded["results"] == {"psnr-rgb": [None], "bpp": [None]}


@pytest.mark.parametrize("content, match", [
    ({"results": {"psnr-rgb": [1], "bpp": [1]}}, "name"),
    ({"name": "m"}, "results"),
    ({"name": "m", "results": {"bpp": [1]}}, "psnr-rgb"),
    ({"name": "m", "results": {"psnr-rgb": [1], "bpp": [1]}, "attacks": {"psnr": {}}}, "psnr"),
    ([1, 2], "object"),
])
def test_load_results_validates(tmp_path, content, match):
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(content))
    with pytest.raises(ValueError, match=match):
        load_results(p)


def test_load_results_bad_files(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        load_results(tmp_path / "missing.json")
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(ValueError, match="JSON"):
        load_results(tmp_path / "x.json")


@pytest.mark.parametrize("case", [
    dict(attacks=("psnr", "nope")), dict(attacks=("psnr", "psnr")), dict(iterations=0),
    dict(eps=0.0), dict(iterations={"bpp": 3}), dict(batch_size=0),
])
def test_evaluate_bad_parameters(case):
    model = build_model("hyper", N=8, M=8).eval()
    kw = dict(attacks=("psnr",), iterations=1, progress=False, real=False)
    kw.update(case)
    with pytest.raises(ValueError):
        evaluate_robustness(model, torch.rand(1, 3, 64, 64), **kw)


def test_evaluate_bad_images():
    model = build_model("hyper", N=8, M=8).eval()
    for bad in (torch.rand(3, 64, 64), [("a", torch.rand(1, 3, 64, 64))], [], [torch.rand(3, 8, 8)],
                [("u8", torch.zeros(3, 64, 64, dtype=torch.uint8))]):
        with pytest.raises(ValueError):
            evaluate_robustness(model, bad, attacks=(), progress=False, real=False)


def test_table1_layout(results):
    other = json.loads(json.dumps(results))
    other["name"] = "Ours"
    del other["attacks"]["bpp"]
    df = viz.table1([results, other])
    assert df.shape == (2, 6)
    assert list(df.index) == ["smoke", "Ours"]
    assert list(df.columns) == [(b, m) for b in ("clean", "psnr attack", "bpp attack")
                                for m in ("bpp", "psnr")]
    assert df.loc["smoke", ("clean", "bpp")] == pytest.approx(results["results"]["bpp"][0],
                                                              abs=1e-4)
    assert df.loc["smoke", ("psnr attack", "psnr")] == pytest.approx(
        results["attacks"]["psnr"]["results"]["psnr-rgb"][0], abs=1e-4)
    assert math.isnan(df.loc["Ours", ("bpp attack", "bpp")])


def test_table1_reads_files(results, tmp_path):
    p = save_results(results, tmp_path / "m.json")
    assert viz.table1([p]).equals(viz.table1([results]))


def test_plot_rd(results):
    import matplotlib.pyplot as plt
    fig = viz.plot_rd([results])
    ax = fig.axes[0]
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels == ["smoke", "smoke (bpp attack)", "smoke (psnr attack)"]
    x, y = ax.get_lines()[0].get_data()
    assert x[0] == pytest.approx(results["results"]["bpp"][0])
    assert y[0] == pytest.approx(results["results"]["psnr-rgb"][0])
    plt.close(fig)


def test_table_cli_prints_markdown_and_saves_plot(results, tmp_path, capsys):
    other = json.loads(json.dumps(results))
    other["name"] = "Ours"
    del other["attacks"]["bpp"]
    paths = [save_results(results, tmp_path / "a.json"), save_results(other, tmp_path / "b.json")]
    assert viz.main(["table", *map(str, paths), "--plot", str(tmp_path / "rd.png")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| model | clean bpp | clean PSNR | psnr attack bpp")
    smoke_row = next(line for line in lines if line.startswith("| smoke |"))
    cells = [c.strip() for c in smoke_row.strip("|").split("|")]
    assert cells[1] == f"{results['results']['bpp'][0]:.3f}"
    assert cells[4] == f"{results['attacks']['psnr']['results']['psnr-rgb'][0]:.2f}"
    assert next(line for line in lines if line.startswith("| Ours |")).endswith("n/a | n/a |")
    assert (tmp_path / "rd.png").stat().st_size > 1000


def test_plot_attack_deltas_bars_are_the_deltas(results):
    import matplotlib.pyplot as plt
    other = json.loads(json.dumps(results))
    other["name"] = "Ours"
    del other["attacks"]["bpp"]
    fig = viz.plot_attack_deltas([results, other])
    left, right = fig.axes
    widths = [p.get_width() for p in left.patches]
    assert widths == pytest.approx([results["attacks"]["psnr"]["results"]["delta-psnr"][0]] * 2)
    rate = [p.get_width() for p in right.patches]
    assert rate[0] == pytest.approx(100 * results["attacks"]["bpp"]["results"]["delta-bpp"][0]
                                    / results["results"]["bpp"][0])
    assert math.isnan(rate[1])
    plt.close(fig)


def test_table_cli_renames_rows(results, tmp_path, capsys):
    p = save_results(results, tmp_path / "a.json")
    assert viz.main(["table", str(p), str(p), "--names", "first, second"]) == 0
    rows = [line.split("|")[1].strip() for line in capsys.readouterr().out.splitlines()[2:]]
    assert rows == ["first", "second"]
    with pytest.raises(SystemExit):
        viz.main(["table", str(p), "--names", "a,b"])
