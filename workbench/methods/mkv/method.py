"""MKV's recommender (arXiv 2310.16409): multiple key-value prompts, LoRA-tuned with TRL, ranking by likelihood.

Users (gender, age, occupation; zip with MKV_ZIP=yes) and watched items (title, year, genres, the user's rating) are
`key: value` records (`prompts.py`).  The answer is the re-ranked candidate list, target first (MKV_OUTPUT=list, the
paper's) or the target's title alone (title); a candidate is scored as the answer's first line (its title and the line
break, no end-of-turn) or as the whole answer (title + end-of-turn).  Training rows are augmented with AUGMENT
(SC, SO, shuffle keys, mask), a fresh draw per epoch, a RAW_SHARE of them left raw; evaluation prompts are raw.
Reproduce: `python -m workbench run 03` (method) and `python -m workbench run 04` (ablation).
"""
from __future__ import annotations

import pandas as pd

from ...data.splits import order_interactions
from ...llm.prompting import is_listed
from ...llm.recommender import LLMRecommender
from ...recommender import implements
from . import prompts
from .prompts import Augment, Format, PromptError


def prompt_format(cfg: dict) -> Format:
    """MKV_OUTPUT, MKV_ZIP and PROMPT_FORM as a prompt format."""
    return Format(cfg["MKV_OUTPUT"], cfg["MKV_ZIP"] == "yes", is_listed(cfg["PROMPT_FORM"]))


def augmentation(cfg: dict) -> Augment:
    """This setting's augmentation of training prompts (AUGMENT, MASK_KEYS, MASK_P), checked against MKV_OUTPUT."""
    if "shuffle_output" in cfg["AUGMENT"] and cfg["MKV_OUTPUT"] != "list":
        raise ValueError("AUGMENT shuffle_output shuffles a list answer: set MKV_OUTPUT=list or drop shuffle_output "
                         "from AUGMENT (a title answer has no order)")
    listing = [a for a in ("shuffle_candidates", "shuffle_output") if a in cfg["AUGMENT"]]
    if listing and cfg["PROMPT_FORM"] == "free":
        raise ValueError(f"AUGMENT {', '.join(listing)} reorders listed candidates, and PROMPT_FORM=free lists none: "
                         f"drop it from AUGMENT (shuffle_keys and mask apply) or set PROMPT_FORM=listed")
    return Augment.named(cfg["AUGMENT"], cfg["MASK_KEYS"], cfg["MASK_P"])


def rating_sequences(protocol) -> dict[int, tuple[list, list]]:
    """user -> (items, ratings) in sequence order (the order `protocol.seqs` and every view's `position` use)."""
    ordered = order_interactions(protocol.data.interactions, protocol.tie_break)
    return {int(u): (g["item_id"].tolist(), g["rating"].tolist()) for u, g in ordered.groupby("user_id", sort=False)}


def history_ratings(sequences: dict, view: pd.DataFrame) -> list[list]:
    """Each view row's ratings of its history items, found at the row's `position` in the user's sequence."""
    if "position" not in view:
        raise PromptError("MKV shows each watched item's rating, read at the view's `position` column: build the "
                          "view from the protocol (its views have one)")
    out = []
    for user, hist, pos in zip(view["user_id"], view["history"], view["position"]):
        items, rates = sequences[int(user)]
        start, pos = int(pos) - len(hist), int(pos)
        if start < 0 or items[start:pos] != [int(i) for i in hist]:
            raise PromptError(f"user {user}'s history is not the interactions before position {pos}: build the view "
                              f"from the protocol")
        out.append(rates[start:pos])
    return out


@implements("mkv")
class MKV(LLMRecommender):
    """Multi key-value prompts + LoRA SFT; candidates ranked by the likelihood of their titles as the answer's start."""
    method_params = ("MKV_OUTPUT", "AUGMENT", "RAW_SHARE", "MASK_KEYS", "MASK_P", "MKV_ZIP", "MKV_LIST_TOKENS")

    def __init__(self, cfg: dict, protocol, device: str = "cpu"):
        self.fmt, self.aug = prompt_format(cfg), augmentation(cfg)  # checked before the model loads
        self.ratings, self.lines_checked = None, False  # rating_sequences: read when the first prompts are built
        super().__init__(cfg, protocol, device)

    def corpus(self) -> list[str]:
        """Titles, attributes and the prompt's fixed words."""
        items, users = self.protocol.data.items, self.protocol.data.users
        words = [prompts.SYSTEM, prompts.LIST_SYSTEM, *prompts.QUESTION.values(), prompts.HIDDEN,
                 "User: Watched, oldest first: Candidates:", " ".join(prompts.USER_KEYS + prompts.HISTORY_KEYS),
                 "zip male female unknown rating: 1 2 3 4 5"]
        texts = (words + items["title"].tolist() + [", ".join(g) for g in items["genres"]] + items["year"].tolist()
                 + users["occupation"].tolist() + users["zip"].tolist())
        return [str(t) for t in texts]

    def augment(self) -> Augment:
        """This run's augmentation of training prompts."""
        return self.aug

    def score_terminator(self) -> str | None:
        """A list answer's candidate is scored as its first line (title + line break); a title answer with eos."""
        if self.fmt.output != "list":
            return None
        if not self.lines_checked:  # every title's first line must be where a list answer's tokens start
            prompts.check_first_lines(self.tokenizer, [self.catalog.title(i) for i in self.catalog.items])
            self.lines_checked = True
        return prompts.SEPARATOR

    def sft_settings(self) -> dict:
        """List answers are trained up to MKV_LIST_TOKENS tokens (title answers: MAX_COMPLETION_TOKENS)."""
        if self.fmt.output != "list":
            return self.cfg
        return {**self.cfg, "MAX_COMPLETION_TOKENS": self.cfg["MKV_LIST_TOKENS"]}

    def prompts(self, view: pd.DataFrame, epoch: int | None = None, raw_share: float | None = None) -> pd.DataFrame:
        """Raw evaluation prompts (epoch=None), or one training draw seeded by (SEED, epoch, row): each row raw with
        probability raw_share (None: RAW_SHARE), else augmented."""
        if self.ratings is None:
            self.ratings = rating_sequences(self.protocol)
        view = view.assign(ratings=history_ratings(self.ratings, view))
        train = epoch is not None
        share = (self.cfg["RAW_SHARE"] if raw_share is None else raw_share) if train else 0.0
        rows = prompts.build_examples(self.catalog, view, self.tokenizer, self.cfg["MAX_PROMPT_TOKENS"],
                                      self.aug if train else prompts.NONE, self.cfg["SEED"], epoch or 0, self.fmt,
                                      share)
        if train and self.fmt.output == "list":
            prompts.check_list_answers(self.tokenizer, rows["completion"], self.cfg["MKV_LIST_TOKENS"])
        return rows
