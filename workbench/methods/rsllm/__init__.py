"""RSLLM (Zheng et al., 2024): recommendation as a new language; SASRec item ID embeddings as soft tokens (declared here).

Each item in the prompt is its title and/or a soft token whose input embedding is the item's SASRec ID embedding
through a trainable projector (`llm/projector.py`, `llm/unified.py`); two stages; LM loss + two InfoNCE terms
(`contrastive.py`); the method is `method.py`.  This file declares its parameters, ablation arms and comparison row.
Reproduce: `python -m workbench run 07` (method and ablation).
"""
from ... import config
from ...config import Param
from ...recommender import Ablation, MethodSpec, llm_entries, register

ARMS = {"text": {"RSLLM_PROMPT": "text", "RSLLM_STAGES": 1},
        "id": {"RSLLM_PROMPT": "id", "RSLLM_STAGES": 1},
        "unified_1stage": {"RSLLM_PROMPT": "unified", "RSLLM_STAGES": 1},
        "unified_2stage": {"RSLLM_PROMPT": "unified", "RSLLM_STAGES": 2},
        "no_user_nce": {"RSLLM_PROMPT": "unified", "RSLLM_STAGES": 2, "LAMBDA_USER": 0.0},
        "no_item_nce": {"RSLLM_PROMPT": "unified", "RSLLM_STAGES": 2, "LAMBDA_ITEM": 0.0}}
ARM_NAMES = tuple(ARMS)
# cpu leaves out the arms that could not separate from the two-stage arm at one SFT step per stage (at 9d75424: the
# two one-term arms gave its ranks, unified_1stage 0.171 against 0.180 NDCG@10), and id (~25 s), which no longer fits
# the 45 minutes once MKV and RSLLM train on 64 windows and rank 200 users; gpu, smoke: all
CPU_ARMS = ("text", "unified_2stage")


def arm_changes(arm: str) -> dict:
    """The parameters of one ablation arm (text | id | unified_1stage | unified_2stage | no_user_nce | no_item_nce)."""
    if arm not in ARMS:
        raise ValueError(f"unknown RSLLM arm {arm!r}: use one of {', '.join(ARMS)}")
    return dict(ARMS[arm])


config.register({
    "RSLLM_PROMPT": Param("unified", "str", "RSLLM: items in the prompt as their title (text), their projected SASRec ID "
                       "embedding as a soft token (id), or both (unified)", choices=("text", "id", "unified")),
    "RSLLM_STAGES": Param(2, "int", "RSLLM: 2 = text-only SFT first, then RSLLM_PROMPT prompts continuing the adapter; "
                       "1 = RSLLM_PROMPT prompts only", low=1, high=2),
    "LAMBDA_USER": Param(0.1, "float", "RSLLM: weight of InfoNCE(prompt's last hidden state, target's ID embedding)",
                      low=0),
    "LAMBDA_ITEM": Param(0.1, "float", "RSLLM: weight of InfoNCE(title's hidden states, item's ID embedding)", low=0),
    "USER_NCE_NEGATIVES": Param("candidates", "str", "RSLLM: negatives of the user term: candidates (the row's own "
                             "other candidates, all in the prompt) or batch (other rows' targets, mostly absent from "
                             "the prompt: a shortcut, kept to reproduce the first reading)",
                             choices=("candidates", "batch")),
    "NCE_TEMPERATURE": Param(0.1, "float", "RSLLM: InfoNCE temperature", low=0.001, high=10),
    "ALIGN_ITEMS": Param(32, "int", "RSLLM: items per batch in the ID-text InfoNCE term (a seeded sample)", low=2),
    "ID_EMBEDDINGS": Param("frozen", "str", "RSLLM: the SASRec item table frozen, or tuned with the projector",
                        choices=("frozen", "tuned")),
    "RSLLM_ARMS": Param(list(CPU_ARMS), "list_str", "RSLLM ablation arms: text, id, unified_1stage, unified_2stage "
                     "(the method), no_user_nce, no_item_nce (two-stage without one contrastive term); "
                     "id, unified_1stage and the one-term arms in gpu and smoke only",
                     choices=ARM_NAMES),
}, profiles={"gpu": {"RSLLM_ARMS": list(ARM_NAMES)}, "smoke": {"RSLLM_ARMS": list(ARM_NAMES)}})

SPEC = register(MethodSpec(
    "rsllm", "RSLLM", "workbench.methods.rsllm.method", "07_rsllm_unified_prompts", entries=llm_entries("rsllm", "RSLLM"),
    ablation=Ablation("RSLLM_ARMS", arm_changes, reference="unified_2stage")))
