import pytest

from nic_core import config


def test_defaults_are_complete_and_valid():
    for stage in config.STAGE:
        cfg = config.defaults(stage)
        assert set(cfg) == set(config.schema(stage)) | {"stage"}


def test_papermill_int_for_float_is_cast():
    cfg = config.validate("pkdt", {"alpha": 1, "lr": 1})
    assert cfg["alpha"] == 1.0 and isinstance(cfg["alpha"], float)


def test_unknown_name_suggests_the_right_one():
    with pytest.raises(ValueError, match=r"'alhpa' \(did you mean 'alpha'\?\)"):
        config.validate("pkdt", {"alhpa": 1.0})


@pytest.mark.parametrize("name,value,err", [
    ("budget", 1.5, TypeError), ("budget", "10", TypeError), ("lr", -1.0, ValueError),
    ("model", "vgg", ValueError), ("resume", 1, TypeError), ("eval_set", "imagenet", ValueError),
    ("lmbda", None, TypeError),
])
def test_bad_values(name, value, err):
    with pytest.raises(err, match=name):
        config.validate("pretrain", {name: value})


def test_nullable_and_from_notebook():
    import math
    ns = {"N": None, "M": None, "budget": 3, "math": math, "_hidden": 1, "In": []}
    cfg = config.from_notebook("pretrain", ns)
    assert cfg["N"] is None and cfg["budget"] == 3
    with pytest.raises(ValueError, match="unknown parameter"):  # papermill -p epochs 3
        config.from_notebook("pretrain", {"epochs": 3, "In": ["# Parameters\nepochs = 3\n"]})
    assert config.from_notebook("pretrain", {"epochs": 3})["budget"] == 150  # a later variable


def test_params_files_validate():
    from pathlib import Path
    root = Path(__file__).resolve().parents[1] / "params"
    files = sorted(root.glob("**/*.yaml"))
    assert len(files) >= 20
    for f in files:
        params = config.load_params(f)
        # eval_*.yaml: evaluation settings, valid for every stage
        stage = {"01": "pretrain", "02": "teacher", "03": "pkdt", "04": "ablation",
                 "05": "figures", "06": "explorer"}.get(f.name[:2], "pretrain")
        config.validate(stage, params)
    assert {f.relative_to(root).parts[0] for f in files} == {"smoke", "cpu", "paper"}


def test_smooth_terms():
    assert config.smooth_terms("bpp, y") == ("bpp", "y")
    assert config.smooth_terms("") == ()
    with pytest.raises(ValueError):
        config.smooth_terms("bpp,z")


def test_eval_attacks_and_cli_params(tmp_path):
    assert config.attack_list("psnr, bpp,ma2023") == ("psnr", "bpp", "ma2023")
    with pytest.raises(ValueError, match="unknown attack"):
        config.validate("pretrain", {"eval_attacks": "psnr,bppp"})
    f = tmp_path / "p.yaml"
    f.write_text("eps: 0.001\nbudget: 10\n")
    params = config.cli_params(str(f), [("budget", "20"), ("alpha", "1")])
    assert params == {"eps": 0.001, "budget": 20, "alpha": 1}


def test_run_names_are_one_table():
    from nic_core import runs
    names = [runs.run_name(config.defaults("pretrain")), runs.run_name(config.defaults("teacher"))]
    names += [runs.run_name(config.defaults("pkdt", method=m)) for m in ("pkdt", "adv", "ma2023")]
    assert names == ["pretrained", "teacher (Stage I)", "Ours (PKDT)", "adversarial training",
                     "Ma2023"]
    assert runs.curve_keys(config.defaults("pkdt"))[1:] == ("d_loss", "r_loss", "smooth_loss")
    assert runs.curve_keys(config.defaults("pkdt", method="adv"))[1:] == ("bpp_loss", "mse_loss")


def test_tuning_variants_are_checked_overrides():
    """Notebook 04's variants: Table 2 rows, or name=value overrides of Stage II parameters
    (joined by +), each checked against the pkdt schema before any work starts."""
    assert config.variant_overrides("no-smooth") == {"beta": 0.0}
    assert config.variant_overrides("alpha=3+beta=0.001") == {"alpha": 3.0, "beta": 0.001}
    assert config.variant_overrides("budget=200") == {"budget": 200}
    assert config.ablation_list("best, beta=0,alpha=0.3") == ("best", "beta=0", "alpha=0.3")
    for bad, match in (("betta=1", "did you mean 'beta'"), ("run_dir=x", "not a tunable"),
                       ("beta=-1", "beta"), ("budget=1.5", "integer"), ("smooth", "neither")):
        with pytest.raises((ValueError, TypeError), match=match):
            config.variant_overrides(bad)
    with pytest.raises((ValueError, TypeError), match="betta"):
        config.validate("ablation", {"variants": "best,betta=1"})
    assert config.defaults("pkdt")["train_split"] == "all"
    with pytest.raises(ValueError, match="train_split"):
        config.validate("pkdt", {"train_split": "val"})  # never train on the validation images
