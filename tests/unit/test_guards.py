"""Guards that fire (issue 20): non-finite parameters, losses and scores stop the run; bad input gets one line that
says what to do (an ablation with nothing to compare, an unknown device, a SASRec that cannot fit in memory, a
damaged round file)."""
import math

import numpy as np
import pandas as pd
import pytest

from workbench import config, metrics, results
from workbench.data.protocol import load_protocol
from workbench.llm import scoring, sft
from workbench.methods.baselines import models
from workbench.methods.pipeline import run_ablation, run_method
from workbench.recommender import get_spec


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv(results.RESULTS_ENV, str(tmp_path / "results"))
    monkeypatch.setenv("WORKBENCH_CHECKPOINTS", str(tmp_path / "checkpoints"))
    return tmp_path


@pytest.mark.parametrize("value", [1e400, math.inf, -math.inf, math.nan, "1e400"])
def test_non_finite_numbers_are_refused_by_the_parameter_table(value):
    """`-p LORA_ALPHA 1e400` passed (it reads as inf, and inf >= 0)."""
    with pytest.raises(config.ConfigError, match="LORA_ALPHA"):
        config.resolve("smoke", LORA_ALPHA=value)


@pytest.mark.parametrize("device, ok", [("cpu", True), ("cuda", True), ("cuda:1", True), ("foo", False),
                                        ("cuda:x", False), ("gpu", False)])
def test_device_is_checked_with_the_parameters(device, ok):
    """`-p DEVICE foo` passed the check and failed later inside torch."""
    if ok:
        assert config.resolve("smoke", DEVICE=device)["DEVICE"] == device
    else:
        with pytest.raises(config.ConfigError, match="DEVICE must be"):
            config.resolve("smoke", DEVICE=device)


def test_a_nan_loss_stops_training_where_it_is_computed(isolated):
    """LORA_ALPHA 1e300 overflowed to NaN; TRL's logging filter logged 0.0 at every step and the run saved ranks of
    20 for every user (MRR 0.05), exit 0."""
    cfg = {**config.resolve("smoke", GEN_EVAL_USERS=0), "LORA_ALPHA": 1e300}  # past the table's bound, on purpose
    with pytest.raises(sft.NanLossError, match="at step [12]: lower"):
        run_method("mkv", cfg, load_protocol(cfg))
    assert not (isolated / "results").exists() or not any((isolated / "results").iterdir())  # nothing saved


def test_sft_does_not_filter_nan_from_the_logged_loss(tmp_path):
    cfg = config.resolve("smoke")
    assert sft.sft_config(cfg, tmp_path, "cpu", 64).logging_nan_inf_filter is False


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_ranks_are_never_made_from_non_finite_scores(bad):
    view = pd.DataFrame({"user_id": [1, 2], "candidates": [[5, 6, 7], [8, 9, 10]], "target": [5, 9]})
    scores = np.array([[0.1, 0.2, 0.3], [0.3, 0.2, bad]])
    with pytest.raises(metrics.NonFiniteScores, match="1 non-finite candidate score.*for 1 user"):
        metrics.candidate_ranks(view, scores)
    scored = pd.DataFrame({"user_id": [1, 2], "scores": list(scores), "listed": list(scores)})
    with pytest.raises(metrics.NonFiniteScores):
        scoring.view_ranks(view, scored)
    assert metrics.candidate_ranks(view, np.nan_to_num(scores, nan=0.0, posinf=1.0, neginf=-1.0))["rank"].tolist()


def test_a_baseline_with_nan_weights_saves_no_ranks(isolated):
    cfg = config.resolve("smoke")
    protocol = load_protocol(cfg)
    model = models.build_model("sasrec", protocol.n_items, cfg, n_users=1000)
    for p in model.parameters():
        p.data.fill_(float("nan"))
    with pytest.raises(metrics.NonFiniteScores):
        models.sampled_ranks(model, protocol.test)


@pytest.mark.parametrize("method, arms", [("mkv", ["none"]), ("bdlm", ["mutual"]), ("mkv", ["mask", "mask"])])
def test_an_ablation_with_nothing_to_compare_is_a_one_line_error(method, arms):
    """MKV ['none'] and BDLM ['mutual'] ended in pandas' 'No objects to concatenate'."""
    spec = get_spec(method).ablation
    with pytest.raises(config.ConfigError, match=spec.arms_param) as err:
        cfg = config.resolve("smoke", **{spec.arms_param: arms})  # an arm twice: refused with the parameters
        run_ablation(method, cfg, load_protocol(cfg))
    assert "\n" not in str(err.value)


def test_a_sasrec_that_cannot_fit_in_memory_is_refused_with_an_estimate(isolated):
    """HISTORY_LEN 5000 grew SASRec's memory until the kernel was killed."""
    cfg = config.resolve("smoke", HISTORY_LEN=5000)
    with pytest.raises(ValueError, match=r"HISTORY_LEN=5000 makes SASRec's attention need about [\d.]+ GiB.*lower"):
        run_method("sasrec", cfg, load_protocol(cfg))
    assert models.attention_bytes(config.resolve("cpu")) < 2**24  # the defaults need a few MB
    run_method("gru4rec", config.override(cfg, EPOCHS=1), load_protocol(cfg))  # linear in the length: runs


def test_a_damaged_torch_file_is_a_one_line_error_naming_it(tmp_path):
    """A truncated BDLM round file raised torch's 'PytorchStreamReader failed reading zip archive', no file named."""
    import torch
    path = tmp_path / "state.pt"
    torch.save({"state": {"w": torch.ones(1000)}}, path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(results.ResultError, match=f"{path} is damaged.*delete it") as err:
        results.load_tensors(path)
    assert "\n" not in str(err.value) and "weights_only" not in str(err.value)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_pickle_that_runs_code_is_refused_without_torch_advice(tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "weights.pt"
    path.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(results.ResultError, match="damaged or not a file this workbench wrote") as err:
        results.load_tensors(path)
    assert "weights_only=False" not in str(err.value)


def test_a_training_that_changes_no_weight_is_an_error_not_a_tuned_run(isolated):
    """Second battery: LORA_ALPHA 1e30 logged finite losses but the overflowing gradient norm was clipped to zero, so
    the saved adapter was all zeros and the run, recorded as "LoRA SFT", ranked exactly as zero-shot."""
    cfg = {**config.resolve("smoke", GEN_EVAL_USERS=0), "LORA_ALPHA": 1e30}
    with pytest.raises(sft.NanLossError, match="grad norm is (inf|nan)|changed no trainable weight"):
        run_method("mkv", cfg, load_protocol(cfg))
    before = {"w": __import__("torch").zeros(3)}
    with pytest.raises(sft.NanLossError, match="changed no trainable weight"):
        sft.check_changed(before, {"w": before["w"].clone()}, steps=4)
    sft.check_changed(before, {"w": before["w"] + 1}, steps=4)


@pytest.mark.parametrize("name, value", [("LORA_ALPHA", 0), ("LLM_LEARNING_RATE", 0), ("LEARNING_RATE", 0),
                                         ("LORA_ALPHA", 1e30)])
def test_values_that_train_nothing_are_refused(name, value):
    with pytest.raises(config.ConfigError, match=name):
        config.resolve("smoke", **{name: value})


@pytest.mark.parametrize("name", ["METHOD_SEEDS", "ABLATION_SEEDS"])
def test_a_seed_listed_twice_is_refused(name):
    """Second battery: METHOD_SEEDS [0, 0] presented one run as two seeds (a seed range 0.200-0.200)."""
    with pytest.raises(config.ConfigError, match=f"{name} lists a value twice"):
        config.resolve("smoke", **{name: [0, 0]})


def test_minus_p_none_means_none_not_the_profile_value():
    """Second battery: `-p LLM_TRAIN_SAMPLES None` silently trained on the profile's 32 samples ("None = all")."""
    from workbench.notebook import batch
    value = batch.parse_value("None")
    assert config.resolve("smoke", LLM_TRAIN_SAMPLES=value)["LLM_TRAIN_SAMPLES"] is None
    assert config.resolve("smoke", LLM_TRAIN_SAMPLES=None)["LLM_TRAIN_SAMPLES"] == 32  # a notebook's "profile value"
    with pytest.raises(config.ConfigError, match="SEED must be"):
        config.resolve("smoke", SEED=value)
