"""The shared LLM core every LLM method builds on: loading any causal LM (`loading.py`, `tiny.py`), the batched
likelihood engine (`likelihood.py`), candidate scoring and ranking (`scoring.py`), TRL/PEFT SFT (`sft.py`), soft
tokens and the ID projector (`softtokens.py`, `projector.py`), prompt helpers (`prompting.py`, `unified.py`), and
the steps every LLM method shares (`recommender.py`: `LLMRecommender`)."""

import os as _os

# OpenMP reads its wait policy once, when torch first runs a parallel op.  A process that imports the LLM core gets
# sleeping workers (PASSIVE: faster around a large model's Python-heavy steps on 2 cores) before any of its torch
# ops; a baselines-only process keeps OpenMP's default, which suits their many small ops.  LOG.md, 2026-12-01.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
