"""LLM-TRSR (Zheng et al., WWW 2024): long histories summarised by an LLM, then a LoRA-tuned prompt (declared here).

The summarisers are `summarize.py` (hierarchical, recurrent; cached on disk), the prompts `prompts.py`, the method
`method.py`.  This file declares the method: its parameters, its ablation arms and its row in the comparison.
Reproduce: `python -m workbench run 05` (summaries, method) and `python -m workbench run 06` (ablation).
"""
from ... import config
from ...config import Param
from ...recommender import Ablation, Entry, MethodSpec, register

HISTORIES = ("hierarchical", "recurrent", "full", "recent")
ARMS = HISTORIES + ("pointwise",)


def arm_changes(arm: str) -> dict:
    """The parameters of one ablation arm: a TRSR_HISTORY value (listwise), or pointwise (hierarchical summary)."""
    if arm not in ARMS:
        raise ValueError(f"unknown LLM-TRSR arm {arm!r}: use one of {', '.join(ARMS)}")
    if arm == "pointwise":
        return {"TRSR_HISTORY": "hierarchical", "TRSR_SCORING": "pointwise"}
    return {"TRSR_HISTORY": arm, "TRSR_SCORING": "listwise"}


config.register({
    "TRSR_HISTORY": Param("hierarchical", "str", "LLM-TRSR: older history as a hierarchical or recurrent LLM summary, "
                          "or no summary: full (every item, cut to MAX_PROMPT_TOKENS) or recent (RECENT_ITEMS only)",
                          choices=HISTORIES),
    "TRSR_SCORING": Param("listwise", "str", "LLM-TRSR: listwise (all candidates in one prompt, title likelihood) or "
                          "pointwise (one yes/no prompt per candidate, log P(yes); trained 1 positive : 1 negative)",
                          choices=("listwise", "pointwise")),
    "BLOCK_SIZE": Param(5, "int", "LLM-TRSR: items per summarised block", low=1),
    "MAX_BLOCKS": Param(2, "int", "LLM-TRSR: most recent blocks summarised (older items are left out)", low=1),
    "RECENT_ITEMS": Param(5, "int", "LLM-TRSR: most recent items listed after the summary (not summarised)", low=0),
    "SUMMARY_TOKENS": Param(64, "int", "LLM-TRSR: max_new_tokens of each summary generation", low=1),
    "SUMMARY_BATCH_SIZE": Param(32, "int", "LLM-TRSR: prompts per batched generation (does not change the "
                                "summaries)", low=1),
    "SUMMARY_SHOW_USERS": Param(3, "int", "LLM-TRSR: users whose summaries notebook 05 shows and times", low=1),
    "TRSR_ARMS": Param(list(ARMS), "list_str", "LLM-TRSR ablation arms: TRSR_HISTORY values (listwise), and "
                       "pointwise (hierarchical summary, pointwise scoring)", choices=ARMS),
}, profiles={"gpu": {"MAX_BLOCKS": 6, "SUMMARY_BATCH_SIZE": 256}})

SPEC = register(MethodSpec(
    "trsr", "LLM-TRSR", "workbench.methods.trsr.method", "05_text_rich_summarization",
    entries=(Entry("LLM-TRSR"),),
    ablation=Ablation("TRSR_ARMS", arm_changes, reference="recent", notebook="06_ablation_summarization")))
