"""Profiles and typed parameters: every value is checked before anything runs."""
import json

import pytest

from workbench import config
from workbench.notebook import batch
from workbench import start


def test_profiles_fill_none_and_overrides_win():
    cfg = config.resolve("smoke", SEED=3, EPOCHS=None)
    assert cfg["PROFILE"] == "smoke" and cfg["SEED"] == 3 and cfg["EPOCHS"] == config.PROFILES["smoke"]["EPOCHS"]


def test_every_profile_resolves_and_every_parameter_has_a_meaning():
    for name in config.PROFILES:
        assert config.resolve(name)["PROFILE"] == name
    assert all(p.doc and p.kind in ("int", "float", "str", "list_int", "list_str") for p in config.PARAMS.values())
    assert set().union(*map(set, config.PROFILES.values())) <= set(config.PARAMS)


def test_unknown_profile_and_parameter_are_errors_that_list_the_valid_names():
    with pytest.raises(config.ConfigError, match="smoke, cpu, gpu"):
        config.resolve("laptop")
    with pytest.raises(config.ConfigError, match="valid: PROFILE,.*SEED"):
        config.resolve("cpu", SEEED=1)


@pytest.mark.parametrize("name, value, message", [
    ("LLM_EVAL_USERS", "abc", "LLM_EVAL_USERS must be int >= 1 or None, got 'abc'"),
    ("SEED", 1.5, "SEED must be int >= 0, got 1.5"),
    ("SEED", -1, "SEED must be int >= 0"),
    ("SEED", True, "SEED must be int"),
    ("EPOCHS", 0, "EPOCHS must be int >= 1, got 0"),
    ("HISTORY_LEN", 0, "HISTORY_LEN must be int >= 1"),
    ("N_NEGATIVES", 0, "N_NEGATIVES must be int >= 1"),
    ("LLM_EPOCHS", 0, "LLM_EPOCHS must be int >= 1"),
    ("AUGMENT", "rotate", "AUGMENT must be a list of str from none, shuffle_candidates, shuffle_output, shuffle_keys, "
                          "mask"),
    ("SCORE_REDUCE", "max", "SCORE_REDUCE must be one of sum, mean"),
    ("LEARNING_RATE", "fast", "LEARNING_RATE must be float"),
    ("DROPOUT", 1.0, "DROPOUT must be float >= 0 < 1"),
    ("MKV_ARMS", ["none", "rotate"], "MKV_ARMS must be a list of str from none, shuffle_keys, mask, listed, "
                                     "shuffle_candidates, shuffle_output, all"),
    ("TIE_BREAK", "random", "TIE_BREAK must be one of file_order, item_id"),
])
def test_bad_values_are_refused_with_what_is_allowed(name, value, message):
    with pytest.raises(config.ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        config.resolve("cpu", **{name: value})


def test_values_are_converted_to_their_types():
    cfg = config.resolve("cpu", ABLATION_SEEDS="(0,)", LORA_TARGETS=("q_proj",), LLM_EVAL_USERS="None",
                         LEARNING_RATE=1, SEED=2)
    assert cfg["ABLATION_SEEDS"] == [0] and cfg["LORA_TARGETS"] == ["q_proj"] and cfg["LLM_EVAL_USERS"] is None
    assert cfg["LEARNING_RATE"] == 1.0 and isinstance(cfg["LEARNING_RATE"], float) and cfg["SEED"] == 2
    with pytest.raises(config.ConfigError, match="multiple of NUM_HEADS"):
        config.resolve("cpu", EMBED_DIM=63)
    with pytest.raises(config.ConfigError, match="set DATA_PATH"):
        config.resolve("cpu", DATASET="ml-1m")


def test_override_checks_like_resolve():
    cfg = config.resolve("smoke")
    assert config.override(cfg, SEED=4)["SEED"] == 4 and cfg["SEED"] == 0
    with pytest.raises(config.ConfigError, match="SEED must be int >= 0"):
        config.override(cfg, SEED=-4)


def test_profile_from_environment(monkeypatch):
    monkeypatch.setenv(config.PROFILE_ENV, "gpu")
    assert config.resolve()["PROFILE"] == "gpu"
    monkeypatch.setenv(config.PROFILE_ENV, "nope")
    with pytest.raises(config.ConfigError, match="unknown profile"):
        config.profile_name()


def test_start_refuses_unknown_names_and_can_be_run_again(capsys):
    namespace = {"PROFILE": "smoke", "SEED": 5, "DEVICE": None, "pd": object(), "In": [], "_x": 1}
    cfg = start(namespace)
    assert cfg["SEED"] == 5 and cfg["DEVICE"] == "cpu"
    namespace.update(cfg=cfg, runs={})  # what later cells define
    assert start(namespace)["SEED"] == 5  # re-running the setup cell in JupyterLab works
    namespace["HISTORY_LENGTH"] = 20  # a misspelt papermill -p
    with pytest.raises(config.ConfigError, match="HISTORY_LENGTH"):
        start(namespace)


def test_notebooks_that_load_the_protocol_accept_every_protocol_parameter():
    protocol = {"DATASET", "DATA_PATH", "TIE_BREAK", "MIN_INTERACTIONS", "N_NEGATIVES", "CANDIDATE_SEED"}
    for path in batch.list_notebooks():
        declared = batch.declared_parameters(path)
        assert declared <= set(config.PARAMS) | {"PROFILE"}, path.name
        if "load_protocol" in path.read_text():
            assert protocol <= declared, f"{path.name} does not accept {sorted(protocol - declared)}"


def test_notebooks_that_run_an_llm_method_accept_every_llm_parameter():
    from workbench.llm.recommender import LLMRecommender
    llm = set(LLMRecommender.train_params()) | {"LLM_EVAL_USERS", "SCORE_REDUCE", "SCORE_ORDERS", "RANK_BATCH_SIZE"}
    checked = []
    for path in batch.list_notebooks():
        code = "".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code")
        if '"mkv"' not in code:
            continue
        checked.append(path.name)
        declared = batch.declared_parameters(path)
        seeds = {"SEED", "LLM_EVAL_USERS", "LLM_TRAIN_SAMPLES"} if "ABLATION_SEEDS" in declared else set()
        missing = llm - seeds - declared  # the ablation sets its seeds and sizes through ABLATION_* parameters
        assert not missing, f"{path.name} does not accept {sorted(missing)}"
    assert len(checked) >= 2, checked  # notebooks 03 and 04 at least


@pytest.mark.parametrize("name, text", [("SEED", "1"), ("LEARNING_RATE", "0.1"), ("LLM_EVAL_USERS", "8")])
def test_numbers_given_as_text_are_refused(name, text):
    with pytest.raises(config.ConfigError, match=f"{name} must be"):
        config.resolve("cpu", **{name: text})


PARAMS_CELL = "PROFILE = 'smoke'   # a comment\nSEED = None\nHISTORY_LEN = None"


def test_a_deleted_override_goes_back_to_the_profile_value(capsys):
    """In a live kernel the cell's text decides, not what an earlier run of it left in the namespace."""
    ns = {"In": ["", PARAMS_CELL.replace("SEED = None", "SEED = 3"), "cfg = start(globals())"]}
    ns.update(PROFILE="smoke", SEED=3, HISTORY_LEN=None)
    assert start(ns)["SEED"] == 3
    ns["In"] += [PARAMS_CELL.replace("SEED = None\n", ""), "cfg = start(globals())"]  # the line deleted, cell re-run
    assert start(ns)["SEED"] == config.resolve("smoke")["SEED"]
    assert "SEED set in the kernel but not in the parameters cell" in capsys.readouterr().out


def test_papermill_injected_values_win_and_scratch_constants_are_not_parameters():
    ns = {"In": ["", PARAMS_CELL, "# Parameters\nSEED = 4\n", "TOP_K = 5", "cfg = start(globals())"],
          "PROFILE": "smoke", "SEED": 4, "TOP_K": 5}
    assert start(ns)["SEED"] == 4  # TOP_K, a scratch constant of another cell, is not refused


def test_a_wrong_name_in_the_parameters_cell_is_named_with_the_nearest_parameter():
    ns = {"In": ["", PARAMS_CELL + "\nHISTORY_LENGTH = 20", "cfg = start(globals())"]}
    with pytest.raises(config.ConfigError, match=r"HISTORY_LENGTH \(did you mean HISTORY_LEN\?\)"):
        start(ns)
    ns = {"In": ["", PARAMS_CELL.replace("SEED = None", "SEED = '1'"), "cfg = start(globals())"]}
    with pytest.raises(config.ConfigError, match="SEED must be int >= 0, got '1'"):
        start(ns)  # a number typed as text is refused in the cell as on the command line


def test_params_shows_any_profile_within_120_columns(capsys):
    from workbench.__main__ import main
    assert main(["params", "--profile", "gpu"]) == 0
    out = capsys.readouterr().out
    assert "profile gpu" in out and "LLM_TRAIN_SAMPLES = 20000 *" in out
    assert max(len(line) for line in out.splitlines()) <= 120
