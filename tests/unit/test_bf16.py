"""The gpu code paths on CPU (DTYPE=bf16): every registered LLM method fits and ranks with bf16 weights, its
soft-token projector (if any) stays fp32, its losses are finite and its adapter moved.
Reproduce: `python -m pytest tests/unit/test_bf16.py`.
"""
import numpy as np
import pytest
import torch

from workbench import config, results
from workbench.llm.recommender import LLMRecommender
from workbench.methods.pipeline import run_method
from workbench.recommender import REGISTRY, get_method
from small_llm import SMALL, smoke_setting

BF16 = dict(SMALL, DTYPE="bf16", SCORE_ORDERS=2)  # the gpu code paths, both orders scored
LLM_METHODS = [n for n in REGISTRY if issubclass(get_method(n), LLMRecommender)]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The smoke setting in bf16 and a saved SASRec run (RSLLM's ID table, BDLM's domain model), in own folders."""
    yield from smoke_setting(tmp_path_factory, "bf16", BF16)


def test_every_llm_method_is_covered():
    assert set(LLM_METHODS) == {"mkv", "trsr", "rsllm", "bdlm"}


@pytest.mark.parametrize("name", LLM_METHODS)
def test_every_llm_method_fits_and_ranks_in_bf16_on_cpu(smoke, name):
    cfg, protocol = smoke
    run = run_method(name, cfg, protocol)
    assert len(run.log) and np.isfinite(run.log["loss"]).all(), name
    assert run.ranks["rank"].between(1, cfg["N_NEGATIVES"] + 1).all() and len(run.ranks) == 4, name
    model = run.recommender.model
    base = {n: p.dtype for n, p in model.named_parameters() if "lora_" not in n and "soft_embedder" not in n}
    assert set(base.values()) == {torch.bfloat16}, [n for n, d in base.items() if d != torch.bfloat16][:3]
    if run.recommender.soft_embedder is not None:  # the projector trains in fp32; it is cast where it is spliced in
        assert {p.dtype for p in run.recommender.soft_embedder.parameters()} == {torch.float32}, name
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]  # zero at the start: moved if trained
    assert lora_b and any(p.detach().float().abs().sum() > 0 for p in lora_b), f"{name}: LoRA did not move"
    record = results.load_run(run.run_id).record
    assert record["parameters"]["DTYPE"] == "bf16"
    usage = record["compute"]  # what a GPU figure needs, counted in the dtype that ran
    assert usage["matmul_dtype"] == "bf16" and usage["fit"]["dtype"] == ["bf16"], name
    assert usage["fit"]["train_tokens"] > 0 and usage["fit"]["train_tokens_per_s"] > 0, name
    assert usage["rank"]["users_per_s"] == pytest.approx(4 / usage["rank"]["seconds"], rel=0.05), name


def test_bf16_and_fp32_runs_are_different_runs(smoke):
    cfg, protocol = smoke
    mkv = get_method("mkv")
    assert mkv.run_key(cfg, protocol) != mkv.run_key(config.override(cfg, DTYPE="fp32"), protocol)
    assert mkv.run_key(config.override(cfg, DTYPE=None), protocol) != mkv.run_key(cfg, protocol)
    with pytest.raises(config.ConfigError, match="DTYPE must be one of bf16, fp32"):
        config.override(cfg, DTYPE="fp16")
