"""The gpu-check estimate: planned runs costed by the work their reference runs counted, scaled by size; a run
over budget or without an estimate is refused.  Reproduce: `python -m pytest tests/unit/test_budget.py`."""
import json

import pytest

from workbench import config, results
from workbench.evaluation import budget
from workbench.gpucheck import GpuCheck, check_budget
from workbench.methods.pipeline import method_run_id, run_method
from workbench.recommender import get_method
from small_llm import SMALL, smoke_setting

ARMS = dict(MKV_ARMS=["none", "shuffle_keys"], RSLLM_ARMS=["text", "unified_2stage"],
            TRSR_ARMS=["hierarchical", "recent"], BDLM_ARMS=["none", "mutual"])
H200 = "NVIDIA H200 (CUDA 13.0)"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Every planned LLM run of a small smoke setting, saved with its compute entry, and the baselines."""
    for cfg, protocol in smoke_setting(tmp_path_factory, "budget", dict(SMALL, **ARMS)):
        for name in ("popularity", "gru4rec", "mf"):  # sasrec: saved by smoke_setting
            run_method(name, cfg, protocol)
        for run in budget.plan(cfg, protocol):
            run_method(run.method, run.cfg, protocol, run_name=None if run.run_name == run.method else run.run_name)
        yield cfg, protocol


def test_the_plan_lists_each_method_its_zero_shot_and_every_arm(reference):
    cfg, protocol = reference
    names = [r.run_name for r in budget.plan(cfg, protocol)]
    assert names[:4] == ["mkv", "mkv-zeroshot", "mkv-none", "mkv-shuffle_keys"]
    assert len(names) == 4 * 4
    assert {r.train_rows for r in budget.plan(cfg, protocol) if "zeroshot" in r.run_name} == {0}


def test_the_estimate_of_the_reference_itself_is_what_its_records_counted(reference):
    cfg, protocol = reference
    table = budget.estimate(cfg, protocol, H200, reference=cfg, mfu=0.1, benchmark=False).set_index("step")
    for run in budget.plan(cfg, protocol):
        record = results.load_run(method_run_id(
            run.method, run.cfg, protocol, None if run.run_name == run.method else run.run_name)).record
        counted = sum(record["compute"].get(p, {}).get("flops", 0) for p in ("fit", "rank", "diagnose"))
        estimated = table.loc[run.run_name, "TFLOP"] * 1e12
        if run.train_rows and record["resumed"]:  # reused the method's checkpoints:
            assert estimated > counted * 1.5, run.run_name  # costed as trained afresh, at the method's rate per row
        else:
            assert estimated == pytest.approx(counted, rel=1e-6), run.run_name


def test_twice_the_windows_and_users_cost_twice_the_flops(reference):
    cfg, protocol = reference
    bigger = config.override(cfg, LLM_TRAIN_SAMPLES=2 * cfg["LLM_TRAIN_SAMPLES"], ABLATION_TRAIN_SAMPLES=16,
                             LLM_EVAL_USERS=8, ABLATION_EVAL_USERS=12)
    one, two = (budget.estimate(c, protocol, H200, reference=cfg, mfu=0.1, benchmark=False).set_index("step")
                for c in (cfg, bigger))
    assert two.loc["mkv", "TFLOP"] == pytest.approx(2 * one.loc["mkv", "TFLOP"], rel=1e-6)
    assert two.loc["mkv-zeroshot", "TFLOP"] == pytest.approx(2 * one.loc["mkv-zeroshot", "TFLOP"], rel=1e-6)
    assert two.loc["mkv", "seconds"] > one.loc["mkv", "seconds"]
    assert one.attrs["mfu"] == 0.1 and one.attrs["mfu_source"] == "given" and one.attrs["peak_tflops"] == 989.4


def test_a_lower_mfu_or_a_slower_device_makes_a_longer_estimate(reference):
    cfg, protocol = reference
    fast, slow = (budget.estimate(cfg, protocol, H200, reference=cfg, mfu=m) for m in (0.3, 0.01))
    a100 = budget.estimate(cfg, protocol, "NVIDIA A100-SXM4-80GB", reference=cfg, mfu=0.3)
    assert slow["seconds"].sum() > fast["seconds"].sum() and a100["seconds"].sum() > fast["seconds"].sum()
    with pytest.raises(ValueError, match="no datasheet bf16 peak for 'CPU"):
        budget.estimate(cfg, protocol, "CPU x86_64", reference=cfg)
    assert "min" in budget.describe(fast, "smoke") and budget.minutes(fast) > 0


def test_a_reference_run_without_a_compute_entry_is_named_not_guessed(reference):
    cfg, protocol = reference
    run = budget.plan(cfg, protocol)[0]
    record = {k: v for k, v in method_saved(run, protocol).record.items() if k != "compute"}  # made before counting
    with pytest.raises(ValueError, match=r"mkv-smoke-seed0-\w+ records no compute entry .* \(make run\)"):
        budget._per_unit(record, run, method_saved(run, protocol).folder.name)


def method_saved(run, protocol):
    return results.load_run(method_run_id(run.method, run.cfg, protocol))


def test_over_budget_or_without_an_estimate_is_refused_unless_forced(reference):
    cfg, protocol = reference
    table = budget.estimate(cfg, protocol, H200, reference=cfg, mfu=0.05)
    assert budget.minutes(table) > 0.1  # fixed costs alone: notebooks, runs
    with pytest.raises(ValueError, match="over the 0.1-minute budget: lower the gpu-quick sizes"):
        check_budget({H200: table}, GpuCheck(budget_minutes=0.1))
    with pytest.raises(ValueError, match="cannot estimate its time on X .*--force"):
        check_budget({"X": "no records"}, GpuCheck())
    check_budget({H200: table, "X": "no records"}, GpuCheck(budget_minutes=0.1, force=True))
    check_budget({H200: table}, GpuCheck(budget_minutes=budget.minutes(table) + 1))


def test_llm_trsr_summaries_are_costed_once_per_history_kind():
    trsr = get_method("trsr")
    cfg = config.resolve("gpu-quick")
    assert trsr.decode_plan(cfg, 943, 0) == {("hierarchical", "users"): (4 + 1) * 64}  # ceil(943*4/1024) + 1 levels
    recurrent = config.override(cfg, TRSR_HISTORY="recurrent")
    assert trsr.decode_plan(recurrent, 943, 1000) == {("recurrent", "users"): 4 * 64, ("recurrent", "windows"): 4 * 64}
    assert trsr.decode_plan(config.override(cfg, TRSR_HISTORY="recent"), 943, 1000) == {}
    assert get_method("mkv").decode_plan(cfg, 943, 1000) == {}



def test_the_gpu_quick_profile_fits_its_budget_by_the_committed_cpu_runs():
    """The sizes of gpu-quick, costed by the work the committed `make run` counted, at the assumed MFU."""
    from workbench.data.protocol import load_protocol
    from workbench.gpucheck import COMMITTED, REFERENCE_DEVICES
    cfg = config.resolve("gpu-quick")
    protocol = load_protocol(cfg)
    for name in REFERENCE_DEVICES:
        table = budget.estimate(cfg, protocol, name, reference_runs=COMMITTED)
        assert table.attrs["mfu_source"] == "assumed" and 0 < budget.minutes(table) <= GpuCheck().budget_minutes, \
            budget.describe(table, "gpu-quick")
