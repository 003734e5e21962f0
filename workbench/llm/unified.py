"""Unified prompts (RSLLM): each listed item as its title, its ID soft token, or both; an optional user-level token.

A soft token is the placeholder `softtokens.SOFT_TOKEN`; the row's `soft_ids` name, in order, the ids whose projected
embeddings replace the placeholders (user key first, then the history, then the candidates).  The same rows serve
SFT (`sft.train_sft(..., soft_embedder=...)`) and ranking (`scoring.rank_examples(..., soft_embedder=...)`).
Overlong prompts lose their oldest history items, never candidates.
"""
from __future__ import annotations

import pandas as pd

from .softtokens import SOFT_TOKEN
from .prompting import FREE_SYSTEM, SYSTEM, Catalog, PromptError, candidate_block, fit_items, \
    note_cuts, prompt_text

MODES = ("text", "id", "unified")
QUESTION = "Which candidate will the user watch next?"


def corpus(items: pd.DataFrame) -> list[str]:
    """The prompts' fixed words and every title (what the smoke profile's tiny tokenizer is trained on)."""
    return [SYSTEM, f"User: Watched, oldest first: Candidates: (nothing yet) {QUESTION}"] + [str(t) for t in items["title"]]


def item_text(catalog: Catalog, item_id: int, mode: str) -> str:
    """An item as the prompt shows it: 'Title' (text), the placeholder (id) or 'Title <placeholder>' (unified)."""
    if mode not in MODES:
        raise ValueError(f"unknown prompt mode {mode!r}: use one of {', '.join(MODES)}")
    if mode == "text":
        return catalog.title(item_id)
    return SOFT_TOKEN if mode == "id" else f"{catalog.title(item_id)} {SOFT_TOKEN}"


def render(catalog: Catalog, history, candidates, mode: str, user: int | None = None,
           listed: bool = True) -> tuple[list[dict], list[int]]:
    """Chat messages for one example and the soft ids of their placeholders, in order.

    user: a soft id (`projector.user_key`) for a user-level token, or None for no user line.
    listed: the candidates listed before the question (PROMPT_FORM=listed), or none named (free).
    """
    lines, soft = [], []
    if user is not None:
        lines.append(f"User: {SOFT_TOKEN}")
        soft.append(int(user))
    lines.append("Watched, oldest first:")
    lines += [f"- {item_text(catalog, i, mode)}" for i in history] or ["- (nothing yet)"]
    lines += candidate_block(candidates, lambda c: item_text(catalog, c, mode), QUESTION, listed)
    if mode != "text":
        soft += [int(i) for i in history] + ([int(c) for c in candidates] if listed else [])
    system = SYSTEM if listed else FREE_SYSTEM
    return [{"role": "system", "content": system}, {"role": "user", "content": "\n".join(lines)}], soft


def build_examples(catalog: Catalog, view: pd.DataFrame, tokenizer, max_tokens: int, mode: str,
                   users: list | None = None, listed: bool = True) -> pd.DataFrame:
    """Prompt rows for a view (user_id, history, target, candidates): prompt, completion (the target's title),
    soft_ids (none in text mode), target_id, candidate_ids (as stored), history_cut.  users: one user soft id per
    row, or None; listed: the candidates in the prompt (PROMPT_FORM=listed) or not (free)."""
    users = users if users is not None else [None] * len(view)
    if len(users) != len(view):
        raise ValueError(f"{len(users)} user keys for {len(view)} view rows: give one per row")
    rows = []
    for user, hist, target, cands, key in zip(view["user_id"], view["history"], view["target"], view["candidates"],
                                              users):
        (prompt, soft), cut = fit_items(
            lambda kept: _text(tokenizer, catalog, kept, cands, mode, key, listed), hist, tokenizer, max_tokens,
            f"user {user}", texts=lambda built: [built[0]])
        if prompt.count(SOFT_TOKEN) != len(soft):
            raise PromptError(f"user {user}: an item title contains {SOFT_TOKEN!r}: rename that item")
        rows.append({"user_id": int(user), "prompt": prompt, "completion": catalog.title(target),
                     "soft_ids": soft, "target_id": int(target),
                     "candidate_ids": [int(c) for c in cands], "history_cut": cut})
    return note_cuts(pd.DataFrame(rows), max_tokens)


def _text(tokenizer, catalog, history, candidates, mode, user, listed=True) -> tuple[str, list[int]]:
    messages, soft = render(catalog, history, candidates, mode, user, listed)
    return prompt_text(tokenizer, messages), soft
