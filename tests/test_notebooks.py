"""Papermill smoke runs of every notebook, asserting on what they saved (nbval runs the same notebooks separately).

Reproduce: `WORKBENCH_PROFILE=smoke python -m pytest tests/test_notebooks.py`.
"""
import json

import pytest

from workbench import config, runner
from workbench.data.protocol import load_protocol
from workbench.models import seqrec
from workbench.results import load_run, results_dir

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    summary = runner.run_notebooks(runner.list_notebooks(), "smoke", {}, out, progress=False)
    return {r["notebook"]: r for r in summary}


def test_every_notebook_runs_in_the_smoke_profile(smoke_run):
    assert [r["status"] for r in smoke_run.values()] == ["ok"] * len(runner.list_notebooks())


def test_baselines_saved_consistent_metrics(smoke_run):
    cfg = config.resolve("smoke")
    for method in ("popularity", "sasrec", "gru4rec"):
        record, ranks = load_run(f"{method}-smoke-seed0")
        m = record["metrics"]
        assert record["n_users"] == cfg["MAX_USERS"] == len(ranks) and ranks["rank"].between(1, 20).all()
        assert 0 <= m["HR@1"] <= m["HR@5"] <= m["HR@10"] <= 1 and m["NDCG@5"] <= m["NDCG@10"]
        assert record["parameters"]["PROFILE"] == "smoke" and record["profile"] == "smoke"
        # the sampled negatives are unseen items, so they all compete in full ranking too: full <= sampled
        assert 0 < record["full_ranking"]["MRR"] <= m["MRR"]


def test_popularity_result_matches_an_independent_recount(smoke_run):
    """Popularity's saved ranks equal ranks recomputed here from the candidate files and training counts."""
    cfg = config.resolve("smoke")
    protocol = load_protocol(cfg)
    expected = seqrec.sampled_ranks(seqrec.Popularity(protocol.n_items).fit(protocol.split["train"]), protocol.test)
    _, saved = load_run("popularity-smoke-seed0")
    assert saved.sort_values("user_id").reset_index(drop=True).equals(expected.sort_values("user_id").reset_index(drop=True))


def test_exploration_recorded_protocol_checks(smoke_run):
    summary = json.loads((results_dir() / "data-ml-100k" / "summary.json").read_text())
    assert summary["users"] == 943 and summary["candidates_per_user"] == [20]
    assert summary["target_in_candidates"] and summary["negatives_unseen"]


def test_mkv_notebooks_saved_their_runs(smoke_run):
    cfg = config.resolve("smoke")
    record, ranks = load_run("mkv-lora-smoke-seed0")
    assert record["n_users"] == cfg["LLM_EVAL_USERS"] == len(ranks) and ranks["rank"].between(1, 20).all()
    assert record["sft_samples"] == cfg["LLM_TRAIN_SAMPLES"] * cfg["LLM_EPOCHS"]
    losses = [r["loss"] for r in record["loss_history"]]
    assert losses and all(l == l and l < 50 for l in losses)  # finite
    assert 0 <= record["generate_then_match"]["valid_ratio"] <= 1
    zero, zero_ranks = load_run("mkv-zeroshot-smoke-seed0")
    assert set(zero_ranks["user_id"]) == set(ranks["user_id"])  # the same evaluated users
    for arm in cfg["ABLATION_ARMS"]:
        arm_record, _ = load_run(f"mkv-ablation-{arm}-smoke-seed0")
        assert arm_record["ablation_arm"] == arm and arm_record["n_users"] == cfg["ABLATION_EVAL_USERS"]
    assert (results_dir() / "mkv-ablation-smoke-summary.csv").exists()
