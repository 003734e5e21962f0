import pytest

from workbench import config


def test_profiles_fill_none_and_overrides_win():
    cfg = config.resolve("smoke", SEED=3, EPOCHS=None)
    assert cfg["PROFILE"] == "smoke" and cfg["SEED"] == 3 and cfg["EPOCHS"] == config.PROFILES["smoke"]["EPOCHS"]


def test_unknown_profile_and_parameter_are_errors_that_list_the_valid_names():
    with pytest.raises(config.ConfigError, match="smoke, cpu, gpu"):
        config.resolve("laptop")
    with pytest.raises(config.ConfigError, match="valid: PROFILE,.*SEED"):
        config.resolve("cpu", SEEED=1)


def test_profile_from_environment(monkeypatch):
    monkeypatch.setenv(config.PROFILE_ENV, "gpu")
    assert config.resolve()["PROFILE"] == "gpu"
    monkeypatch.setenv(config.PROFILE_ENV, "nope")
    with pytest.raises(config.ConfigError, match="unknown profile"):
        config.profile_name()


def test_resolve_notebook_reads_upper_case_globals_and_refuses_unknown_ones():
    namespace = {"PROFILE": "smoke", "SEED": 5, "pd": object(), "In": [], "_x": 1}
    assert config.resolve_notebook(namespace)["SEED"] == 5
    namespace["HISTORY_LENGTH"] = 20  # a misspelt papermill -p
    with pytest.raises(config.ConfigError, match="HISTORY_LENGTH"):
        config.resolve_notebook(namespace)
