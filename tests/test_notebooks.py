"""What the smoke-profile notebooks saved: the expected runs, users and methods, and a LoRA loss that falls.

The notebooks run once per session (nbval in `make test`; papermill here when nbval did not collect them).
Reproduce: `WORKBENCH_PROFILE=smoke python -m pytest --nbval-lax notebooks tests/test_notebooks.py`.
"""
import json

import pandas as pd
import pytest

from workbench import config, runner
from workbench.data.protocol import load_protocol
from workbench.methods import method_run_id
from workbench.models import seqrec
from workbench.results import load_run, results_dir

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def executed(request, tmp_path_factory):
    """{notebook: [(cell source, outputs)]} of every notebook executed in the smoke profile this session."""
    seen = getattr(request.config, "nbval_notebooks", set())
    missing = [p for p in runner.list_notebooks() if p.name not in seen]
    cells = dict(getattr(request.config, "nbval_outputs", {}))
    if missing:
        out = tmp_path_factory.mktemp("runs")
        runner.run_notebooks(missing, "smoke", {}, out, progress=False)
        cells.update({p.name: runner.notebook_cells(out / p.name) for p in missing})
    return cells


@pytest.fixture(scope="module")
def smoke(executed):
    cfg = config.resolve("smoke")
    return cfg, load_protocol(cfg)


def test_every_executed_notebook_shows_its_figures_and_no_library_noise(executed):
    """A cell that saves a figure shows it inline; no warning box, TCP notice or empty training table anywhere."""
    assert set(executed) == {p.name for p in runner.list_notebooks()}
    problems = {name: runner.output_problems(cells) for name, cells in executed.items()}
    assert not {k: v for k, v in problems.items() if v}
    assert sum("plots.save(" in src for cells in executed.values() for src, _ in cells) >= 25
    baselines = runner.output_text(executed["02_baselines.ipynb"])
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
    table = _run("sasrec", cfg, protocol).item_embeddings
    assert tuple(table.shape) == (protocol.n_items, cfg["EMBED_DIM"])


def test_popularity_result_matches_an_independent_recount(smoke):
    """Popularity's saved ranks equal ranks recomputed here from the candidate files and training counts."""
    cfg, protocol = smoke
    expected = seqrec.sampled_ranks(seqrec.Popularity(protocol.n_items).fit(protocol.split["train"]), protocol.test)
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
    zero = _run("mkv", config.override(cfg, LLM_TRAIN_SAMPLES=0, GEN_EVAL_USERS=0), protocol, "mkv-zeroshot")
    assert len(tuned.ranks) == cfg["LLM_EVAL_USERS"] and set(zero.ranks["user_id"]) == set(tuned.ranks["user_id"])
    assert tuned.record["sft_samples"] == cfg["LLM_TRAIN_SAMPLES"] * cfg["LLM_EPOCHS"] and zero.record["sft_samples"] == 0
    loss = pd.DataFrame(tuned.record["training_log"])["loss"]
    assert loss.notna().all() and loss.tail(2).mean() < loss.head(2).mean()  # the smoke LoRA's loss falls
    assert (tuned.folder / "adapter" / "adapter_config.json").exists()
    assert tuned.record["generate_then_match"]["users"] == cfg["GEN_EVAL_USERS"]


def test_ablation_saved_one_run_per_arm_and_seed(smoke):
    cfg, protocol = smoke
    arm_cfg = config.override(cfg, LLM_EVAL_USERS=cfg["ABLATION_EVAL_USERS"], GEN_EVAL_USERS=0,
                              LLM_TRAIN_SAMPLES=cfg["ABLATION_TRAIN_SAMPLES"])
    ids = set()
    for arm in cfg["ABLATION_ARMS"]:
        for seed in cfg["ABLATION_SEEDS"]:
            run = _run("mkv", config.override(arm_cfg, AUGMENT=arm, SEED=seed), protocol, f"mkv-{arm}")
            assert run.record["parameters"]["AUGMENT"] == arm and len(run.ranks) == cfg["ABLATION_EVAL_USERS"]
            ids.add(run.record["run"])
    assert len(ids) == len(cfg["ABLATION_ARMS"]) * len(cfg["ABLATION_SEEDS"])
    summary = [p for p in results_dir().glob("mkv-ablation-smoke-*.csv")]
    assert len(summary) == 1 and set(pd.read_csv(summary[0])["method"]) == set(cfg["ABLATION_ARMS"])


def _check_ablation(method, cfg, protocol, arms, arm_changes, main, **train):
    """Each arm's saved run (first ablation seed) holds ABLATION_EVAL_USERS users inside the main run's; one summary
    CSV names every arm.  train: the arms' training sizes (default: ABLATION_TRAIN_SAMPLES windows)."""
    train = train or {"LLM_TRAIN_SAMPLES": cfg["ABLATION_TRAIN_SAMPLES"]}
    arm_cfg = config.override(cfg, LLM_EVAL_USERS=cfg["ABLATION_EVAL_USERS"], GEN_EVAL_USERS=0, **train)
    for arm in arms:
        run = _run(method, config.override(arm_cfg, **arm_changes(arm), SEED=cfg["ABLATION_SEEDS"][0]), protocol,
                   f"{method}-{arm}")
        assert len(run.ranks) == cfg["ABLATION_EVAL_USERS"] and set(run.ranks["user_id"]) <= set(main.ranks["user_id"])
    summary = [p for p in results_dir().glob(f"{method}-ablation-smoke-*.csv")]
    assert len(summary) == 1 and set(pd.read_csv(summary[0])["method"]) == set(arms)


def test_trsr_run_is_on_the_mkv_users_and_its_ablation_on_a_subset_of_them(smoke):
    cfg, protocol = smoke
    trsr, mkv = _run("trsr", cfg, protocol), _run("mkv", cfg, protocol)
    assert set(trsr.ranks["user_id"]) == set(mkv.ranks["user_id"])
    assert trsr.record["summaries"]["users"] > 0 and trsr.record["history_items"]["max"] > 0
    from workbench.methods.trsr import arm_changes
    _check_ablation("trsr", cfg, protocol, cfg["TRSR_ARMS"], arm_changes, trsr)


def test_rsllm_reads_the_saved_sasrec_table_and_its_ablation_covers_every_arm(smoke):
    cfg, protocol = smoke
    rsllm, mkv, sasrec = _run("rsllm", cfg, protocol), _run("mkv", cfg, protocol), _run("sasrec", cfg, protocol)
    assert set(rsllm.ranks["user_id"]) == set(mkv.ranks["user_id"])
    assert rsllm.record["id_embeddings"]["source"] == sasrec.folder.name
    log = pd.DataFrame(rsllm.record["training_log"])
    assert set(log["stage"]) == {1, 2} and log[["loss_lm", "loss_user_nce", "loss_item_nce"]].dropna().size > 0
    from workbench.methods.rsllm import arm_changes
    _check_ablation("rsllm", cfg, protocol, cfg["RSLLM_ARMS"], arm_changes, rsllm)


def test_bdlm_evaluates_both_models_before_and_after_on_the_mkv_users_and_ablates_every_arm(smoke):
    cfg, protocol = smoke
    bdlm, mkv, sasrec = _run("bdlm", cfg, protocol), _run("mkv", cfg, protocol), _run("sasrec", cfg, protocol)
    assert set(bdlm.ranks["user_id"]) == set(mkv.ranks["user_id"])
    assert bdlm.record["domain_model"]["run"] == sasrec.folder.name
    assert [r["round"] for r in bdlm.record["rounds"]] == list(range(cfg["BDLM_ROUNDS"] + 1))
    variants = pd.read_parquet(bdlm.folder / "variants.parquet").set_index("user_id")
    users = sorted(bdlm.ranks["user_id"])
    assert variants.loc[users, "llm_after"].tolist() == bdlm.ranks.set_index("user_id").loc[users, "rank"].tolist()
    assert variants.loc[users, "domain_before"].tolist() == sasrec.ranks.set_index("user_id").loc[users, "rank"].tolist()
    from workbench.methods.bdlm import arm_changes
    _check_ablation("bdlm", cfg, protocol, cfg["BDLM_ARMS"], arm_changes, bdlm,
                    LLM_TRAIN_SAMPLES=cfg["LLM_TRAIN_SAMPLES"])  # BDLM's arms train as its main run


def test_the_comparison_found_every_method_and_wrote_the_report(smoke):
    cfg, protocol = smoke
    from workbench import report
    comparison = report.collect(cfg, protocol)
    assert comparison.missing == {} and list(comparison.ranks) == [e.label for e in report.ENTRIES]
    text = report.report_path("smoke").read_text()
    assert text == report.render(comparison, protocol)  # what notebook 09 wrote is what the saved runs give
    assert all(f"| {e.label} |" in text for e in report.ENTRIES) and "no summary" not in text
