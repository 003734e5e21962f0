"""The `compute` entry of a run's record: work counted where the engine does it, per phase, and rates that are
absent (not 0, not infinite) where a phase did no work.  Reproduce: `python -m pytest tests/unit/test_compute.py`."""
import pytest
import torch

from workbench import compute, config, results
from workbench.llm import likelihood
from workbench.methods.pipeline import run_method
from small_llm import SMALL, smoke_setting


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    yield from smoke_setting(tmp_path_factory, "compute", SMALL)


def test_an_llm_run_records_its_device_kernel_batch_sizes_rates_and_mfu(smoke):
    cfg, protocol = smoke
    run = run_method("mkv", cfg, protocol)
    usage = results.load_run(run.run_id).record["compute"]
    assert usage["device"].startswith("CPU") and usage["matmul_dtype"] == "fp32" and usage["matmul_tflops"] > 0
    assert usage["datasheet_bf16_tflops"] is None  # a CPU has no datasheet peak: no MFU against one
    fit, rank = usage["fit"], usage["rank"]
    assert fit["attention"] == ["sdpa"] and fit["micro_batch_rows"] == [cfg["LLM_BATCH_SIZE"]]
    assert fit["train_examples"] == cfg["LLM_TRAIN_SAMPLES"]  # every window once: one epoch, no resume
    assert fit["train_padded_tokens"] >= fit["train_tokens"] > 0
    assert fit["train_tokens_per_s"] == pytest.approx(fit["train_tokens"] / fit["seconds"], rel=0.05)
    assert 0 < fit["mfu_vs_matmul"] < 1 and fit["mfu_vs_datasheet"] is None
    assert rank["rank_batch_size"] == [8] and rank["rank_attention"] == ["sdpa"]  # CPU: 8 rows chosen
    assert rank["sequences"] == 4 and rank["users_per_s"] == pytest.approx(4 / rank["seconds"], rel=0.05)
    assert run.extra["fit_seconds"] == pytest.approx(fit["seconds"], abs=0.006)  # one clock for both


def test_a_training_reused_from_its_checkpoints_reports_no_rate(smoke):
    cfg, protocol = smoke
    cfg = config.override(cfg, SEED=3)
    first = run_method("mkv", cfg, protocol)
    again = run_method("mkv", cfg, protocol)  # every step reused: nothing trained in this process
    assert first.extra["compute"]["fit"]["train_tokens"] > 0
    assert again.extra["resumed"] and "all steps reused" in again.extra["resumed"][0]
    fit = again.extra["compute"]["fit"]
    assert "train_tokens" not in fit and "train_tokens_per_s" not in fit and "mfu_vs_matmul" not in fit


def test_a_chosen_rank_batch_size_is_recorded_as_chosen(smoke, monkeypatch):
    cfg, protocol = smoke
    fixed = run_method("mkv", config.override(cfg, LLM_TRAIN_SAMPLES=0, RANK_BATCH_SIZE=3), protocol, save=False)
    assert fixed.extra["compute"]["rank"]["rank_batch_size"] == [3]
    monkeypatch.setattr(likelihood, "auto_batch_size", lambda *a: 2)  # the free-memory query, faked
    auto = run_method("mkv", config.override(cfg, LLM_TRAIN_SAMPLES=0), protocol, save=False)
    assert auto.extra["compute"]["rank"]["rank_batch_size"] == [2]
    assert "train_tokens" not in auto.extra["compute"]["fit"]  # zero-shot trains nothing


def test_a_baseline_run_records_no_compute_entry(smoke):
    cfg, protocol = smoke
    assert "compute" not in run_method("popularity", cfg, protocol, save=False).extra


def test_forward_flops_count_the_body_per_token_and_the_lm_head_per_column():
    from transformers import LlamaConfig, LlamaForCausalLM
    model = LlamaForCausalLM(LlamaConfig(vocab_size=100, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=False))
    body, head = compute.model_sizes(model)
    assert head == 16 * 100 and body == sum(p.numel() for p in model.parameters()) - 2 * 16 * 100
    assert compute.forward_flops(model, 10, 3) == 2 * body * 10 + 2 * head * 3


def test_work_is_counted_inside_a_meter_only_and_per_phase():
    compute.count(flops=5)  # no meter: nothing to count into, and no error
    meter = compute.Meter("cpu")
    with meter.phase("fit"):
        compute.count(flops=2, train_tokens=4)
        compute.chose(attention="sdpa")
    with meter.phase("rank"):
        compute.count(flops=3)
        compute.chose(rank_batch_size=8)
        compute.chose(rank_batch_size=4)
    compute.count(flops=7)  # after the meter closed
    assert dict(meter.phases["fit"]["counts"]) == {"flops": 2, "train_tokens": 4}
    assert dict(meter.phases["rank"]["counts"]) == {"flops": 3}
    summary = meter.summary({"rank": ("users", 10)})
    assert summary["rank"]["rank_batch_size"] == [4, 8] and summary["fit"]["attention"] == ["sdpa"]
    assert summary["rank"]["users_per_s"] > 0
    assert compute.Meter("cpu").summary() == {}


@pytest.mark.parametrize("name, tflops", [("NVIDIA H200", 989.4), ("NVIDIA H200 NVL", 835.0),
                                          ("NVIDIA H100 80GB HBM3", 989.4), ("NVIDIA H100 PCIe", 756.0),
                                          ("NVIDIA A100-SXM4-80GB", 312.0), ("Some Future GPU", None)])
def test_the_datasheet_peak_is_found_by_the_device_name(name, tflops):
    assert compute.datasheet_peak(f"{name} (CUDA 13.0)") == (None if tflops is None else tflops * 1e12)


def test_the_matmul_rate_is_timed_per_dtype_and_thread_count():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    assert compute.matmul_rate("cpu", "fp32") > 0
    torch.set_num_threads(1)
    try:
        assert compute.matmul_rate("cpu", "fp32") > 0
        assert compute._matmul_rate.cache_info().currsize >= 2
    finally:
        torch.set_num_threads(threads)
