"""LLM-TRSR prompts: a preference summary + the most recent items + the candidate(s).

Pointwise (default, the authors' recommender): one prompt per candidate, the candidate described by its item text
(`describe_item`: MovieLens 'Title (year; genres)', MIND/Amazon their text), answered "yes" or "no"; the score is
log P(yes) / (P(yes) + P(no)) at the answer position (`scoring.rank_examples` with a `questions` column), trained
1 positive : 1 negative.  A pointwise prompt is split into a prefix shared by the user's candidates and one question
per candidate, so that prefix + question is exactly the text the model is trained on, and the prefix is encoded once
per user.  Listwise (an option and an ablation arm): all candidates listed by title, the answer is the target's
title, ranked by the batched likelihood scorer like every LLM method.

Without a summary (the `full` and `recent` variants) the summary line is left out.  Overlong prompts lose their
oldest listed items, never the summary or the candidates.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ...llm.prompting import FREE_SYSTEM, SYSTEM, Catalog, PromptError, candidate_block, fit_items, note_cuts, \
    prompt_text

POINTWISE_SYSTEM = "You are a movie recommender. Answer yes or no."
QUESTION = "Which candidate will the user watch next?"
POINTWISE_QUESTION = "Will the user watch this movie next? Answer yes or no."
ANSWERS = ("yes", "no")
TEXT_CHARS = 160  # item text (text-rich data) shown per item, in characters
_SENTINEL = "\x00candidate\x00"


def describe_item(catalog: Catalog, text_chars: int = TEXT_CHARS):
    """item id -> one line: 'Title (year; genres)' for MovieLens, 'Title: text...' when the items carry `text`."""
    def describe(item_id: int) -> str:
        row = catalog.items[int(item_id)]
        title = str(row["title"])
        text = str(row.get("text") or "").strip()
        if text and text != title:
            lead = next((x for x in (f"title: {title}", title) if text.startswith(x)), "")  # the title said once
            body = text[len(lead):].lstrip(" .:;-\n")
            return f"{title}: {body[:text_chars].rstrip()}{'...' if len(body) > text_chars else ''}" if body else title
        year = row.get("year")
        extras = [str(year)] if pd.notna(year) and str(year) else []
        genres = row.get("genres")
        if genres is not None and len(genres):
            extras.append(", ".join(map(str, genres)))
        return f"{title} ({'; '.join(extras)})" if extras else title
    return describe


def context(summary: str, items, describe) -> list[str]:
    """The user part shared by both modes: the summary line (if any), then the listed items, oldest first."""
    lines = [f"Preference summary: {summary.strip()}"] if summary and summary.strip() else []
    return lines + ["Recently watched, oldest first:"] + ([f"- {describe(i)}" for i in items] or ["- (nothing yet)"])


def listwise_prompt(tokenizer, summary: str, items, candidates, describe, title, listed: bool = True) -> str:
    """One prompt listing every candidate (or, listed=False, naming none: PROMPT_FORM=free); the answer is a title."""
    lines = context(summary, items, describe) + candidate_block(candidates, title, QUESTION, listed)
    system = SYSTEM if listed else FREE_SYSTEM
    return prompt_text(tokenizer, [{"role": "system", "content": system}, {"role": "user", "content": "\n".join(lines)}])


def pointwise_parts(tokenizer, summary: str, items, candidates, describe) -> tuple[str, list[str]]:
    """(prefix, one question per candidate, described by `describe`): prefix + question is the whole prompt."""
    lines = context(summary, items, describe) + [_SENTINEL]
    text = prompt_text(tokenizer, [{"role": "system", "content": POINTWISE_SYSTEM},
                                   {"role": "user", "content": "\n".join(lines)}])
    prefix, _, tail = text.partition(_SENTINEL)
    return prefix, [f"Candidate: {describe(c)}\n{POINTWISE_QUESTION}{tail}" for c in candidates]


def build_examples(view: pd.DataFrame, listed: list, summaries: list[str], catalog: Catalog, tokenizer,
                   max_tokens: int, pointwise: bool = False, train: bool = False, seed: int = 0,
                   epoch: int = 0, show_candidates: bool = True) -> pd.DataFrame:
    """Prompt rows for a view (user_id, target, candidates), with each row's listed items and summary.

    Listwise: one row per view row, completion = the target's title.  Pointwise evaluation: one row per view row with
    `prompt` (the shared prefix) and `questions` (one per candidate, described by its item text).  Pointwise
    training: two rows per view row, the target ("yes") and one of its negatives drawn with
    default_rng([seed, epoch, row]) ("no"), 1 positive : 1 negative (the authors' training ratio).
    Column `history_cut` counts the oldest listed items cut to fit max_tokens.  show_candidates: listwise prompts list
    the candidates (PROMPT_FORM=listed) or name none (free); a pointwise prompt names its one candidate either way.
    """
    if not len(view) == len(listed) == len(summaries):
        raise ValueError(f"{len(view)} view rows, {len(listed)} item lists and {len(summaries)} summaries: build them "
                         f"from the same view")
    describe, title = describe_item(catalog), catalog.title
    rows = []
    for k, (user, target, cands, items, summary) in enumerate(zip(view["user_id"], view["target"],
                                                                  view["candidates"], listed, summaries)):
        what = f"user {user}"
        if not pointwise:
            prompt, cut = fit_items(lambda kept: listwise_prompt(tokenizer, summary, kept, cands, describe, title, show_candidates),
                                    items, tokenizer, max_tokens, what)
            rows.append({"user_id": int(user), "prompt": prompt, "completion": title(target), "history_cut": cut})
            continue
        if train:
            negatives = [c for c in cands if c != target]
            negative = negatives[np.random.default_rng([seed, epoch, k]).integers(len(negatives))]
            for item, answer in ((target, "yes"), (negative, "no")):
                (prefix, [question]), cut = fit_items(
                    lambda kept: pointwise_parts(tokenizer, summary, kept, [item], describe),
                    items, tokenizer, max_tokens, what)
                rows.append({"user_id": int(user), "prompt": prefix + question, "completion": answer,
                             "history_cut": cut})
            continue
        (prefix, questions), cut = fit_items(
            lambda kept: pointwise_parts(tokenizer, summary, kept, cands, describe),
            items, tokenizer, max_tokens, what)
        rows.append({"user_id": int(user), "prompt": prefix, "questions": questions, "history_cut": cut})
    return note_cuts(pd.DataFrame(rows), max_tokens, "listed")
