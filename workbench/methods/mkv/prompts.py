"""Multi key-value prompts (MKV, arXiv 2310.16409): users and history items as `key: value` records, answered by the
re-ranked candidate list (target first, one title per line) or by the target's title alone.

Augmentations of training prompts (the paper's, each its own ablation arm): shuffle candidates (SC, the prompt's
candidate order), shuffle output (SO, the order of the answer's titles after the target), shuffle keys (key order
within each record) and mask (MASK_KEYS whole keys hidden in every record of the prompt; or, with MASK_P, each
non-title key of each record dropped with that probability).  Each training row draws from its own seeded streams,
one per augmentation (seed, epoch, row, stream): an arm's draws do not depend on which other augmentations are on.
A share of training rows (RAW_SHARE) stays raw: the evaluation format.  Evaluation prompts are fixed and raw.
Overlong prompts lose their oldest history items, never candidates; the number cut is reported.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ...llm.prompting import (FREE_SYSTEM, SYSTEM, Catalog, PromptError, candidate_block, fit_items,  # noqa: F401
                              note_cuts, prompt_text)  # (PromptError, SYSTEM: re-exported)
from . import AUGMENTATIONS, OUTPUTS

USER_KEYS = ("gender", "age", "occupation")  # the paper's user keys; the zip code only with MKV_ZIP=yes
ITEM_KEYS = ("title", "year", "genres")       # an item's own keys
HISTORY_KEYS = (*ITEM_KEYS, "rating")         # a watched item also carries the user's rating of it
SEPARATOR = "\n"  # between the titles of a list answer; a scored candidate is a first line: its title + SEPARATOR
STREAMS = {"raw": 0, "shuffle_candidates": 1, "shuffle_output": 2, "shuffle_keys": 3, "mask": 4}
GENDER = {"M": "male", "F": "female"}
HIDDEN = "(hidden)"  # a record whose every key is masked
LIST_SYSTEM = ("You are a movie recommender. Reply with the titles of all candidate movies, one per line, the movie "
               "the user will watch next first, and nothing else.")
QUESTION = {"title": "Which candidate will the user watch next?",
            "list": "Rank the candidates, the one the user will watch next first."}


@dataclass(frozen=True)
class Format:
    """What a prompt shows and what answers it: output list | title, whether users show their zip code, and whether
    the candidates are listed (PROMPT_FORM=listed) or none is named (free: the answer is then a title)."""
    output: str = "title"
    zip: bool = False
    listed: bool = True

    def __post_init__(self):
        if self.output not in OUTPUTS:
            raise ValueError(f"unknown MKV output {self.output!r}: use one of {', '.join(OUTPUTS)}")
        if self.output == "list" and not self.listed:
            raise ValueError("PROMPT_FORM=free names no candidate, so the answer cannot list them: set "
                             "MKV_OUTPUT=title (or PROMPT_FORM=listed)")

    @property
    def user_keys(self) -> tuple[str, ...]:
        """The keys of the user record."""
        return (*USER_KEYS, "zip") if self.zip else USER_KEYS

    @property
    def system(self) -> str:
        """The system line: one candidate's title, the ranked list, or (free) one movie's title."""
        if not self.listed:
            return FREE_SYSTEM
        return LIST_SYSTEM if self.output == "list" else SYSTEM


@dataclass(frozen=True)
class Augment:
    """Augmentations of one training prompt: shuffle candidates / output / keys; mask `mask_keys` whole keys, or
    (mask_p > 0, instead) each non-title key of each record with probability mask_p."""
    shuffle_candidates: bool = False
    shuffle_output: bool = False
    shuffle_keys: bool = False
    mask_keys: int = 0
    mask_p: float = 0.0

    @property
    def active(self) -> bool:
        """Whether this draws anything at random."""
        return (self.shuffle_candidates or self.shuffle_output or self.shuffle_keys or self.mask_keys > 0
                or self.mask_p > 0)

    @classmethod
    def named(cls, names, mask_keys: int = 3, mask_p: float | None = None) -> "Augment":
        """The augmentation of AUGMENT names (`AUGMENTATIONS`, or ["none"]) with MASK_KEYS / MASK_P for the mask."""
        names = list(names)
        unknown = [n for n in names if n not in ("none", *AUGMENTATIONS)]
        if unknown or not names or ("none" in names and len(names) > 1):
            raise ValueError(f"AUGMENT {names} is not ['none'] or a list from {', '.join(AUGMENTATIONS)}: pick one")
        mask = "mask" in names
        return cls("shuffle_candidates" in names, "shuffle_output" in names, "shuffle_keys" in names,
                   mask_keys if mask and not mask_p else 0, float(mask_p) if mask and mask_p else 0.0)


NONE = Augment()


class Draws:
    """One training row's random streams, one per augmentation, seeded by (seed, epoch, row): fresh on every call."""

    def __init__(self, seed: int, epoch: int, row: int):
        self.key = (int(seed), int(epoch), int(row))

    def rng(self, stream: str) -> np.random.Generator:
        """A new generator for one augmentation's stream (`STREAMS`)."""
        return np.random.default_rng([*self.key, STREAMS[stream]])


def _value(key: str, value) -> str:
    if isinstance(value, (list, tuple, np.ndarray)):
        return ", ".join(map(str, value))
    if key == "gender":
        return GENDER.get(str(value), str(value))
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return "unknown"
    if key == "rating":
        return f"{float(value):g}"
    return str(value)


def record(values: dict, keys, aug: Augment = NONE, rng=None, hidden=(), mask_rng=None) -> str:
    """'key: value; key: value' for the keys not hidden, masked with mask_p (never the title) and/or shuffled by rng."""
    keys = [k for k in keys if k not in hidden]
    if aug.mask_p > 0:
        draw = mask_rng or rng
        keys = [k for k in keys if k == "title" or draw.random() >= aug.mask_p]
    if aug.shuffle_keys:
        keys = [keys[i] for i in rng.permutation(len(keys))]
    return "; ".join(f"{k}: {_value(k, values[k])}" for k in keys) or HIDDEN


def masked_keys(aug: Augment, keys, draws: Draws | None) -> frozenset:
    """The mask_keys whole keys a masked prompt hides in every record (none without the mask)."""
    if aug.mask_keys == 0:
        return frozenset()
    keys = list(keys)
    if aug.mask_keys >= len(keys):
        raise PromptError(f"MASK_KEYS={aug.mask_keys} would hide every one of the {len(keys)} keys "
                          f"({', '.join(keys)}): use at most {len(keys) - 1}")
    return frozenset(str(k) for k in draws.rng("mask").choice(keys, aug.mask_keys, replace=False))


def render(catalog: Catalog, user_id: int, history, candidates, aug: Augment = NONE, draws: Draws | None = None,
           ratings=None, fmt: Format = Format()) -> list[dict]:
    """Chat messages for one example: user record, history records (oldest first, with ratings if given), candidate
    titles (unless the format names none), and the question of the format's output."""
    if aug.active and draws is None:
        raise ValueError("an augmented prompt needs its random streams (a Draws)")
    history = list(history)
    if ratings is not None and len(ratings) != len(history):
        raise PromptError(f"{len(ratings)} ratings for {len(history)} history items: give one rating per item")
    cands = list(candidates)
    if aug.shuffle_candidates:
        cands = [cands[i] for i in draws.rng("shuffle_candidates").permutation(len(cands))]
    item_keys = HISTORY_KEYS if ratings is not None else ITEM_KEYS
    hidden = masked_keys(aug, fmt.user_keys + item_keys, draws)
    key_rng = draws.rng("shuffle_keys") if aug.shuffle_keys else None
    mask_rng = draws.rng("mask") if aug.mask_p > 0 else None
    items = [catalog.items[int(i)] if ratings is None else {**catalog.items[int(i)], "rating": r}
             for i, r in zip(history, ratings if ratings is not None else history)]
    lines = [f"User: {record(catalog.users[int(user_id)], fmt.user_keys, aug, key_rng, hidden, mask_rng)}",
             "Watched, oldest first:"]
    lines += [f"- {record(v, item_keys, aug, key_rng, hidden, mask_rng)}" for v in items] or ["- (nothing yet)"]
    lines += candidate_block(cands, catalog.title, QUESTION[fmt.output], fmt.listed)
    return [{"role": "system", "content": fmt.system}, {"role": "user", "content": "\n".join(lines)}]


def fit_prompt(tokenizer, catalog: Catalog, user_id, history, candidates, max_tokens: int, aug: Augment = NONE,
               draws: Draws | None = None, ratings=None, fmt: Format = Format()) -> tuple[str, int]:
    """The prompt with as many recent history items as fit in max_tokens; returns (prompt, items cut)."""
    history = list(history)
    pairs = list(zip(history, ratings if ratings is not None else [None] * len(history)))

    def build(kept):
        rates = None if ratings is None else [r for _, r in kept]
        return prompt_text(tokenizer, render(catalog, user_id, [h for h, _ in kept], candidates, aug, draws, rates,
                                             fmt))
    return fit_items(build, pairs, tokenizer, max_tokens, f"user {user_id}")


def completion_text(catalog: Catalog, target: int, candidates=(), output: str = "title", rng=None) -> str:
    """The answer trained on (TRL appends the end-of-turn token): the target's title, or (output=list) every
    candidate's title one per line, the target first and the others in stored order (shuffled by rng: SO)."""
    if output == "title":
        return catalog.title(target)
    rest = [int(c) for c in candidates if int(c) != int(target)]
    if len(rest) != len(candidates) - 1:
        raise PromptError(f"target {target} is not among its candidates once: a list answer ranks the candidates")
    if rng is not None:
        rest = [rest[i] for i in rng.permutation(len(rest))]
    titles = [catalog.title(i) for i in (int(target), *rest)]
    if any(SEPARATOR in t for t in titles):
        raise PromptError("a title contains a line break: fix the item titles, or use MKV_OUTPUT=title")
    return SEPARATOR.join(titles)


def build_examples(catalog: Catalog, view: pd.DataFrame, tokenizer, max_tokens: int, aug: Augment = NONE,
                   seed: int = 0, epoch: int = 0, fmt: Format = Format(), raw_share: float = 0.0) -> pd.DataFrame:
    """Prompt/completion rows for a view (user_id, history, target, candidates, optional ratings per history item):
    each row raw with probability raw_share (column `raw`), else augmented; reports history items cut."""
    rows = []
    ratings = view["ratings"] if "ratings" in view else [None] * len(view)
    for k, (user, hist, target, cands, rates) in enumerate(zip(view["user_id"], view["history"], view["target"],
                                                               view["candidates"], ratings)):
        draws = Draws(seed, epoch, k)
        raw = not aug.active or draws.rng("raw").random() < raw_share
        row_aug = NONE if raw else aug
        prompt, cut = fit_prompt(tokenizer, catalog, user, hist, cands, max_tokens, row_aug, draws, rates, fmt)
        order = draws.rng("shuffle_output") if row_aug.shuffle_output else None
        rows.append({"user_id": int(user), "prompt": prompt, "history_cut": cut, "raw": bool(raw),
                     "completion": completion_text(catalog, target, list(cands), fmt.output, order)})
    return note_cuts(pd.DataFrame(rows), max_tokens)


def _check_first_line(title: str, line: list[int], full: list[int]) -> None:
    """Refuse an answer whose tokens (`full`) do not start with those of its first line (title + SEPARATOR)."""
    if full[:len(line)] != line:
        raise PromptError(f"the tokenizer merges tokens across the line break after {title!r}: first lines cannot be "
                          f"scored as trained; use MKV_OUTPUT=title with this model")


def check_first_lines(tokenizer, titles) -> None:
    """Refuse a tokenizer that merges a title's line break with the next line: first lines would not score alone."""
    titles = list(titles)
    lines = tokenizer([t + SEPARATOR for t in titles], add_special_tokens=False)["input_ids"]
    joined = tokenizer([t + SEPARATOR + t for t in titles], add_special_tokens=False)["input_ids"]
    for title, line, full in zip(titles, lines, joined):
        _check_first_line(title, line, full)


def check_list_answers(tokenizer, completions, max_tokens: int) -> None:
    """Refuse list answers longer than max_tokens, or whose first line (title + SEPARATOR) is not where their tokens
    start (a tokenizer that merges across the line break: scoring first lines would not match training)."""
    eos = tokenizer.eos_token
    for text in completions:
        ids = tokenizer(text + eos, add_special_tokens=False)["input_ids"]
        if len(ids) > max_tokens:
            raise PromptError(f"a list answer has {len(ids)} tokens, more than MKV_LIST_TOKENS={max_tokens}: raise "
                              f"MKV_LIST_TOKENS (or use MKV_OUTPUT=title)")
        if SEPARATOR in text:
            title = text.split(SEPARATOR)[0]
            _check_first_line(title, tokenizer(title + SEPARATOR, add_special_tokens=False)["input_ids"], ids)
