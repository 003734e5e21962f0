"""The comparison report: saved runs found by their ids, missing runs named with their command, runs from another
commit flagged, common users, the README block; and the committed README equals a fresh report."""
import json
from pathlib import Path

import pandas as pd
import pytest

from workbench import config, process, results
from workbench.evaluation import comparison, report
from workbench.evaluation.curve import curve_summary
from workbench.recommender import entries
from workbench.data.protocol import load_protocol
from workbench.methods.pipeline import method_run_id, run_method
from workbench.results import load_run

ROOT = Path(__file__).resolve().parents[2]
CLEAN = "a" * 40
ENTRIES = tuple(e for e in entries() if e.label in ("Popularity", "SASRec", "GRU4Rec", "MKV LoRA"))


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("results")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(results.RESULTS_ENV, str(folder))
        mp.setenv("WORKBENCH_CHECKPOINTS", str(tmp_path_factory.mktemp("checkpoints")))
        mp.setattr(process, "git_commit", lambda root=None: CLEAN)  # as in CI, whatever this checkout holds
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


def _rewrite(path: Path, **changes) -> dict:
    """Rewrite a record with `changes`, sealed again (as the workbench would have written it); returns the original."""
    record = json.loads(path.read_text())
    changed = {**record, **changes}
    changed["record_sha256"] = results._seal(changed)
    path.write_text(json.dumps(changed))
    return record


@pytest.mark.parametrize("commit, shown", [("0123456789abcdef", "0123456"),
                                           (CLEAN + "+dirty-1234abcd", "aaaaaaa+dirty-1234abcd")])
def test_a_run_from_another_commit_or_from_uncommitted_code_is_flagged(saved, commit, shown):
    """Issue 20: '+dirty' runs were never flagged (commits were compared cut to 7 characters)."""
    cfg, protocol = saved
    found = comparison.collect(cfg, protocol, ENTRIES)
    path = found.runs["SASRec"][0].folder / "metrics.json"
    record = _rewrite(path, git_commit=commit)
    try:
        again = comparison.collect(cfg, protocol, ENTRIES)
        assert again.flagged() == {"SASRec": [shown]}
        table = report.metric_table(again)
        assert table.loc["SASRec", "commit"] == f"{shown} ⚑" and "⚑" not in table.loc["Popularity", "commit"]
    finally:
        path.write_text(json.dumps(record))


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


def test_an_edited_or_stale_ablation_summary_is_refused_not_reported(saved):
    """Issue 20: the ablation CSVs carried no checksum, so an edited one changed the report without a word."""
    cfg, protocol = saved
    arms = config.override(cfg, MKV_ARMS=["none", "mask"], ABLATION_TRAIN_SAMPLES=4)
    from workbench.methods.pipeline import run_ablation
    grid = run_ablation("mkv", arms, protocol)
    path = grid.save_summary(grid.table(100, 0))
    summary, where = comparison.ablation_summary("mkv", arms, protocol)
    assert where == path.name and list(summary.index) == ["none", "mask"]
    text = path.read_text()
    try:
        edited = summary.copy()
        edited.loc["mask", "NDCG@10"] = 1.0
        edited.to_csv(path)
        with pytest.raises(results.ResultError, match=f"{path.name} says NDCG@10 = 1.0 for arm mask.*re-run notebook 04"):
            comparison.ablation_summary("mkv", arms, protocol)
        summary.assign(runs=summary["runs"].str.replace("mkv-mask", "mkv-other")).to_csv(path)
        with pytest.raises(results.ResultError, match="does not name this ablation's arms and runs"):
            comparison.ablation_summary("mkv", arms, protocol)
        summary.rename(index={"none": "mask", "mask": "none"}).to_csv(path)  # second battery: labels swapped
        with pytest.raises(results.ResultError, match="does not name this ablation's arms and runs"):
            comparison.ablation_summary("mkv", arms, protocol)
    finally:
        path.write_text(text)
    assert comparison.ablation_summary("mkv", arms, protocol)[0] is not None


def test_the_training_budget_says_one_step_not_one_steps():
    """The cost table's budget column reads as English: '1 step', '4 steps' (it printed '1 steps')."""
    cfg = {"LLM_BATCH_SIZE": 4, "GRAD_ACCUM": 2, "LLM_TRAIN_SAMPLES": 8}
    assert comparison.training_budget({"sft_samples": 8, "parameters": cfg}) == "8 windows: 8 rows, 1 step"
    bdlm = {"sft_samples": 32, "parameters": dict(cfg, LLM_TRAIN_SAMPLES=32), "round_sft_samples": 8,
            "rounds": [{"round": 0}, {"round": 1}, {"round": 2}]}
    assert comparison.training_budget(bdlm) == ("32 windows: 32 rows, 4 steps; then 2 round(s) x 8 rows (1 step, "
                                                "LM + KL) + domain phase")
    assert comparison.training_budget({"sft_samples": 0, "parameters": cfg}) == "zero-shot"


def _curve_row(combo, windows, ndcg, gain=(0.0, 0.0, 0.0), popularity=(-0.2, -0.3, -0.1)):
    return {"combo": combo, "windows": windows, "users": 200, "ndcg10": ndcg, "ci_low": ndcg - 0.05,
            "ci_high": ndcg + 0.05, "vs_zeroshot": gain[0], "vs_zeroshot_low": gain[1], "vs_zeroshot_high": gain[2],
            "vs_popularity": popularity[0], "vs_popularity_low": popularity[1], "vs_popularity_high": popularity[2],
            "vs_sasrec": ndcg - 0.75, "vs_sasrec_low": ndcg - 0.8, "vs_sasrec_high": ndcg - 0.7}


def test_the_report_shows_the_saved_learning_curve_and_where_it_crosses_a_reference(tmp_path):
    rows = [_curve_row("mkv:sft:free", 0, 0.33, popularity=(-0.21, -0.25, -0.17)),
            _curve_row("mkv:sft:free", 64, 0.60, (0.27, 0.2, 0.3), popularity=(0.06, 0.01, 0.1)),
            _curve_row("rsllm:sft:listed", 0, 0.23, popularity=(-0.31, -0.35, -0.27))]
    csv = tmp_path / "learning_curve.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    csv.with_suffix(".json").write_text(json.dumps({"profile": "cpu", "users": 200, "seed": 0, "model": "m",
                                                    "device": "CPU", "LLM_LEARNING_RATE": 5e-4,
                                                    "LR_SCHEDULE": "constant"}))
    intro, table, crossed = curve_summary("cpu", csv)
    assert "Popularity NDCG@10 0.540, SASRec 0.750" in intro and "the same 200 test users" in intro
    assert table.loc["MKV, sft, free prompt", "64 windows"] == "0.600 (+0.270 [+0.200, +0.300])"
    assert table.loc["RSLLM, sft, listed prompt", "zero-shot"] == "0.230"
    assert table.loc["RSLLM, sft, listed prompt"].isna()["64 windows"]  # not run: the table shows –
    assert "–" in report._markdown(table)
    assert crossed == ["- Above Popularity (paired CI above 0): MKV, sft, free prompt at 64 windows "
                       "(+0.060 [+0.010, +0.100]).",
                       "- No point crosses SASRec; the closest, MKV, sft, free prompt at 64 windows, is "
                       "-0.150 [-0.200, -0.100] against it."]
    assert curve_summary("gpu", csv) is None  # another profile's curve is not reported as this one's
    assert curve_summary("cpu", tmp_path / "absent.csv") is None
