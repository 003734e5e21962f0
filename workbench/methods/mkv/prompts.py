"""Multi key-value prompts (MKV): users and items as `key: value` records, with shuffle and mask augmentation.

Training samples are augmented on the fly, seeded per (seed, epoch, sample); evaluation prompts are fixed.
Overlong prompts lose their oldest history items, never candidates; the number cut is reported.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ...llm.prompting import SYSTEM, Catalog, PromptError, note_cuts, prompt_text

USER_KEYS = ("age", "gender", "occupation", "zip")
ITEM_KEYS = ("title", "year", "genres")
GENDER = {"M": "male", "F": "female"}


@dataclass(frozen=True)
class Augment:
    """Key augmentation for training prompts: shuffle key (and candidate) order, mask non-title keys with prob p."""
    shuffle: bool = False
    mask_p: float = 0.0

    @property
    def active(self) -> bool:
        """Whether this draws anything at random."""
        return self.shuffle or self.mask_p > 0


NONE = Augment()


def _value(key: str, value) -> str:
    if isinstance(value, (list, tuple, np.ndarray)):
        return ", ".join(map(str, value))
    if key == "gender":
        return GENDER.get(str(value), str(value))
    return "unknown" if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA else str(value)


def record(values: dict, keys, aug: Augment = NONE, rng: np.random.Generator | None = None) -> str:
    """'key: value; key: value' for the given keys, shuffled and/or masked (the title is never masked)."""
    keys = list(keys)
    if aug.mask_p > 0:
        keys = [k for k in keys if k == "title" or rng.random() >= aug.mask_p]
    if aug.shuffle:
        keys = [keys[i] for i in rng.permutation(len(keys))]
    return "; ".join(f"{k}: {_value(k, values[k])}" for k in keys)


def render(catalog: Catalog, user_id: int, history, candidates, aug: Augment = NONE, rng=None) -> list[dict]:
    """Chat messages for one example: user record, history records (oldest first), candidate titles."""
    if len(candidates) == 0:
        raise PromptError("no candidates to rank: every example needs its candidate list")
    if aug.active and rng is None:
        raise ValueError("an augmented prompt needs a random generator")
    cands = list(candidates)
    if aug.shuffle:
        cands = [cands[i] for i in rng.permutation(len(cands))]
    lines = [f"User: {record(catalog.users[int(user_id)], USER_KEYS, aug, rng)}", "Watched, oldest first:"]
    lines += [f"- {record(catalog.items[int(i)], ITEM_KEYS, aug, rng)}" for i in history] or ["- (nothing yet)"]
    lines += ["Candidates:"] + [f"- {catalog.title(i)}" for i in cands]
    lines += ["Which candidate will the user watch next?"]
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "\n".join(lines)}]


def fit_prompt(tokenizer, catalog: Catalog, user_id, history, candidates, max_tokens: int, aug: Augment = NONE,
               rng=None) -> tuple[str, int]:
    """The prompt with as many recent history items as fit in max_tokens; returns (prompt, items cut)."""
    history = list(history)
    state = rng.bit_generator.state if rng is not None else None
    for cut in range(len(history) + 1):
        if state is not None:
            rng.bit_generator.state = state  # the same draws whatever the cut
        text = prompt_text(tokenizer, render(catalog, user_id, history[cut:], candidates, aug, rng))
        if len(tokenizer(text, add_special_tokens=False)["input_ids"]) <= max_tokens:
            return text, cut
    raise PromptError(f"the prompt for user {user_id} needs more than MAX_PROMPT_TOKENS={max_tokens} tokens even with "
                      f"no history: raise MAX_PROMPT_TOKENS or shorten the candidate list")


def completion_text(catalog: Catalog, item_id: int) -> str:
    """The answer the model is trained to give (TRL appends the end-of-turn token)."""
    return catalog.title(item_id)


def build_examples(catalog: Catalog, view: pd.DataFrame, tokenizer, max_tokens: int, aug: Augment = NONE,
                   seed: int = 0, epoch: int = 0) -> pd.DataFrame:
    """Prompt/completion rows for a view (user_id, history, target, candidates); reports history items cut."""
    rows = []
    for k, (user, hist, target, cands) in enumerate(zip(view["user_id"], view["history"], view["target"],
                                                        view["candidates"])):
        rng = np.random.default_rng([seed, epoch, k]) if aug.active else None
        prompt, cut = fit_prompt(tokenizer, catalog, user, hist, cands, max_tokens, aug, rng)
        rows.append({"user_id": int(user), "prompt": prompt, "completion": completion_text(catalog, target),
                     "history_cut": cut})
    return note_cuts(pd.DataFrame(rows), max_tokens)
