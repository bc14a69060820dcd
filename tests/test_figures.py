"""nic_core.figures: tables and figures from results files, missing runs named with their command."""
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from nic_core import figures, readme_includes, registry, stats, tables, tuning

ROOT = Path(__file__).resolve().parents[1]
V1 = {"pretrained-q4": "01_pretrain", "teacher": "02_teacher", "pkdt": "03_pkdt",
      "adv": "03_adv", "ma2023": "03_ma2023"}


@pytest.fixture()
def root(tmp_path):
    """A results tree with the committed protocol-2 results of the first CPU models."""
    for key, folder in V1.items():
        dst = tmp_path / figures.RUNS[key][0]
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / "results" / "cpu" / folder / "metrics_p2.json", dst)
    return tmp_path


def test_missing_results_are_named_with_their_command(tmp_path):
    found, notes = figures.load(tmp_path)
    assert found == {}
    assert len(notes) == len(figures.RUNS)
    assert any("results/cpu/hyper-q4-pkdt/metrics_p2.json" in n and "eval-pkdt" in n
               for n in notes)
    built = figures.build(tmp_path, "fig", "tab")
    assert (tmp_path / "tab" / "table1.md").read_text().startswith("| method | source |")
    assert any("no Table 1 results" in n for n in built["notes"])


def test_table_numbers_are_the_results(root):
    found, _ = figures.load(root)
    df = figures.table(found, figures.TABLE1_ROWS, figures.PAPER_TABLE1)
    r = found["pkdt"]
    ours = df.loc[("Ours (PKDT)", "ours (CPU)")]
    assert ours[("clean", "bpp")] == r["results"]["bpp"][0]
    assert ours[("psnr attack", "psnr")] == r["attacks"]["worst-psnr"]["results"]["psnr-rgb"][0]
    d = list(stats.per_image_values(r, "worst-psnr", "delta-psnr").values())
    assert ours[("dPSNR psnr attack (dB)", "mean")] == pytest.approx(sum(d) / len(d))
    assert ours[("dPSNR psnr attack (dB)", "±")] == pytest.approx(stats.mean_se(d)["se"])
    paper = df.loc[("Ours (PKDT)", "paper")]
    assert paper[("psnr attack", "psnr")] == 28.4039
    assert paper[("dPSNR psnr attack (dB)", "mean")] == pytest.approx(28.4039 - 32.0802)
    assert ("Ma2023", "paper") not in df.index  # the paper gives no Ma2023 row in Table 1


def test_build_draws_every_figure_its_results_allow(root):
    built = figures.build(root, "fig", "tab")
    names = {p.name for p in built["written"]}
    assert {"fig3_rd_cpu.png", "fig3_rd_cpu.pdf", "fig1_summary_cpu.png",
            "fig5_ma2023_cpu.png"} <= names
    assert built["found"] == sorted(V1)
    first = (root / "fig" / "fig3_rd_cpu.pdf").read_bytes()
    figures.build(root, "fig", "tab")  # no timestamps: a rebuild is byte-identical
    assert (root / "fig" / "fig3_rd_cpu.pdf").read_bytes() == first


def test_verdicts_follow_the_intervals(root):
    """Each claim's verdict is read off its paired bootstrap interval, in the paper's direction;
    a claim whose results are missing says so."""
    found, _ = figures.load(root)
    df = figures.verdicts(found)
    first = df.iloc[0]
    d = list(stats.per_image_values(found["pretrained-q4"], "worst-psnr", "delta-psnr").values())
    assert first["ours"] == pytest.approx(sum(d) / len(d), abs=0.005)
    assert first["verdict"] == "confirmed at this scale"  # -2.49 dB, interval below 0
    assert first["paper"] == pytest.approx(22.3502 - 33.0, abs=0.005)
    by = {(r.claim, r.side): r.verdict for r in df.itertuples()}
    assert by[("Stage II (ours) is more robust than Stage I alone", "bpp side (% rate)")] \
        == "refuted at this scale"  # PKDT's rate rises 7.6 % more than the teacher's here
    del found["ma2023"]
    assert figures.verdicts(found).iloc[-1]["verdict"] == "not run yet"


def test_seeds_and_matched_rate_are_paired_differences(root):
    """Seed pairs and the matched-rate view from per-image values (here the first CPU models
    stand in: 'pkdt-s1' is a copy of 'pkdt', so its seed difference is exactly zero)."""
    for key in ("pkdt-s1", "pretrained-q2"):
        dst = root / figures.RUNS[key][0]
        dst.parent.mkdir(parents=True, exist_ok=True)
        src = root / figures.RUNS["pkdt" if key == "pkdt-s1" else "pretrained-q4"][0]
        r = json.loads(src.read_text())
        if key == "pretrained-q2":  # a lower rate point: every image at 70 % of the rate
            for row in r["per_image"]:
                row["bpp"] *= 0.7
        dst.write_text(json.dumps(r))
    found, _ = figures.load(root)
    seeds = figures.seeds(found)
    assert seeds.iloc[0]["clean PSNR (dB)"] == "+0.00 [+0.00, +0.00]"
    assert seeds.iloc[1]["clean PSNR (dB)"] == "not run yet"
    m = figures.matched_rate(found).set_index("model")
    # PKDT's clean rate lies inside [0.7, 1] x the pretrained rate on every image?
    pk = stats.per_image_values(found["pkdt"], None, "bpp")
    q4 = stats.per_image_values(found["pretrained-q4"], None, "bpp")
    inside = sum(0.7 * q4[n] <= b <= q4[n] for n, b in pk.items())
    assert m.loc["Ours (PKDT)", "images"] == inside
    if inside >= 2:
        assert m.loc["Ours (PKDT)", "clean PSNR (dB)"].startswith(("+", "-"))


def test_readme_include_blocks_are_refreshed(tmp_path):
    (tmp_path / "t.md").write_text("| a |\n|---|\n| 2 |\n")
    readme = tmp_path / "README.md"
    readme.write_text("x\n<!-- include: t.md -->\n| a |\n|---|\n| 1 |\n<!-- end -->\ny\n")
    assert readme_includes.refresh_includes(readme) == ["t.md"]
    assert "| 2 |" in readme.read_text() and "| 1 |" not in readme.read_text()
    assert readme.read_text().startswith("x\n") and readme.read_text().endswith("<!-- end -->\ny\n")
    assert readme_includes.refresh_includes(readme) == []
    # a new, empty block is filled without swallowing the text up to a later block's end
    readme.write_text("x\n<!-- include: t.md -->\n<!-- end -->\nkeep me\n"
                      "<!-- include: t.md -->\n| a |\n<!-- end -->\n")
    assert readme_includes.refresh_includes(readme) == ["t.md", "t.md"]
    assert readme.read_text() == ("x\n<!-- include: t.md -->\n| a |\n|---|\n| 2 |\n<!-- end -->\n"
                                  "keep me\n<!-- include: t.md -->\n| a |\n|---|\n| 2 |\n"
                                  "<!-- end -->\n")


def test_tuning_table_is_per_image_differences_to_best(tmp_path):
    """The tuning table: each variant's damage under the single psnr / bpp attacks and its
    paired difference to 'best'; a variant whose psnr attack costs 0.1 dB less on every image
    shows +0.10 with an interval excluding 0 and passes the tuning rule, one whose attack costs
    0.1 dB more fails it."""
    r = json.loads((ROOT / "results/cpu/03_pkdt/metrics_p2.json").read_text())
    folder = tmp_path / tuning.TUNE_DIR
    for name, shift in (("best", 0.0), ("beta=0.001", 0.1), ("alpha=3", -0.1), ("teacher", 0.2)):
        v = json.loads(json.dumps(r))
        for row in v["per_image"]:
            for kind in ("psnr", "worst-psnr"):
                if kind in row.get("attacks", {}):
                    row["attacks"][kind]["delta-psnr"] += shift
        (folder / name).mkdir(parents=True)
        (folder / name / "metrics.json").write_text(json.dumps(v))
    df = tuning.tuning(tmp_path).set_index("variant")
    assert list(df.index) == ["teacher (Stage I, the model best distils)", "best (as configured)",
                              "best, alpha=3", "best, beta=0.001"]
    # the teacher is a reference: its difference to best is shown, the rule is not applied
    assert df.loc["teacher (Stage I, the model best distils)", "vs best: dPSNR (dB)"] == \
        "+0.20 [+0.20, +0.20]"
    assert pd.isna(df.loc["teacher (Stage I, the model best distils)", "tuning rule"])
    d = stats.per_image_values(r, "psnr", "delta-psnr")
    assert df.loc["best (as configured)", "dPSNR psnr attack (dB)"].startswith(f"{sum(d.values()) / len(d):+.2f}")
    assert df.loc["best, beta=0.001", "vs best: dPSNR (dB)"] == "+0.10 [+0.10, +0.10]"
    assert df.loc["best, beta=0.001", "vs best: clean PSNR (dB)"] == "+0.00 [+0.00, +0.00]"
    assert df.loc["best, beta=0.001", "vs best: clean rate (%)"] == "+0.00 [+0.00, +0.00]"
    assert df.loc["best, beta=0.001", "tuning rule"] == "passes"
    assert df.loc["best, alpha=3", "tuning rule"] == "fails: dPSNR worse"
    assert tuning.tuning(tmp_path / "none").empty


def test_tuning_rule_needs_one_side_better_and_nothing_worse():
    """The tuning rule reads the intervals: less damage on one side is not enough when the
    clean rate is higher (alpha=0.3 at hyper-q4), and no interval excluding 0 is no change."""
    ci = lambda lo, hi: {"lo": lo, "hi": hi}  # noqa: E731
    zero = {k: ci(-0.1, 0.1) for k in tuning.TUNE_BETTER}
    assert tuning.tuning_rule(zero) == "fails: no side better"
    assert tuning.tuning_rule({**zero, "vs best: dbpp (% points)": ci(-1.1, -0.2)}) == "passes"
    assert tuning.tuning_rule({**zero, "vs best: dbpp (% points)": ci(-1.1, -0.2),
                               "vs best: clean rate (%)": ci(1.5, 2.3)}) == \
        "fails: clean rate worse"
    assert tuning.tuning_rule({**zero, "vs best: dPSNR (dB)": ci(0.1, 0.3),
                               "vs best: clean PSNR (dB)": ci(-0.04, -0.01)}) == \
        "fails: clean PSNR worse"
    # a second training seed of best is no candidate: it is the spread to read the rest against
    better = {**zero, "vs best: dbpp (% points)": ci(-1.1, -0.2)}
    assert tuning.tuning_verdict("seed=1", better) == tuning.SEED_SPREAD
    assert tuning.tuning_verdict("alpha=3+seed=1", better) == "passes"


def test_tuning_figure_colours_each_interval_by_its_side_of_zero():
    """fig_tuning: green where the variant is better than best on that column (a rate interval
    below 0 is better), red where worse, grey where the interval contains 0; a row per variant,
    the pretrained codec left out."""
    from matplotlib.colors import to_hex
    ci = lambda lo, hi: {"lo": lo, "hi": hi, "mean": (lo + hi) / 2}  # noqa: E731
    cis = {"pretrained": {k: ci(5, 6) for k in tuning.TUNE_BETTER},
           "alpha=3": {"vs best: clean PSNR (dB)": ci(0.1, 0.2), "vs best: clean rate (%)": ci(-2, -1),
                       "vs best: dPSNR (dB)": ci(-0.3, -0.1), "vs best: dbpp (% points)": ci(-1, 1)}}
    fig = tuning.fig_tuning({"from hyper-q4": cis})
    bars = [[to_hex(ln.get_color()) for ln in ax.get_lines() if len(ln.get_xdata()) == 2
             and ln.get_xdata()[0] != ln.get_xdata()[1]] for ax in fig.axes]
    assert bars == [["#2e8b2e"], ["#2e8b2e"], ["#c03030"], ["#909090"]]
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["alpha=3"]
    assert fig.axes[-1].texts[0].get_text() == "fails (hyper-q4)"


def test_tuning_reference_rows_are_evaluated_like_the_variants():
    """scripts/reproduce_cpu.sh evaluates the pretrained and teacher rows of a tuning with
    params/cpu/eval_protocol2.yaml and the overrides eval_set val, eval_limit 0, eval_crop 192,
    eval_worst_case '': that must be the evaluation each tuning params file gives its variants,
    or the reference rows would be measured differently from the rows they are read against."""
    import re
    import yaml
    script = (ROOT / "scripts" / "reproduce_cpu.sh").read_text()
    step = script[script.index("    tune|tune-q4long)"):script.index("    jpeg) ")]
    over = dict(re.findall(r"-p (eval_\w+) (\S+)", step.split("for ref in")[1]))
    assert over == {"eval_set": "val", "eval_limit": "0", "eval_crop": "192",
                    "eval_worst_case": '""'}
    p2 = yaml.safe_load((ROOT / "params" / "cpu" / "eval_protocol2.yaml").read_text())
    p2.update(eval_set="val", eval_limit=0, eval_crop=192, eval_worst_case="")
    for q in ("hyper-q4", "hyper-q4-long"):
        tune = yaml.safe_load((ROOT / "params" / "cpu" / q / "04_tune.yaml").read_text())
        assert {k: tune[k] for k in p2 if k != "progress"} == \
            {k: v for k, v in p2.items() if k != "progress"}, q


def test_tuning_from_hyper_q4_long_is_the_hyper_q4_tuning_moved():
    """params/cpu/hyper-q4-long/04_tune.yaml changes only the codec, the teacher, the folders
    and adds variants; its results_dir is the one the tuning_q4long table reads."""
    import yaml
    a, b = (yaml.safe_load((ROOT / "params" / "cpu" / q / "04_tune.yaml").read_text())
            for q in ("hyper-q4", "hyper-q4-long"))
    assert {k for k in a if a[k] != b.get(k)} == {"pretrained", "teacher", "run_dir",
                                                  "results_dir", "variants"}
    assert b["pretrained"] == "models/cpu/hyper-q4-long/model.pt"
    assert b["results_dir"] == tuning.TUNE_DIR_AT["q4long"] and a["results_dir"] == tuning.TUNE_DIR
    assert set(a["variants"].split(",")) < set(b["variants"].split(","))


def test_codec_steps_compare_runs_that_differ_only_in_what_the_step_names():
    """The codec-strength experiments are controlled: the two patch runs differ only in patch
    and batch (same pixels per step), hyper-q6-n88 and hyper-q6-n128 and their control only in N
    (and how it is grown), each pair starts from the same codec, hyper-q6-wide-p256 takes
    hyper-q6-p256's schedule to the M 192 codec; every codec of the table has a params file
    and a training step in the reproduction script."""
    import re

    import yaml
    from nic_core.strength import CODEC_STEPS

    def params(name):
        return yaml.safe_load((ROOT / "params" / "cpu" / f"01_pretrain_{name}.yaml").read_text())

    def differ(a, b):
        return {k for k in {*a, *b} if a.get(k) != b.get(k)}

    p128, p256 = params("hyper-q6-p128"), params("hyper-q6-p256")
    assert differ(p128, p256) == {"patch_size", "batch_size", "run_dir"}
    assert p128["patch_size"] ** 2 * p128["batch_size"] == p256["patch_size"] ** 2 * p256["batch_size"]
    n88, ctrl = params("hyper-q6-n88"), params("hyper-q6-p256-long")
    assert differ(ctrl, n88) == {"N", "init_widen", "run_dir"} and n88["N"] > ctrl["N"]
    assert n88["init"] == ctrl["init"] == "models/cpu/hyper-q6-p256/model.pt"
    n128 = params("hyper-q6-n128")  # N grown by split twins, the same control
    assert differ(ctrl, n128) == {"N", "init_widen", "widen_mode", "run_dir"}
    assert n128["widen_mode"] == "split" and n128["N"] == 2 * ctrl["N"]
    wide = params("hyper-q6-wide-p256")  # the patch step of hyper-q6-p256 on the M 192 codec
    assert differ(p256, wide) == {"M", "init", "run_dir"} and wide["M"] == 2 * p256["M"]
    assert wide["init"] == "models/cpu/hyper-q6-wide/model.pt"
    wl, b4 = params("hyper-q6-wide-p256-long"), params("hyper-q6-wide-p256-b4")  # batch twins
    assert wl["init"] == b4["init"] == "models/cpu/hyper-q6-wide-p256/model.pt"
    assert differ(wl, b4) == {"batch_size", "budget", "lr_decay_start", "lr_decay_every", "run_dir"}
    for k in ("budget", "lr_decay_start", "lr_decay_every"):  # the same images at each halving
        assert wl[k] * wl["batch_size"] == b4[k] * b4["batch_size"], k
    script = (ROOT / "scripts" / "reproduce_cpu.sh").read_text()
    steps = set(re.search(r"STEPS=\((.*?)\)", script, re.S).group(1).split())
    for _, a, b in CODEC_STEPS:
        for name in (a, b):
            assert params(name)["run_dir"] == f"runs/cpu/{name}"
            assert name.removeprefix("hyper-") in steps, name


def test_every_results_file_names_a_step_of_the_reproduction_script():
    """RUNS' commands name steps that scripts/reproduce_cpu.sh runs by default (a typo there
    would send a reader to a step that does not exist)."""
    import re
    script = (ROOT / "scripts" / "reproduce_cpu.sh").read_text()
    steps = set(re.search(r"STEPS=\((.*?)\)", script, re.S).group(1).split())
    assert {"teacher-q2", "eval-pkdt-q6", "eval-ma2023-q2", "cheng-q4"} <= steps
    for key, (_, cmd) in figures.RUNS.items():
        prog, *named = cmd.split()
        assert prog == registry.REPRO and named, key
        assert set(named) <= steps, (key, set(named) - steps)
    rows = figures.TABLE1_AT["q2"]
    assert rows[0] == "pretrained-q2" and all(k in figures.RUNS for k in rows)
    assert figures.LABELS["pkdt-q6"] == "Ours (PKDT), lmbda 0.0483"


def test_table2_and_seed_1_again_from_hyper_q4_long_read_the_files_its_steps_write():
    """Table 2 from hyper-q4-long: the paper's rows beside ours in the same order, read from the
    results_dir its params file names; the seed-1 claims and pairs moved with it."""
    import yaml
    from nic_core import claims
    rows = registry.TABLE2_AT["q4long"]
    assert rows == tuple(f"{k}-q4long" for k in registry.TABLE2_ROWS)
    assert list(registry.PAPER_TABLE2_AT["q4long"]) == list(rows)
    assert list(registry.PAPER_TABLE2_AT["q4long"].values()) == list(registry.PAPER_TABLE2.values())
    p = yaml.safe_load((ROOT / "params" / "cpu" / "hyper-q4-long" / "04_ablations.yaml").read_text())
    assert p["pretrained"] == "models/cpu/hyper-q4-long/model.pt"
    assert p["teacher"] == "models/cpu/hyper-q4-long-teacher/model.pt"
    for v in p["variants"].split(","):
        assert registry.RUNS[f"abl-{v}-q4long"][0] == f"{p['results_dir']}/{v}/metrics.json"
    moved = {(a, b) for _, _, a, b, _, _ in claims.CLAIMS if a and a.endswith("-s1-q4long")}
    assert moved == {("adv-s1-q4long", "pkdt-s1-q4long"), ("ma2023-s1-q4long", "pkdt-s1-q4long"),
                     ("teacher-s1-q4long", "pkdt-q4long")}
    assert ("PKDT: seed 1 - seed 0, from hyper-q4-long", "pkdt-q4long", "pkdt-s1-q4long") \
        in tables.SEED_PAIRS


def test_codecs_set_each_image_set_against_jpeg_on_the_same_images():
    """The codecs table's margins over JPEG: Kodak-8 rows against JPEG on those 8 crops, each
    VARIANTS row (DIV2K, all 24 Kodak crops) against JPEG on its own images."""
    from nic_core.jpeg import margin_over_jpeg
    found = {k: v for k, v in figures.load(ROOT)[0].items()
             if k in ("pretrained-q4", "pretrained-q4-kodak24", "jpeg", "jpeg-kodak24")}
    assert len(found) == 4, "the committed q4 / JPEG results are missing"
    df = tables.codecs(found, ROOT).set_index("model")
    k8, k24 = (df.loc[m, "vs JPEG at that rate (dB)"]
               for m in ("pretrained (Hyper)", "pretrained (Hyper), Kodak 24"))
    assert k8 == round(margin_over_jpeg(found["pretrained-q4"], found["jpeg"]), 2)
    assert k24 == round(margin_over_jpeg(found["pretrained-q4-kodak24"], found["jpeg-kodak24"]), 2)
    assert k8 != k24 and df.loc["pretrained (Hyper), Kodak 24", "file"].endswith("_kodak24.json")


def test_codec_steps_compare_margins_over_jpeg_per_crop():
    """The "what lifts a codec" table: per-crop margins over JPEG (each crop against its own JPEG
    curve) average to within 0.1 dB of the margin at the mean point for the committed codecs,
    a step's paired difference is the difference of its two margins, and hyper-q4's row reads
    the finished model (metrics_p2.json), not the mid-run clean point beside it."""
    from nic_core.jpeg import margin_over_jpeg
    found = figures.load(ROOT)[0]
    from nic_core.strength import codec_steps
    df = codec_steps(ROOT).set_index("b - a")
    for key, name in (("pretrained-q4", "hyper-q4"), ("pretrained-q6long", "hyper-q6-long")):
        row = df.loc[f"{name}-long - {name}" if key == "pretrained-q4" else
                     "hyper-q6-wide - hyper-q6-long"]
        mine = row["margin of a (dB)"]
        assert abs(mine - margin_over_jpeg(found[key], found["jpeg"])) < 0.1, (name, mine)
    row = df.loc["hyper-q6-wide - hyper-q6-long"]
    diff = float(row["margin b - a (dB)"].split()[0])
    assert abs(diff - (row["margin of b (dB)"] - row["margin of a (dB)"])) <= 0.011
    assert row["b at its mean point (dB)"] == round(margin_over_jpeg(found["pretrained-q6wide"],
                                                                     found["jpeg"]), 2)
    assert df.loc["hyper-q4-long - hyper-q4", "margin of a (dB)"] == pytest.approx(0.76, abs=0.01)
    # the figure: one point per codec with results, at the table's margin, green from +1 dB
    from nic_core.strength import fig_codec_steps
    fig, names = fig_codec_steps(ROOT)
    assert names[:5] == ["hyper-q4", "hyper-q4-long", "hyper-q4-p256", "hyper-q6", "hyper-q6-long"]
    points = [line for line in fig.axes[0].lines if line.get_marker() == "o"]
    x = {n: float(p.get_xdata()[0]) for n, p in zip(names, points)}
    assert round(x["hyper-q4-long"], 2) == df.loc["hyper-q4-long - hyper-q4", "margin of b (dB)"]
    assert round(x["hyper-q4-p256"], 2) == df.loc["hyper-q4-p256 - hyper-q4-long",
                                                  "margin of b (dB)"]
    assert [p.get_color() for p in points[:4]] == ["tab:blue", "tab:green", "tab:green", "tab:blue"]


def test_codec_steps_refuse_a_jpeg_curve_that_covers_no_crop(tmp_path):
    """A JPEG curve whose rates lie below every codec's is an error naming the codecs, not a
    division by zero or a silent empty row."""
    curve = json.loads((ROOT / "results" / "cpu" / "jpeg_kodak8.json").read_text())
    for row in curve["per_image"]:
        row["bpp"], row["psnr-rgb"] = row["bpp"][:2], row["psnr-rgb"][:2]  # qualities 3 and 5
    (tmp_path / "results" / "cpu").mkdir(parents=True)
    (tmp_path / "results" / "cpu" / "jpeg_kodak8.json").write_text(json.dumps(curve))
    for name in ("hyper-q4", "hyper-q4-long"):
        (tmp_path / "results" / "cpu" / name).mkdir()
        shutil.copy(ROOT / "results" / "cpu" / name / "metrics_p2.json",
                    tmp_path / "results" / "cpu" / name)
    from nic_core.strength import codec_steps
    with pytest.raises(ValueError, match="hyper-q4 / hyper-q4-long: no crop within"):
        codec_steps(tmp_path)


def test_rd_figure_draws_jpeg_over_the_learned_codecs_rate_range_only():
    """Fig. 3's clean panel: JPEG up to 1.3x the highest learned-codec rate, whatever other
    JPEG curves (DIV2K, Kodak 24, reaching 3-4 bpp) are loaded beside it."""
    found = {k: v for k, v in figures.load(ROOT)[0].items()
             if k in ("pretrained-q4", "pretrained-q6", "jpeg", "jpeg-kodak24", "jpeg-div2k")}
    assert len(found) == 5, "the committed q4 / q6 / JPEG results are missing"
    assert max(found["jpeg-kodak24"]["results"]["bpp"]) > 3
    fig = figures.fig_rd(found, paper=False)
    jpeg = [ln for ln in fig.axes[0].lines if ln.get_label().startswith("JPEG")]
    top = max(found[k]["results"]["bpp"][0] for k in ("pretrained-q4", "pretrained-q6"))
    assert len(jpeg) == 1 and 0.9 * top < max(jpeg[0].get_xdata()) <= 1.3 * top


def test_eps_div2k_kodak24_from_hyper_q4_long_are_the_hyper_q4_ones_moved():
    """The eps 1e-3 / DIV2K / Kodak-24 evaluations from hyper-q4-long: each hyper-q4 key has
    its twin (same results-file name in the q4long model's folder, a script step that makes
    it), and every claim on those evaluations is asked again of the twins."""
    from nic_core import claims
    assert registry.at_q4long("pretrained-q4-eps1e-3") == "pretrained-q4long-eps1e-3"
    assert registry.at_q4long("pkdt-kodak24") == "pkdt-q4long-kodak24"
    assert registry.at_q4long("adv-s1") == "adv-s1-q4long"
    assert registry.RUNS["pkdt-q4long-div2k"] == (
        "results/cpu/hyper-q4-long-pkdt/metrics_p2_div2k.json",
        f"{registry.REPRO} teacher-q4long pkdt-q4long eval-div2k-pkdt-q4long")
    assert registry.RUNS["pretrained-q4long-eps1e-3"][1] == f"{registry.REPRO} eval-eps-q4long"
    assert figures.EPS_ROWS_Q4LONG[1] == ("pretrained-q4long-eps1e-3", "teacher-q4long-eps1e-3",
                                          "pkdt-q4long-eps1e-3", "adv-q4long-eps1e-3",
                                          "ma2023-q4long-eps1e-3")
    pairs = {(a, b) for _, _, a, b, _, _ in claims.CLAIMS if a}
    on_variants = [(a, b) for a, b in pairs if "q4long" not in a + b
                   and any(a.endswith(f"-{v}") for v in registry.VARIANTS)]
    # the other codecs on all 24 Kodak crops, at eps 1e-3, on DIV2K (registry.MORE_AT): no twin
    other = [(a, b) for a, b in on_variants if any(f"-{q}-" in b for q in registry.MORE_AT)]
    assert sorted(b for _, b in other) == sorted(f"pkdt-{q}-{s}" for q in registry.MORE_AT
                                                 for s in registry.VARIANTS)
    on_variants = [p for p in on_variants if p not in other]
    assert len(on_variants) == 13
    assert all((registry.at_q4long(a), registry.at_q4long(b)) in pairs for a, b in on_variants)
    assert not any((registry.at_q4long(a), registry.at_q4long(b)) in pairs for a, b in other)


def test_verdict_grid_is_the_verdicts_of_table1_comparisons(root):
    """The grid's cells are verdicts() of the same pairs (one number, two views); a setting
    without results is left out, a missing cell reads "-"."""
    from nic_core import claims
    found, _ = figures.load(root)
    g = claims.grid(found)
    assert set(g["setting"]) == {"hyper-q4, Kodak 8"}  # the fixture has the q4 models only
    assert len(g) == 2 * 2 * len(claims.GRID_COMPARISONS)  # two rulers, two sides
    assert set(g["ruler"]) == set(claims.RULERS)
    v = figures.verdicts(found).set_index(["claim", "side"])
    row = v.loc[("Stage II (ours) is more robust than Stage I alone", "bpp side (% rate)")]
    cell = g[(g.comparison == "Stage II > Stage I") & (g.side == "bpp")
             & (g.ruler == "damage")].iloc[0]
    assert round(cell["mean"], 2) == row["ours"] and f"{cell['p']:.3g}" == row["p"]
    assert cell["q"] < 0.05 and cell["verdict"] == "refuted at this scale"  # 8 of 8 crops
    md = claims.grid_markdown(g)
    assert f"{cell['mean']:+.2f} pts ✗" in md  # refuted on the rate side (7.6 % more)
    del found["ma2023"]
    md = claims.grid_markdown(claims.grid(found))
    assert md.splitlines()[2].endswith("| - / - |")  # PKDT > Ma2023 not run
    assert claims.grid_markdown(claims.grid({})) == "(no results yet)"


def test_loss_gap_compares_two_runs_window_by_window(tmp_path):
    """``loss_gap``: b's training loss over a's in %, per window, from plain and gzipped
    histories; histories over different steps are refused; the committed hyper-q6-n128 history
    gives the README's numbers (6-9 % over the first 2500 steps, within 0.6 % over the last 1500)."""
    import gzip
    import json
    from nic_core.strength import loss_gap
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl.gz"
    a.write_text("".join(json.dumps({"step": i + 1, "loss": 2.0}) + "\n" for i in range(4)))
    b.write_bytes(gzip.compress("".join(json.dumps({"step": i + 1, "loss": 2.0 + (i < 2)}) + "\n"
                                        for i in range(4)).encode()))
    assert loss_gap(a, b, window=2) == [(1, 50.0), (3, 0.0)]
    c = tmp_path / "c.jsonl"
    c.write_text(json.dumps({"step": 1, "loss": 1.0}) + "\n")
    with pytest.raises(ValueError, match="same steps"):
        loss_gap(a, c)
    gaps = dict(loss_gap(ROOT / "results/cpu/hyper-q6-p256-long/history.jsonl.gz",
                         ROOT / "results/cpu/hyper-q6-n128/history.jsonl.gz"))
    assert all(5.5 <= gaps[s] <= 9 for s in (1, 501, 1001, 1501, 2001))
    assert all(abs(gaps[s]) <= 0.6 for s in (3501, 4001, 4501))


def test_learning_curves_read_the_logs_of_codecs_whose_weights_are_not_committed(tmp_path):
    """fig_learning finds a codec's log in models/cpu/NAME, or in results/cpu/NAME once its
    weights left models/ (hyper-q6, hyper-q6-long): every default codec is drawn, placed after
    the step its fine-tuning started from."""
    assert not (ROOT / "models/cpu/hyper-q6/model.pt").exists()
    fig = figures.fig_learning(ROOT)
    labels = [ln.get_label() for ln in fig.axes[0].lines]
    assert labels == ["hyper-q4", "hyper-q4-long", "hyper-q2", "hyper-q6", "hyper-q6-long",
                      "hyper-q1", "cheng-q4"]
    x = {ln.get_label(): ln.get_xdata() for ln in fig.axes[0].lines}
    assert x["hyper-q6"][0] == 16001 and x["hyper-q6-long"][0] == 20001
    assert x["hyper-q6-long"][-1] == 28000
    figures.plt.close(fig)
    assert figures.fig_learning(tmp_path) is None
