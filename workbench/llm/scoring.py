"""Ranking candidates with a causal LM: the batched engine (many users per pass, `engine.py`), prefix-shared
log-likelihood (one user per pass), naive per-candidate scoring (the reference both must equal), generate-then-match
(with ValidRatio), and order-averaged scoring (each user's candidates listed in K orders, scores averaged).  Each takes
optional soft-token vectors for the prompt's placeholders (`softtokens.splice`, the one code path).

Reproduce the comparison: `python benchmarks/llm_engine.py` (and `benchmarks/ranking.py` for the per-user scorers).
"""
from __future__ import annotations

import difflib
import re

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from .. import compute, metrics
from .likelihood import completion_ids, make_items, pointwise_items, score_items, token_ids
from .softtokens import check_soft_ids, splice


def _reduce(token_logp: torch.Tensor, mask: torch.Tensor, reduce: str) -> torch.Tensor:
    total = (token_logp * mask).sum(-1)
    if reduce == "sum":
        return total
    if reduce == "mean":
        return total / mask.sum(-1)
    raise ValueError(f"reduce must be 'sum' or 'mean', got {reduce!r}")


def _inputs(model, ids: torch.Tensor, soft: torch.Tensor | None) -> dict:
    """Model inputs for token ids: the ids themselves, or with soft tokens the embeddings `splice` builds."""
    return {"input_ids": ids} if soft is None else {"inputs_embeds": splice(model, ids, soft)}


def prefix_shared_logp(model, tokenizer, prompt: str, completions, reduce: str = "sum",
                       soft: torch.Tensor | None = None, terminator: str | None = None) -> torch.Tensor:
    """Log-likelihood of each completion after the prompt (one prompt pass, its KV cache reused); differentiable.

    soft: None, or (k, hidden) vectors for the prompt's k soft-token placeholders (spliced in the prompt pass only).
    terminator: what ends each completion (None: end-of-turn; `likelihood.completion_ids`).
    """
    device = model.device
    p_ids = torch.tensor([token_ids(tokenizer, prompt)], device=device)
    c_ids = completion_ids(tokenizer, completions, terminator)
    n, longest = len(c_ids), max(map(len, c_ids))
    out = model(**_inputs(model, p_ids, soft), use_cache=True)
    cache = out.past_key_values
    cache.batch_repeat_interleave(n)  # the forward below appends to it: this cache is used once
    batch = torch.full((n, longest), tokenizer.pad_token_id, device=device)
    mask = torch.zeros(n, longest, device=device)
    for row, ids in enumerate(c_ids):
        batch[row, :len(ids)] = torch.tensor(ids, device=device)
        mask[row, :len(ids)] = 1
    p = p_ids.shape[1]
    attention = torch.cat([torch.ones(n, p, device=device), mask], dim=1)
    positions = torch.arange(p, p + longest, device=device).expand(n, -1)
    logits = model(input_ids=batch, past_key_values=cache, attention_mask=attention, position_ids=positions).logits
    # token j of a completion is predicted by the prompt's last position (j = 0) or by completion position j - 1
    first = out.logits[:, -1:].expand(n, -1, -1)
    pred = torch.cat([first, logits[:, :-1]], dim=1).float().log_softmax(-1)
    token_logp = pred.gather(-1, batch.unsqueeze(-1)).squeeze(-1)
    return _reduce(token_logp, mask, reduce)


@torch.no_grad()
def score_prefix_shared(model, tokenizer, prompt: str, completions, reduce: str = "sum",
                        soft: torch.Tensor | None = None, terminator: str | None = None) -> np.ndarray:
    """Log-likelihood of each completion after the prompt, encoding the prompt once and reusing its KV cache."""
    return prefix_shared_logp(model, tokenizer, prompt, completions, reduce, soft, terminator).cpu().numpy()


@torch.no_grad()
def score_naive(model, tokenizer, prompt: str, completions, reduce: str = "sum",
                soft: torch.Tensor | None = None, terminator: str | None = None) -> np.ndarray:
    """The reference: one full forward pass of prompt + completion per candidate."""
    p_ids = token_ids(tokenizer, prompt)
    scores = []
    for ids in completion_ids(tokenizer, completions, terminator):
        full = torch.tensor([p_ids + ids], device=model.device)
        logp = model(**_inputs(model, full, soft)).logits[0, len(p_ids) - 1:-1].float().log_softmax(-1)
        token_logp = logp.gather(-1, torch.tensor(ids, device=model.device)[:, None]).squeeze(-1)
        scores.append(_reduce(token_logp[None], torch.ones_like(token_logp)[None], reduce).item())
    return np.asarray(scores)


def normalise_title(text: str) -> str:
    """Lower case, punctuation and surrounding quotes removed, spaces collapsed."""
    return re.sub(r"\s+", " ", re.sub(r"[^\w\s]", " ", text.lower())).strip()


def match_title(generated: str, titles: list[str], cutoff: float = 0.8) -> int | None:
    """Index of the candidate title the generated text names (exact after normalising, else closest above cutoff)."""
    gen = normalise_title(generated.split("\n")[0])
    norm = [normalise_title(t) for t in titles]
    if gen in norm:
        return norm.index(gen)
    close = difflib.get_close_matches(gen, norm, n=1, cutoff=cutoff)
    return norm.index(close[0]) if close else None


@torch.no_grad()
def generate_answer(model, tokenizer, prompt: str, max_new_tokens: int = 32, soft: torch.Tensor | None = None) -> str:
    """Greedy generation after the prompt, decoded up to the end-of-turn token.

    With soft tokens the ids go along with the spliced embeddings: a decoder-only `generate` then runs its first step
    on the embeddings and still returns prompt + new tokens (given embeddings alone, it returns only the new ones).
    """
    ids = torch.tensor([token_ids(tokenizer, prompt)], device=model.device)
    out = model.generate(**{"input_ids": ids, **_inputs(model, ids, soft)}, attention_mask=torch.ones_like(ids),
                         max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    compute.count_generation(model, ids.shape[1], out[:, ids.shape[1]:], tokenizer.eos_token_id)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()


SCORERS = ("batched", "prefix", "naive", "generate")


def listed_orders(n: int, k: int, seed: int = 0) -> list[np.ndarray]:
    """K orders in which to list n candidates: the stored order, its reverse, then seeded random permutations."""
    if k < 1:
        raise ValueError(f"SCORE_ORDERS must be >= 1, got {k}")
    orders = [np.arange(n), np.arange(n)[::-1].copy()][:k]
    rng = np.random.default_rng(seed)
    while len(orders) < k:
        orders.append(rng.permutation(n))
    return orders


def order_views(view: pd.DataFrame, k: int, seed: int = 0) -> list[pd.DataFrame]:
    """The view K times, each user's candidates listed in the k-th order of `listed_orders` (k = 0: as stored)."""
    orders = [listed_orders(len(c), k, seed) for c in view["candidates"]]
    return [view.assign(candidates=[[c[i] for i in o[j]] for c, o in zip(view["candidates"], orders)])
            for j in range(k)]


def _soft_vectors(examples: pd.DataFrame, soft_embedder, device) -> list:
    """Per row: None without a soft_embedder, else its vectors for the row's `soft_ids` (one per placeholder)."""
    if soft_embedder is None:
        return [None] * len(examples)
    check_soft_ids(examples)
    soft_embedder.eval()
    return [soft_embedder(torch.as_tensor(list(ids), dtype=torch.long, device=device)) for ids in examples["soft_ids"]]


def _check_rows(examples: pd.DataFrame, view: pd.DataFrame) -> None:
    """Every example row names a user of the view and lists exactly that user's candidates; every user has a row."""
    stored = dict(zip(view["user_id"], view["candidates"]))
    for user, cands in zip(examples["user_id"], examples["candidates"]):
        if user not in stored or sorted(cands) != sorted(stored[user]):
            raise ValueError(f"example for user {user} lists candidates that are not that user's fixed candidates: "
                             f"build prompts from the same view you rank")
    missing = set(stored) - set(examples["user_id"])
    if missing:
        raise ValueError(f"{len(missing)} user(s) of the view have no prompt (e.g. {sorted(missing)[:3]})")


def _score_rows(model, tokenizer, examples, catalog, scorer, reduce, soft, batch_size, progress,
                terminator=None) -> list[np.ndarray]:
    """Likelihood scores of each row's candidates (titles ended by terminator, None: end-of-turn), in listed order."""
    if "questions" in examples:  # pointwise: one question per candidate, log P(yes) / (P(yes) + P(no)) after it
        items = pointwise_items(tokenizer, examples["prompt"], examples["questions"], "yes", soft, versus="no")
        return score_items(model, items, tokenizer.pad_token_id, reduce, batch_size, progress, "ranking (pointwise)")
    titles = [[catalog.title(i) for i in c] for c in examples["candidates"]]
    if scorer == "batched":
        items = make_items(tokenizer, examples["prompt"], titles, soft, terminator)
        return score_items(model, items, tokenizer.pad_token_id, reduce, batch_size, progress)
    score = score_prefix_shared if scorer == "prefix" else score_naive
    rows = tqdm(list(zip(examples["prompt"], titles, soft)), desc=f"ranking ({scorer})", disable=not progress,
                mininterval=10)
    return [score(model, tokenizer, prompt, t, reduce, s, terminator) for prompt, t, s in rows]


def _generate_rows(model, tokenizer, examples, view, catalog, soft, progress) -> pd.DataFrame:
    """Generate-then-match on the stored order: the matched candidate ranks first, the others tie last."""
    rows = []
    items = list(zip(examples["prompt"], soft, view["candidates"], view["target"], view["user_id"]))
    for prompt, s, cands, target, user in tqdm(items, desc="ranking (generate)", disable=not progress,
                                               mininterval=10):
        answer = generate_answer(model, tokenizer, prompt, soft=s)
        hit = match_title(answer, [catalog.title(i) for i in cands])
        scores = np.zeros(len(cands))
        if hit is not None:
            scores[hit] = 1.0
        rows.append({"user_id": int(user), "rank": int(metrics.ranks_from_scores([scores], [cands.index(target)])[0]),
                     "valid": hit is not None, "answer": answer})
    return pd.DataFrame(rows)


@torch.no_grad()
def rank_examples(model, tokenizer, examples: pd.DataFrame, view: pd.DataFrame, catalog, scorer: str = "batched",
                  reduce: str = "sum", progress: bool = True, soft_embedder=None,
                  batch_size: int | None = None, terminator: str | None = None) -> pd.DataFrame:
    """Per-user target ranks from prompt rows (user_id, prompt, candidates as listed in the prompt) over `view`.

    A user may have several rows (the same candidates listed in different orders): each candidate's score is the mean
    of its log-likelihoods over them (order-averaged scoring), and `rank_listed` is the rank under the first row alone.
    Without `user_id`/`candidates` columns the rows are taken as aligned with `view`.
    scorer: "batched" (many users per forward pass, engine.py), "prefix" (one user at a time, prompt KV cache
    reused), "naive" (one pass per candidate, the reference) or "generate" (generate-then-match: the matched
    candidate ranks first, the others tie last; column `valid` says whether any candidate matched).
    With a `questions` column (pointwise prompts: `prompt` is the prefix shared by the user's candidates, question j
    asks about candidate j) a candidate's score is log P(yes) / (P(yes) + P(no)) after prefix + question, the
    softmax over the two answer logits (batched scorer only).
    soft_embedder: a module mapping a LongTensor of ids to (n, hidden) vectors, read from the `soft_ids` column.
    batch_size: sequences per forward pass of the batched scorer (None: chosen from free memory).
    terminator: what ends each scored title (None: the end-of-turn token; a line break: a list answer's first line).
    """
    if scorer not in SCORERS:
        raise ValueError(f"scorer must be one of {', '.join(SCORERS)}, got {scorer!r}")
    if "user_id" not in examples or "candidates" not in examples:
        if len(examples) != len(view):
            raise ValueError(f"{len(examples)} prompt rows for {len(view)} users: give user_id and candidates columns")
        examples = examples.assign(user_id=view["user_id"].to_numpy(), candidates=view["candidates"].to_numpy())
    if "questions" in examples and scorer != "batched":
        raise ValueError(f"pointwise prompts (a questions column) are scored by the batched scorer, not {scorer!r}")
    if scorer == "generate":
        _check_rows(examples, view)
        model.eval()
        soft = _soft_vectors(examples, soft_embedder, model.device)
        first = {}
        for i, user in enumerate(examples["user_id"]):
            first.setdefault(user, i)  # each user's first row: the stored order
        rows = [first[u] for u in view["user_id"]]
        return _generate_rows(model, tokenizer, examples.iloc[rows], view, catalog, [soft[i] for i in rows], progress)
    return view_ranks(view, score_examples(model, tokenizer, examples, view, catalog, scorer, reduce, progress,
                                           soft_embedder, batch_size, terminator))


@torch.no_grad()
def score_examples(model, tokenizer, examples: pd.DataFrame, view: pd.DataFrame, catalog, scorer: str = "batched",
                   reduce: str = "sum", progress: bool = True, soft_embedder=None,
                   batch_size: int | None = None, terminator: str | None = None) -> pd.DataFrame:
    """Per view user, its candidates' likelihood scores (`per_user_scores`) from prompt rows with user_id and
    candidates columns (arguments as `rank_examples`, likelihood scorers only)."""
    if scorer not in SCORERS or scorer == "generate":
        raise ValueError(f"scorer must be batched, prefix or naive, got {scorer!r}")
    _check_rows(examples, view)
    model.eval()
    soft = _soft_vectors(examples, soft_embedder, model.device)
    scores = _score_rows(model, tokenizer, examples, catalog, scorer, reduce, soft, batch_size, progress, terminator)
    return per_user_scores(examples, view, scores)


def per_user_scores(examples: pd.DataFrame, view: pd.DataFrame, scores) -> pd.DataFrame:
    """Per view user: `scores`, each candidate's score averaged over the user's rows (listed orders), and `listed`,
    its score in the user's first row (the stored order); both in the view's candidate order."""
    per_user = {}  # user -> one {candidate: score} per listed order, the stored order first
    for user, cands, s in zip(examples["user_id"], examples["candidates"], scores):
        per_user.setdefault(user, []).append(dict(zip(cands, s)))
    return pd.DataFrame({"user_id": view["user_id"].astype(int).to_numpy(),
                         "scores": [np.array([np.mean([d[c] for d in per_user[u]]) for c in cands])
                                    for u, cands in zip(view["user_id"], view["candidates"])],
                         "listed": [np.array([per_user[u][0][c] for c in cands])
                                    for u, cands in zip(view["user_id"], view["candidates"])]})


def view_ranks(view: pd.DataFrame, scored: pd.DataFrame) -> pd.DataFrame:
    """Ranks from `per_user_scores`: rank (averaged scores), rank_listed (stored order alone), target_position; a
    non-finite score is an error (metrics.NonFiniteScores), never a rank."""
    at = [cands.index(target) for cands, target in zip(view["candidates"], view["target"])]
    scores, listed = (metrics.finite_scores(list(scored[c]), "the LLM") for c in ("scores", "listed"))
    return pd.DataFrame({"user_id": scored["user_id"].to_numpy(),
                         "rank": metrics.ranks_from_scores(scores, at).astype(int),
                         "rank_listed": metrics.ranks_from_scores(listed, at).astype(int),
                         "target_position": np.asarray(at) + 1})


def hr1_by_position(ranks: pd.DataFrame) -> pd.DataFrame:
    """HR@1 by where the target is listed among the candidates (1 = first), under the stored order alone and averaged
    over SCORE_ORDERS orders: a model without position bias has the same HR@1 everywhere."""
    groups = ranks.assign(listed=ranks["rank_listed"] == 1, averaged=ranks["rank"] == 1).groupby("target_position")
    return pd.DataFrame({"users": groups.size(), "hr1_stored_order": groups["listed"].mean().round(4),
                         "hr1_order_averaged": groups["averaged"].mean().round(4)})
