"""The comparison report: saved runs found by their ids, missing runs named with their command, runs from another
commit flagged, common users, the README block; and the committed README equals a fresh report."""
import json
from pathlib import Path

import pytest

from workbench import config, results
from workbench.evaluation import comparison, report
from workbench.recommender import entries
from workbench.data.protocol import load_protocol
from workbench.methods.pipeline import method_run_id, run_method
from workbench.results import load_run

ROOT = Path(__file__).resolve().parents[2]
ENTRIES = tuple(e for e in entries() if e.label in ("Popularity", "SASRec", "GRU4Rec", "MKV LoRA"))


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("results")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(results.RESULTS_ENV, str(folder))
        mp.setenv("WORKBENCH_CHECKPOINTS", str(tmp_path_factory.mktemp("checkpoints")))
        cfg = config.resolve("smoke", LLM_TRAIN_SAMPLES=4, LLM_BATCH_SIZE=4, GEN_EVAL_USERS=0)
        protocol = load_protocol(cfg)
        for name in ("popularity", "sasrec", "mkv"):
            run_method(name, cfg, protocol)
    return folder, cfg, protocol


@pytest.fixture
def saved(smoke_runs, monkeypatch):
    folder, cfg, protocol = smoke_runs
    monkeypatch.setenv(results.RESULTS_ENV, str(folder))
    return cfg, protocol


def test_the_comparison_reads_every_saved_run_on_common_users_and_names_the_missing_one(saved):
    cfg, protocol = saved
    found = comparison.collect(cfg, protocol, ENTRIES)
    assert found.missing == {"GRU4Rec": "python -m workbench run 02 --profile smoke"}
    assert list(found.ranks) == ["Popularity", "SASRec", "MKV LoRA"]
    assert len(found.users) == cfg["LLM_EVAL_USERS"]  # the LLM's subset, shared by every row
    text = report.render(found, protocol)
    assert "GRU4Rec: `python -m workbench run 02 --profile smoke`" in text
    assert "Paired differences against SASRec" in text and found.flagged() == {}  # one commit: nothing flagged
    assert "mkv: no summary for these parameters; make it with `python -m workbench run 04 --profile smoke`" in text


def test_a_run_from_another_commit_is_flagged(saved):
    cfg, protocol = saved
    found = comparison.collect(cfg, protocol, ENTRIES)
    path = found.runs["SASRec"][0].folder / "metrics.json"
    record = json.loads(path.read_text())
    original = record["git_commit"]
    try:
        path.write_text(json.dumps({**record, "git_commit": "0123456789abcdef"}))
        again = comparison.collect(cfg, protocol, ENTRIES)
        assert again.flagged() == {"SASRec": ["0123456"]}
        table = report.metric_table(again)
        assert table.loc["SASRec", "commit"] == "0123456 ⚑" and "⚑" not in table.loc["Popularity", "commit"]
    finally:
        path.write_text(json.dumps({**record, "git_commit": original}))


def test_seeds_are_pooled_per_user_and_a_missing_seed_is_a_missing_run(saved):
    cfg, protocol = saved
    with pytest.raises(FileNotFoundError, match="no saved runs for profile smoke"):
        comparison.collect(config.override(cfg, METHOD_SEEDS=[0, 1]), protocol, ENTRIES)  # seed 1 never ran
    import numpy as np
    twice = comparison.collect(cfg, protocol, ENTRIES[:2], seeds=[0, 0])  # (users x seeds), one column per seed
    assert twice.ranks["SASRec"].shape == (len(twice.users), 2)
    assert np.array_equal(twice.ranks["SASRec"][:, 0], twice.ranks["SASRec"][:, 1])
    assert "NDCG@10 seed range" in report.metric_table(twice)


def test_same_users_gives_saved_entries_and_this_notebooks_runs_on_one_user_list(saved):
    """The step notebooks 03/05/07/08 each wrote out by hand: one call, and a missing run or user is an error."""
    cfg, protocol = saved
    mkv = load_run(method_run_id("mkv", cfg, protocol)).ranks
    ranks = comparison.same_users(cfg, protocol, {"mine": mkv}, saved=("Popularity", "SASRec"))
    assert list(ranks) == ["Popularity", "SASRec", "mine"] and {len(r) for r in ranks.values()} == {len(mkv)}
    assert (ranks["mine"] == mkv.sort_values("user_id")["rank"].to_numpy()).all()
    with pytest.raises(FileNotFoundError, match="run 02 --profile smoke"):
        comparison.same_users(cfg, protocol, {"mine": mkv}, saved=("GRU4Rec",))
    with pytest.raises(ValueError, match="have no rank"):
        comparison.same_users(cfg, protocol, {"mine": mkv.head(2)}, saved=("SASRec",), users=sorted(mkv["user_id"]))


def test_the_readme_block_is_replaced_between_its_markers_and_refused_without_them():
    readme = f"# Title\nintro\n{report.BEGIN}\nold\n{report.END}\nafter\n"
    updated = report.with_report(readme, "new table\n")
    assert updated == f"# Title\nintro\n{report.BEGIN}\nnew table\n{report.END}\nafter\n"
    assert report.readme_block(updated) == "new table\n"
    with pytest.raises(ValueError, match="report:begin"):
        report.readme_block("# no markers\n")


def test_the_committed_readme_shows_a_fresh_report_of_the_committed_runs(monkeypatch):
    monkeypatch.setenv(results.RESULTS_ENV, str(ROOT / "results"))
    cfg = config.resolve("cpu")
    protocol = load_protocol(cfg)
    fresh = report.render(comparison.collect(cfg, protocol), protocol)
    committed = report.readme_block((ROOT / "README.md").read_text())
    assert committed == fresh, "README.md's results differ from the saved runs: run `python -m workbench report --readme README.md`"
