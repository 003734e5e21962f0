"""The shared LLM core every LLM method builds on: loading any causal LM (`loading.py`, `tiny.py`), the batched
likelihood engine (`likelihood.py`), candidate scoring and ranking (`scoring.py`), TRL/PEFT SFT (`sft.py`), soft
tokens and the ID projector (`softtokens.py`, `projector.py`), prompt helpers (`prompting.py`, `unified.py`), and
the steps every LLM method shares (`recommender.py`: `LLMRecommender`)."""
