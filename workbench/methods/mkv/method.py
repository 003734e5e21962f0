"""MKV's recommender: multiple key-value prompts with shuffle and mask augmentation, LoRA-tuned with TRL.

Users (age, gender, occupation, zip) and items (title, year, genres) are `key: value` records; training prompts are
augmented over the keys (shuffle key and candidate order; mask non-title keys with probability MASK_P), a fresh
draw per epoch.  Reproduce: `python -m workbench run 03` (method) and `python -m workbench run 04` (ablation).
"""
from __future__ import annotations

import pandas as pd

from ...llm.recommender import LLMRecommender
from ...recommender import implements
from . import prompts
from .prompts import Augment

AUGMENTATIONS = {"none": Augment(), "shuffle": Augment(shuffle=True), "mask": Augment(mask_p=1.0),
                 "both": Augment(shuffle=True, mask_p=1.0)}


def augmentation(name: str, mask_p: float) -> Augment:
    """The named augmentation (none | shuffle | mask | both) with MASK_P applied."""
    if name not in AUGMENTATIONS:
        raise ValueError(f"unknown AUGMENT {name!r}: use one of {', '.join(AUGMENTATIONS)}")
    arm = AUGMENTATIONS[name]
    return Augment(shuffle=arm.shuffle, mask_p=mask_p if arm.mask_p else 0.0)


@implements("mkv")
class MKV(LLMRecommender):
    """Multi key-value prompts + LoRA SFT; candidates ranked by the likelihood of their titles."""
    method_params = ("AUGMENT", "MASK_P")

    def corpus(self) -> list[str]:
        """Titles, attributes and the prompt's fixed words."""
        items, users = self.protocol.data.items, self.protocol.data.users
        words = [prompts.SYSTEM, "User: Watched, oldest first: Candidates: Which candidate will the user watch next?",
                 " ".join(prompts.USER_KEYS + prompts.ITEM_KEYS), "male female unknown"]
        texts = (words + items["title"].tolist() + [", ".join(g) for g in items["genres"]] + items["year"].tolist()
                 + users["occupation"].tolist() + users["zip"].tolist())
        return [str(t) for t in texts]

    def augment(self) -> Augment:
        """This run's augmentation of training prompts."""
        return augmentation(self.cfg["AUGMENT"], self.cfg["MASK_P"])

    def prompts(self, view: pd.DataFrame, epoch: int | None = None) -> pd.DataFrame:
        """Fixed evaluation prompts (epoch=None) or one augmented training draw seeded by (SEED, epoch, row)."""
        aug = prompts.NONE if epoch is None else self.augment()
        return prompts.build_examples(self.catalog, view, self.tokenizer, self.cfg["MAX_PROMPT_TOKENS"], aug,
                                 self.cfg["SEED"], epoch or 0)
