"""MKV: multiple key-value prompts with shuffle and mask augmentation, LoRA-tuned with TRL (declared here).

Users (age, gender, occupation, zip) and items (title, year, genres) are `key: value` records (`prompts.py`); training
prompts are augmented over the keys, a fresh draw per epoch (`method.py`).  This file declares the method: its
parameters, its zero-shot reference, its ablation arms and its rows in the comparison.
Reproduce: `python -m workbench run 03` (method) and `python -m workbench run 04` (ablation).
"""
from ... import config
from ...config import Param
from ...recommender import Ablation, Entry, MethodSpec, register

AUGMENTS = ("none", "shuffle", "mask", "both")
ZERO_SHOT = {"LLM_TRAIN_SAMPLES": 0}  # the untrained reference every LLM result is compared with (same users)


def zero_shot(cfg: dict) -> dict:
    """The parameters of the untrained reference run (mkv-zeroshot): no SFT, no generate-then-match."""
    return config.override(cfg, **ZERO_SHOT, GEN_EVAL_USERS=0)


def arm_changes(arm: str) -> dict:
    """The parameters of one ablation arm: an AUGMENT value."""
    if arm not in AUGMENTS:
        raise ValueError(f"unknown MKV arm {arm!r}: use one of {', '.join(AUGMENTS)}")
    return {"AUGMENT": arm}


config.register({
    "AUGMENT": Param("both", "str", "MKV key augmentation of training prompts", choices=AUGMENTS),
    "MASK_P": Param(0.2, "float", "MKV: probability of dropping each non-title key (mask augmentation)", low=0,
                    high=1),
    "MKV_ARMS": Param(list(AUGMENTS), "list_str", "MKV ablation arms (AUGMENT values)", choices=AUGMENTS),
})

SPEC = register(MethodSpec(
    "mkv", "MKV", "workbench.methods.mkv.method", "03_sft_multi_key_value",
    entries=(Entry("SmolLM2 zero-shot", "mkv-zeroshot", tuple(ZERO_SHOT.items())), Entry("MKV LoRA")),
    ablation=Ablation("MKV_ARMS", arm_changes, reference="none", notebook="04_ablation_shuffle_mask")))
