"""Recommenders on one contract (base.py), driven by run_method / run_grid (running.py), found by name.

Registered: popularity, sasrec, gru4rec, mf (baselines.py), mkv (mkv.py), trsr (trsr.py: LLM-TRSR),
rsllm (rsllm.py: RSLLM), bdlm (bdlm.py: BDLM).  See docs/design.md, "Adding a method".
"""
from .base import REGISTRY, Recommender, get_method, register  # noqa: F401
from .running import (Grid, MethodRun, find_run, load_method, method_run_id, ranks_on, run_grid, run_method,  # noqa: F401
                      seed_runs)
from . import baselines, bdlm, mkv, rsllm, trsr  # noqa: F401,E402  (registers the methods)
