"""The learning-curve benchmark end to end on the tiny model: points, pairing, resume, refusal of bad combinations."""
import importlib.util
from pathlib import Path

import pandas as pd
import pytest
import torch

from workbench import config
from workbench.data.protocol import load_protocol
from workbench.evaluation.curve import curve_summary
from workbench.methods.pipeline import run_method

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "learning_curve.py"


@pytest.fixture(scope="module")
def curve():
    spec = importlib.util.spec_from_file_location("learning_curve", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _isolated(run_folders):
    """Every test here writes its runs and checkpoints to its own temporary folders."""


def _args(tmp_path, combos, points="0,8,16", check=("--check-at", "0")):
    return ["--profile", "smoke", "--points", points, "--users", "4", *check, "--combos", combos,
            "--out", str(tmp_path / "curve.csv"), "--figure", str(tmp_path / "curve.png"),
            "--work", str(tmp_path / "work")]


def test_each_point_is_paired_with_its_zero_shot_and_a_rerun_resumes(curve, tmp_path, capsys):
    torch.set_num_threads(1)
    cfg = config.resolve("smoke")
    protocol = load_protocol(cfg)
    for name in ("popularity", "sasrec"):
        run_method(name, cfg, protocol)
    combos = "rsllm:listwise:free:mlp"
    assert curve.main(_args(tmp_path, combos, check=("--check-at", "8", "--check-only"))) == 0
    done = pd.read_csv(tmp_path / "curve.csv")
    assert sorted(zip(done["combo"], done["windows"])) == [(combos, 0), (combos, 8)]  # stopped at the check
    capsys.readouterr()
    assert curve.main(_args(tmp_path, combos)) == 0  # resumes the stopped training to the last point
    assert "resuming from" in capsys.readouterr().out
    done = pd.read_csv(tmp_path / "curve.csv")
    assert sorted(zip(done["combo"], done["windows"])) == [(combos, 0), (combos, 8), (combos, 16)]
    assert (done["users"] == 4).all() and done["ndcg10"].between(0, 1).all()
    zero = done[done["windows"] == 0]
    assert (zero["vs_zeroshot"] == 0).all() and zero["vs_sasrec"].notna().all()
    assert (tmp_path / "curve.png").stat().st_size > 0
    _, table, _ = curve_summary("smoke", tmp_path / "curve.csv")  # what the report shows of it
    assert list(table.columns) == ["zero-shot", "8 windows", "16 windows"] and table.notna().all().all()
    adapter = (tmp_path / "work" / "smoke" / "rsllm-listwise-free-mlp" / "point-16" / "adapter_config.json").read_text()
    assert "down_proj" in adapter  # the variant reached the trainer
    before = (tmp_path / "curve.csv").read_text()
    assert curve.main(_args(tmp_path, combos)) == 0  # every point done: nothing trained or ranked again
    assert (tmp_path / "curve.csv").read_text() == before
    # a curve made at one learning rate is not extended at another (a default that moved would mix them silently)
    with pytest.raises(SystemExit, match="LLM_LEARNING_RATE 0.005 \\(now 0.001\\)"):
        curve.main(_args(tmp_path, combos) + ["--set", "LLM_LEARNING_RATE=1e-3"])
    assert (tmp_path / "curve.csv").read_text() == before


@pytest.mark.parametrize("combos, message", [("mkv:sft", "use method:objective:form"),
                                             ("mkv:sft:free:wide", "use one of mlp, cosine or PARAM=VALUE"),
                                             ("mkv:sft:free:LLM_LEARNING_RATE=fast", "LLM_LEARNING_RATE must be"),
                                             ("mkv:sft:free:SCORE_REDUCE='mean'", "may change how the untrained"),
                                             ("bdlm:sft:free", "the method is one of mkv, rsllm")])
def test_a_bad_combination_is_refused_before_anything_runs(curve, tmp_path, combos, message):
    with pytest.raises((SystemExit, config.ConfigError), match=message):
        curve.main(_args(tmp_path, f"mkv:sft:free,{combos}"))
    assert not (tmp_path / "curve.csv").exists()


def test_named_variants_change_training_only(curve):
    """A variant shares its method's and form's zero-shot reference: it must not change how the untrained model ranks."""
    assert all(set(changes) <= set(curve.TRAINING_ONLY) for changes in curve.VARIANTS.values())


def test_a_curve_is_not_extended_with_other_users_or_another_profile(curve, tmp_path):
    """Its zero-shot ranks and done points were made with the first settings: mixing would pair mismatched users."""
    setting = tmp_path / "curve.json"
    curve.check_setting(setting, {"profile": "cpu", "users": 200})
    curve.check_setting(setting, {"profile": "cpu", "users": 200})  # the same: accepted
    with pytest.raises(SystemExit, match="users 200 \\(now 100\\): give --out another file"):
        curve.check_setting(setting, {"profile": "cpu", "users": 100})
