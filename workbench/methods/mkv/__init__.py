"""MKV (arXiv 2310.16409): multiple key-value prompts, shuffle and mask augmentation, LoRA-tuned with TRL (declared
here).

Users (gender, age, occupation; zip optional) and watched items (title, year, genres, rating) are `key: value` records
(`prompts.py`).  The default form names no candidate (PROMPT_FORM=free) and answers the target's title
(MKV_OUTPUT=title): each candidate's title is scored as the answer.  The paper's form lists the candidates and answers
the re-ranked list, target first (PROMPT_FORM=listed, MKV_OUTPUT=list); it is the `listed` family of ablation arms.
Training prompts are augmented (AUGMENT: shuffle keys, mask whole keys; listed only: shuffle candidates, shuffle
output), a fresh draw per epoch, a RAW_SHARE left raw (the paper's 1:4 mix of raw and augmented prompts)
(`method.py`).  The ablation runs the default form raw, with each key augmentation, and the paper's form raw, with SC,
with SO (the paper's best variant) and with all four.
This file declares the method: its parameters, its zero-shot reference, its ablation arms and its comparison rows.
Reproduce: `python -m workbench run 03` (method) and `python -m workbench run 04` (ablation).
"""
from ... import config
from ...config import Param
from ...recommender import Ablation, MethodSpec, llm_entries, register, zero_shot  # noqa: F401 (zero_shot re-exported)

AUGMENTATIONS = ("shuffle_candidates", "shuffle_output", "shuffle_keys", "mask")  # SC, SO, shuffle keys, mask
OUTPUTS = ("list", "title")  # MKV_OUTPUT values

AUGMENTS = ("none", *AUGMENTATIONS)  # AUGMENT values: ["none"], or a list of augmentations
LISTING = ("shuffle_candidates", "shuffle_output")  # augmentations that reorder listed candidates (listed form only)
# the paper's form: candidates listed in the prompt, the re-ranked list as the answer, scored under two orders (the
# listed order and its reverse, averaged: the LLM's position bias cancels)
PAPER_FORM = {"PROMPT_FORM": "listed", "MKV_OUTPUT": "list", "SCORE_ORDERS": 2}
# MKV_ARMS values: the default form (free prompt, title answer) raw, with shuffled keys, with masked keys; the paper's
# form raw (listed), with each candidate-reordering augmentation (SC, SO: the paper's best), and with all four
ARMS = ("none", "shuffle_keys", "mask", "listed", "shuffle_candidates", "shuffle_output", "all")
# cpu runs the default form raw against it with shuffled keys (the paper's augmentation, at the cost of a raw arm: the
# paper's-form arms list 20 candidates and score two orders, ~2.5x the time); the learning curve compares the two
# forms (README); at 9d75424 (the paper's form, one step) SC, shuffle keys and mask gave the raw arm's NDCG@10 to three
# decimals and all gave SO's; gpu and smoke run all
CPU_ARMS = ("none", "shuffle_keys")


def arm_changes(arm: str) -> dict:
    """The parameters of one ablation arm: its AUGMENT, and the paper's form for the arms that list candidates."""
    if arm not in ARMS:
        raise ValueError(f"unknown MKV arm {arm!r}: use one of {', '.join(ARMS)}")
    augment = {"none": ["none"], "listed": ["none"], "all": list(AUGMENTATIONS)}.get(arm, [arm])
    paper = arm in ("listed", "all") or arm in LISTING
    return {"AUGMENT": augment, **(PAPER_FORM if paper else {"PROMPT_FORM": "free", "MKV_OUTPUT": "title"})}


config.register({
    "MKV_OUTPUT": Param("title", "str", "MKV answer: title (the target's title alone) or list (every candidate's title, "
                        "one per line, the target first: the paper's; needs PROMPT_FORM=listed)", choices=OUTPUTS),
    "AUGMENT": Param(["none"], "list_str", "MKV augmentations of training prompts, or none: shuffle_keys, mask, and "
                     "(listed prompts) shuffle_candidates, shuffle_output (list answers; the paper's best)",
                     choices=AUGMENTS),
    "RAW_SHARE": Param(0.2, "float", "MKV: share of training prompts left raw (the evaluation format), drawn per row "
                       "and epoch; 0.2 = the paper's 1 raw : 4 augmented", low=0, high=1),
    "MASK_KEYS": Param(3, "int", "MKV mask: whole keys (of gender, age, occupation, zip if shown, title, year, genres, "
                       "rating) hidden in every record of a masked prompt", low=1, high=7),
    "MASK_P": Param(None, "float", "MKV mask instead of MASK_KEYS: drop each non-title key of each record with this "
                    "probability; None = MASK_KEYS", low=0, high=1, open_low=True, optional=True),
    "MKV_ZIP": Param("no", "str", "MKV: show the user's zip code (the paper does not)", choices=("no", "yes")),
    "MKV_LIST_TOKENS": Param(320, "int", "MKV list answers: the longest list trained on, in tokens (title answers: "
                             "MAX_COMPLETION_TOKENS)", low=1),
    "MKV_ARMS": Param(list(CPU_ARMS), "list_str", "MKV ablation arms: none, shuffle_keys, mask (free prompt, title "
                      "answer); listed, shuffle_candidates, shuffle_output, all (the paper's listed form and list "
                      "answer) (cpu: none and SO; gpu, smoke: all seven)", choices=ARMS),
}, profiles={"gpu": {"MKV_ARMS": list(ARMS)}, "smoke": {"MKV_ARMS": list(ARMS)}})

SPEC = register(MethodSpec(
    "mkv", "MKV", "workbench.methods.mkv.method", "03_sft_multi_key_value",
    entries=llm_entries("mkv", "MKV LoRA", "MKV zero-shot"),
    ablation=Ablation("MKV_ARMS", arm_changes, reference="none", notebook="04_ablation_shuffle_mask")))
