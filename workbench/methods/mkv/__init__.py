"""MKV (arXiv 2310.16409): multiple key-value prompts, the re-ranked candidate list as the answer, shuffle and mask
augmentation, LoRA-tuned with TRL (declared here).

Users (gender, age, occupation; zip optional) and watched items (title, year, genres, rating) are `key: value` records
(`prompts.py`); the answer lists the candidates, target first (or is the target's title alone: MKV_OUTPUT=title).
Training prompts are augmented (AUGMENT: shuffle candidates, shuffle output, shuffle keys, mask whole keys), a fresh
draw per epoch, a RAW_SHARE left raw (the paper's 1:4 mix of raw and augmented prompts) (`method.py`).  The default
AUGMENT is the paper's best variant, shuffle output (SO); the ablation runs each augmentation alone, all four, and none.
This file declares the method: its parameters, its zero-shot reference, its ablation arms and its comparison rows.
Reproduce: `python -m workbench run 03` (method) and `python -m workbench run 04` (ablation).
"""
from ... import config
from ...config import Param
from ...recommender import Ablation, MethodSpec, llm_entries, register, zero_shot  # noqa: F401 (zero_shot re-exported)

AUGMENTATIONS = ("shuffle_candidates", "shuffle_output", "shuffle_keys", "mask")  # SC, SO, shuffle keys, mask
OUTPUTS = ("list", "title")  # MKV_OUTPUT values

AUGMENTS = ("none", *AUGMENTATIONS)  # AUGMENT values: ["none"], or a list of augmentations
ARMS = ("none", *AUGMENTATIONS, "all")  # MKV_ARMS values: no augmentation, each alone, all four together
# cpu runs the arms that can separate after one SFT step: only a change of the answer moves the ranks there (at
# 9d75424 SC, shuffle keys and mask gave the none arm's NDCG@10 to three decimals, and all gave SO's: 0.2365 against
# 0.2369); gpu and smoke run all six
CPU_ARMS = ("none", "shuffle_output")


def arm_changes(arm: str) -> dict:
    """The parameters of one ablation arm: its AUGMENT (none: raw prompts only; all: the four augmentations)."""
    if arm not in ARMS:
        raise ValueError(f"unknown MKV arm {arm!r}: use one of {', '.join(ARMS)}")
    return {"AUGMENT": {"none": ["none"], "all": list(AUGMENTATIONS)}.get(arm, [arm])}


config.register({
    "MKV_OUTPUT": Param("list", "str", "MKV answer: list (every candidate's title, one per line, the target first: the "
                        "paper's) or title (the target's title alone)", choices=OUTPUTS),
    "AUGMENT": Param(["shuffle_output"], "list_str", "MKV augmentations of training prompts, or none: "
                     "shuffle_candidates, shuffle_output (list answers), shuffle_keys, mask", choices=AUGMENTS),
    "RAW_SHARE": Param(0.2, "float", "MKV: share of training prompts left raw (the evaluation format), drawn per row "
                       "and epoch; 0.2 = the paper's 1 raw : 4 augmented", low=0, high=1),
    "MASK_KEYS": Param(3, "int", "MKV mask: whole keys (of gender, age, occupation, zip if shown, title, year, genres, "
                       "rating) hidden in every record of a masked prompt", low=1, high=7),
    "MASK_P": Param(None, "float", "MKV mask instead of MASK_KEYS: drop each non-title key of each record with this "
                    "probability; None = MASK_KEYS", low=0, high=1, open_low=True, optional=True),
    "MKV_ZIP": Param("no", "str", "MKV: show the user's zip code (the paper does not)", choices=("no", "yes")),
    "MKV_LIST_TOKENS": Param(320, "int", "MKV list answers: the longest list trained on, in tokens (title answers: "
                             "MAX_COMPLETION_TOKENS)", low=1),
    "MKV_ARMS": Param(list(CPU_ARMS), "list_str", "MKV ablation arms: none, each augmentation alone, all (cpu: none "
                      "and SO, the one arm that changes the answer, which alone moves ranks after one step; gpu, "
                      "smoke: all six)",
                      choices=ARMS),
}, profiles={"gpu": {"MKV_ARMS": list(ARMS)}, "smoke": {"MKV_ARMS": list(ARMS)}})

SPEC = register(MethodSpec(
    "mkv", "MKV", "workbench.methods.mkv.method", "03_sft_multi_key_value",
    entries=llm_entries("mkv", "MKV LoRA", "MKV zero-shot"),
    ablation=Ablation("MKV_ARMS", arm_changes, reference="none", notebook="04_ablation_shuffle_mask")))
