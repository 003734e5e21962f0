"""LLM-TRSR (Zheng et al., WWW 2024): long histories summarised by an LLM, then a LoRA-tuned prompt (declared here).

The summarisers are `summarize.py` (hierarchical, recurrent; cached on disk), the prompts `prompts.py`, the method
`method.py`.  This file declares the method: its parameters, its ablation arms and its row in the comparison.
As the authors' code (github zhengzhi-1997/LLM-TRSR): pointwise yes/no scoring, P(yes) / (P(yes) + P(no)), of each
candidate described by its item text; blocks from the oldest item over the whole history before the target.
Reproduce: `python -m workbench run 05` (summaries, method) and `python -m workbench run 06` (ablation).
"""
from ... import config
from ...config import Param
from ...recommender import Ablation, MethodSpec, llm_entries, register

HISTORIES = ("hierarchical", "recurrent", "full", "recent")
# gpu profile: no cap for the paper's histories (<= 25 items, 5 blocks); on MovieLens (up to ~740 items) 48 summaries
# of 150 tokens are what a hierarchical merge prompt can hold in SmolLM2's 8192-token context
GPU_MAX_BLOCKS = 48
ARMS = HISTORIES + ("listwise",)
# cpu runs the paper's claim only, a summary against the recent items alone: `full` (every item listed: 2.8x the prompt
# tokens of a summary arm, ~165 s) and recurrent (~110 s) and listwise (~40 s) no longer fit the 45 minutes once MKV and
# RSLLM train on 64 windows and rank 200 users; gpu and smoke run all five
CPU_ARMS = ("hierarchical", "recent")


def arm_changes(arm: str) -> dict:
    """The parameters of one ablation arm: a TRSR_HISTORY value (pointwise), or listwise (hierarchical summary)."""
    if arm not in ARMS:
        raise ValueError(f"unknown LLM-TRSR arm {arm!r}: use one of {', '.join(ARMS)}")
    if arm == "listwise":
        return {"TRSR_HISTORY": "hierarchical", "TRSR_SCORING": "listwise"}
    return {"TRSR_HISTORY": arm, "TRSR_SCORING": "pointwise"}


config.register({
    "TRSR_EVAL_USERS": Param(32, "int", "LLM-TRSR evaluates at most this many of the LLM_EVAL_USERS users (the "
                             "first of the same seeded order, so they are among every LLM method's): its pointwise "
                             "scoring reads one prompt per candidate; None = all of them", low=1, optional=True),
    "TRSR_TRAIN_SAMPLES": Param(8, "int", "LLM-TRSR trains on at most this many of the LLM_TRAIN_SAMPLES windows "
                                "(each is summarised first); None = all of them", low=1, optional=True),
    "TRSR_HISTORY": Param("hierarchical", "str", "LLM-TRSR: the history as a hierarchical or recurrent LLM summary, "
                          "or no summary: full (every item, cut to MAX_PROMPT_TOKENS) or recent (RECENT_ITEMS only)",
                          choices=HISTORIES),
    "TRSR_SCORING": Param("pointwise", "str", "LLM-TRSR: pointwise (the authors': one yes/no prompt per candidate, "
                          "described by its item text, score P(yes) / (P(yes) + P(no)); trained 1 positive : 1 "
                          "negative) or listwise (all candidates in one prompt, title likelihood)",
                          choices=("pointwise", "listwise")),
    "BLOCK_SIZE": Param(5, "int", "LLM-TRSR: items per summarised block (blocks start at the oldest item)", low=1),
    "MAX_BLOCKS": Param(2, "int", "LLM-TRSR: cap on the blocks summarised, the most recent kept (older items are "
                        "left out); None = every block, as the authors (gpu: 48, what a merge prompt fits in an "
                        "8k context)", low=1, optional=True),
    "RECENT_ITEMS": Param(5, "int", "LLM-TRSR: most recent items listed verbatim after the summary (they are "
                          "summarised too, as the authors do)", low=0),
    "SUMMARY_MODEL": Param(None, "str", "LLM-TRSR: the summariser (a model name, local path or Hub id, loaded "
                           "frozen); None = the method's own base model with its adapter disabled", optional=True),
    "SUMMARY_TOKENS": Param(64, "int", "LLM-TRSR: max_new_tokens of each summary generation (greedy)", low=1),
    "SUMMARY_BATCH_SIZE": Param(32, "int", "LLM-TRSR: prompts per batched generation (does not change the "
                                "summaries)", low=1),
    "SUMMARY_SHOW_USERS": Param(3, "int", "LLM-TRSR: users whose summaries notebook 05 shows and times", low=1),
    "TRSR_ARMS": Param(list(CPU_ARMS), "list_str", "LLM-TRSR ablation arms: TRSR_HISTORY values (pointwise), and "
                       "listwise (hierarchical summary, listwise scoring); cpu leaves out full (its cost), gpu and "
                       "smoke run all", choices=ARMS),
}, profiles={"gpu": {"MAX_BLOCKS": GPU_MAX_BLOCKS, "SUMMARY_TOKENS": 150, "SUMMARY_BATCH_SIZE": 256,
                     "TRSR_ARMS": list(ARMS), "TRSR_EVAL_USERS": None, "TRSR_TRAIN_SAMPLES": None},
             "gpu-quick": {"MAX_BLOCKS": 4, "SUMMARY_TOKENS": 64, "SUMMARY_BATCH_SIZE": 1024,
                           "TRSR_EVAL_USERS": None, "TRSR_TRAIN_SAMPLES": 1000},
             "smoke": {"TRSR_ARMS": list(ARMS), "TRSR_EVAL_USERS": None, "TRSR_TRAIN_SAMPLES": None}})

SPEC = register(MethodSpec(
    "trsr", "LLM-TRSR", "workbench.methods.trsr.method", "05_text_rich_summarization",
    entries=llm_entries("trsr", "LLM-TRSR"),
    ablation=Ablation("TRSR_ARMS", arm_changes, reference="recent", notebook="06_ablation_summarization")))
