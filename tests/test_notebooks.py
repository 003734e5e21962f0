"""What the smoke-profile notebooks saved: the expected runs, users and methods, and a LoRA loss that falls.

The notebooks run once per session (nbval in `make test`; papermill here when nbval did not collect them).
Reproduce: `WORKBENCH_PROFILE=smoke python -m pytest --nbval-lax notebooks tests/test_notebooks.py`.
"""
import json

import pandas as pd
import pytest

from workbench import config
from workbench.notebook import batch
from workbench.data.protocol import load_protocol
from workbench.evaluation import comparison, report
from workbench.methods.baselines import models
from workbench.methods.mkv import zero_shot
from workbench.methods.pipeline import ablation_run_ids, ablation_summary_path, load_recommender, method_run_id
from workbench.recommender import entries, get_spec
from workbench.results import load_run, results_dir

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def executed(request, tmp_path_factory):
    """{notebook: [(cell source, outputs)]} of every notebook executed in the smoke profile this session."""
    seen = getattr(request.config, "nbval_notebooks", set())
    missing = [p for p in batch.list_notebooks() if p.name not in seen]
    cells = dict(getattr(request.config, "nbval_outputs", {}))
    if missing:
        out = tmp_path_factory.mktemp("runs")
        batch.run_notebooks(missing, "smoke", {}, out, progress=False)
        cells.update({p.name: batch.notebook_cells(out / p.name) for p in missing})
    return cells


@pytest.fixture(scope="module")
def smoke(executed):
    cfg = config.resolve("smoke")
    return cfg, load_protocol(cfg)


def test_every_executed_notebook_shows_its_figures_and_no_library_noise(executed):
    """A cell that saves a figure shows it inline; no warning box, TCP notice or empty training table anywhere."""
    assert set(executed) == {p.name for p in batch.list_notebooks()}
    problems = {name: batch.output_problems(cells) for name, cells in executed.items()}
    assert not {k: v for k, v in problems.items() if v}
    assert sum("plots.save(" in src for cells in executed.values() for src, _ in cells) >= 25
    baselines = batch.output_text(executed["02_baselines.ipynb"])
    assert "SASRec: all 2 epochs run; keeping epoch" in baselines  # a bar that stops says why


def _run(name, cfg, protocol, run_name=None):
    return load_run(method_run_id(name, cfg, protocol, run_name))


def test_baselines_saved_every_user_and_their_weights(smoke):
    cfg, protocol = smoke
    users = set(protocol.test["user_id"])
    for method in ("popularity", "sasrec", "gru4rec"):
        run = _run(method, cfg, protocol)
        assert run.record["method"] == method and run.record["profile"] == "smoke"
        assert set(run.ranks["user_id"]) == users and len(run.ranks) == cfg["MAX_USERS"]
        assert run.record["metrics"]["MRR"] == pytest.approx((1 / run.ranks["rank"]).mean(), abs=1e-6)
        assert "full_ranking" in run.record
    table = load_recommender(_run("sasrec", cfg, protocol)).item_embeddings
    assert tuple(table.shape) == (protocol.n_items, cfg["EMBED_DIM"])


def test_popularity_result_matches_an_independent_recount(smoke):
    """Popularity's saved ranks equal ranks recomputed here from the candidate files and training counts."""
    cfg, protocol = smoke
    counts = models.Popularity(protocol.n_items).fit(protocol.split["train"]).counts
    assert (protocol.item_counts() == counts).all()
    expected = models.sampled_ranks(models.Popularity(protocol.n_items).fit(protocol.split["train"]), protocol.test)
    saved = _run("popularity", cfg, protocol).ranks
    assert saved.sort_values("user_id", ignore_index=True).equals(expected.sort_values("user_id", ignore_index=True))


def test_exploration_recorded_protocol_checks(smoke):
    cfg, protocol = smoke
    summary = json.loads((results_dir() / f"data-ml-100k-{protocol.fingerprint}" / "summary.json").read_text())
    assert summary["users"] == 943 and summary["candidates_per_user"] == [20] and summary["tie_break"] == "file_order"
    assert summary["target_in_candidates"] and summary["negatives_unseen"]


def test_mkv_runs_share_users_and_the_smoke_lora_learns(smoke):
    cfg, protocol = smoke
    tuned = _run("mkv", cfg, protocol)
    zero = _run("mkv", zero_shot(cfg), protocol, "mkv-zeroshot")
    assert len(tuned.ranks) == cfg["LLM_EVAL_USERS"] and set(zero.ranks["user_id"]) == set(tuned.ranks["user_id"])
    assert tuned.record["sft_samples"] == cfg["LLM_TRAIN_SAMPLES"] * cfg["LLM_EPOCHS"] and zero.record["sft_samples"] == 0
    loss = pd.DataFrame(tuned.record["training_log"])["loss"]
    assert loss.notna().all() and loss.tail(2).mean() < loss.head(2).mean()  # the smoke LoRA's loss falls
    assert (tuned.folder / "adapter" / "adapter_config.json").exists()
    assert tuned.record["generate_then_match"]["users"] == cfg["GEN_EVAL_USERS"]


@pytest.mark.parametrize("method", ["mkv", "trsr", "rsllm", "bdlm"])
def test_each_declared_ablation_saved_every_arm_and_seed_and_the_summary_the_report_reads(smoke, method):
    """The runs and the summary file are the ones the method's declared ablation names (its spec, used by the
    notebook, the report and this test alike); each arm's users are inside the main run's."""
    cfg, protocol = smoke
    ablation = get_spec(method).ablation
    ids = ablation_run_ids(method, cfg, protocol)
    assert len(ids) == len(set(ids)) == len(cfg[ablation.arms_param]) * len(cfg["ABLATION_SEEDS"])
    main = _run(method, cfg, protocol)
    for rid in ids:
        run = load_run(rid)
        assert len(run.ranks) == cfg["ABLATION_EVAL_USERS"] and set(run.ranks["user_id"]) <= set(main.ranks["user_id"])
    train = cfg["ABLATION_TRAIN_SAMPLES"] if ablation.own_training else cfg["LLM_TRAIN_SAMPLES"]
    assert load_run(ids[0]).record["parameters"]["LLM_TRAIN_SAMPLES"] == train
    summary = ablation_summary_path(method, cfg, protocol, write=False)
    assert set(pd.read_csv(summary)["method"]) == set(cfg[ablation.arms_param])
    assert sorted(pd.read_csv(summary)["runs"].str.split(", ").sum()) == sorted(ids)


def test_trsr_run_is_on_the_mkv_users(smoke):
    cfg, protocol = smoke
    trsr, mkv = _run("trsr", cfg, protocol), _run("mkv", cfg, protocol)
    assert set(trsr.ranks["user_id"]) == set(mkv.ranks["user_id"])
    assert trsr.record["summaries"]["users"] > 0 and trsr.record["history_items"]["max"] > 0


def test_rsllm_reads_the_saved_sasrec_table(smoke):
    cfg, protocol = smoke
    rsllm, mkv, sasrec = _run("rsllm", cfg, protocol), _run("mkv", cfg, protocol), _run("sasrec", cfg, protocol)
    assert set(rsllm.ranks["user_id"]) == set(mkv.ranks["user_id"])
    assert rsllm.record["id_embeddings"]["source"] == sasrec.folder.name
    log = pd.DataFrame(rsllm.record["training_log"])
    assert set(log["stage"]) == {1, 2} and log[["loss_lm", "loss_user_nce", "loss_item_nce"]].dropna().size > 0


def test_bdlm_evaluates_both_models_before_and_after_on_the_mkv_users(smoke):
    cfg, protocol = smoke
    bdlm, mkv, mf = _run("bdlm", cfg, protocol), _run("mkv", cfg, protocol), _run("mf", cfg, protocol)
    assert set(bdlm.ranks["user_id"]) == set(mkv.ranks["user_id"])
    assert bdlm.record["domain_model"]["run"] == mf.folder.name  # the default domain model, trained on first use
    assert [r["round"] for r in bdlm.record["rounds"]] == list(range(cfg["BDLM_ROUNDS"] + 1))
    variants = pd.read_parquet(bdlm.folder / "variants.parquet").set_index("user_id")
    users = sorted(bdlm.ranks["user_id"])
    assert variants.loc[users, "llm_after"].tolist() == bdlm.ranks.set_index("user_id").loc[users, "rank"].tolist()
    assert variants.loc[users, "domain_before"].tolist() == mf.ranks.set_index("user_id").loc[users, "rank"].tolist()


def test_the_comparison_found_every_method_and_wrote_the_report(smoke):
    cfg, protocol = smoke
    found = comparison.collect(cfg, protocol)
    assert found.missing == {} and list(found.ranks) == [e.label for e in entries()]
    text = report.report_path("smoke").read_text()
    assert text == report.render(found, protocol)  # what notebook 09 wrote is what the saved runs give
    assert all(f"| {e.label} |" in text for e in entries()) and "no summary" not in text
