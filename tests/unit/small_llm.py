"""Sizes for unit tests that push LLM methods through fit -> rank on the smoke profile's tiny model in seconds, and
the module-scoped setting they share (own folders, one saved SASRec run)."""
import pytest
import torch

from workbench import config, results
from workbench.data.protocol import load_protocol
from workbench.methods.pipeline import run_method

SMALL = dict(EPOCHS=1, LLM_EVAL_USERS=4, LLM_TRAIN_SAMPLES=8, GEN_EVAL_USERS=0, BDLM_ROUNDS=1, DOMAIN_STEPS=2,
             BDLM_VALID_USERS=4, SUMMARY_TOKENS=8)


def smoke_setting(tmp_path_factory, name: str, sizes: dict = SMALL):
    """Yield (cfg, protocol) of the smoke profile at `sizes`, with runs, checkpoints and summaries in a folder of its
    own and one saved SASRec run (RSLLM's ID table, BDLM's domain model): `yield from` it in a module fixture."""
    folder = tmp_path_factory.mktemp(name)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(results.RESULTS_ENV, str(folder / "results"))
        mp.setenv("WORKBENCH_CHECKPOINTS", str(folder / "checkpoints"))
        mp.setenv("WORKBENCH_SUMMARIES", str(folder / "summaries"))
        torch.set_num_threads(1)
        cfg = config.resolve("smoke", **sizes)
        protocol = load_protocol(cfg)
        run_method("sasrec", cfg, protocol)
        yield cfg, protocol
