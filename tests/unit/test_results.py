import json

import pandas as pd
import pytest

from workbench import config, results


def test_save_and_load_a_run(tmp_path, monkeypatch):
    monkeypatch.setenv(results.RESULTS_ENV, str(tmp_path))
    cfg = config.resolve("smoke")
    ranks = pd.DataFrame({"user_id": [1, 2, 3, 4], "rank": [1, 3, 12, 2]})
    path = results.save_run(results.run_name("pop", cfg), ranks, cfg, "cpu", 1.5, extra={"method": "Pop"})
    record = json.loads(path.read_text())
    assert record["run"] == "pop-smoke-seed0" and record["metrics"]["HR@1"] == 0.25
    assert record["ci95"]["HR@1"][0] <= 0.25 <= record["ci95"]["HR@1"][1]
    for key in ("parameters", "profile", "seed", "git_commit", "versions", "device", "wall_time_s", "ranks_path"):
        assert key in record
    assert "20 candidates" in record["protocol"]
    loaded, loaded_ranks = results.load_run("pop-smoke-seed0")
    assert loaded["method"] == "Pop" and loaded_ranks.equals(ranks)


def test_bad_ranks_and_missing_runs(tmp_path, monkeypatch):
    monkeypatch.setenv(results.RESULTS_ENV, str(tmp_path))
    with pytest.raises(ValueError, match="user_id, rank"):
        results.save_run("x", pd.DataFrame({"rank": [1]}), config.resolve("smoke"), "cpu", 0)
    with pytest.raises(FileNotFoundError, match="run the notebook"):
        results.load_run("nothing-here")
