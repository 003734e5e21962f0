"""Batched candidate scoring: many users per forward pass, each user's prompt and all its candidates in one sequence.

A block attention mask lets every candidate see the prompt and itself, never another candidate, so a prompt is
encoded once, no KV cache is copied, and a batch holds as many users as memory allows.  Equal to the per-candidate
reference `rank.score_naive` up to float rounding (tests).  Soft tokens go through the same path (`splice`).

One row of a batch (prompts left-padded so all of them end in the same column; candidates follow, right-padded):

    tokens     [pad .. pad | prompt      | candidate 1 | candidate 2 | ... | pad]
    positions  [0   ..   0 | 0 .. P-1    | P .. P+c1-1 | P .. P+c2-1 | ... | 0  ]
    segment    [-1  ..  -1 | 0 ..      0 | 1 ..      1 | 2 ..      2 | ... | -1 ]

Reproduce the speed comparison against per-user scoring: `python benchmarks/llm_engine.py`.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from .. import compute
from .softtokens import SOFT_TOKEN, splice

MASKED_IMPLEMENTATIONS = ("sdpa", "eager")  # attention implementations that take an arbitrary 4-D mask


@dataclass
class Item:
    """One sequence to score: prompt token ids, candidate token ids (each ending with end-of-turn), soft vectors.

    scored: how many trailing tokens of each candidate count (0 = all of them; pointwise yes/no prompts score only
    the answer token after a candidate-specific question).
    versus: None, or the token id the one scored token is weighed against: its score is then the log of the softmax
    over {answer, versus} at that position, log P(yes) / (P(yes) + P(no)) (pointwise yes/no; needs scored=1).
    """
    prompt: list[int]
    candidates: list[list[int]]
    soft: torch.Tensor | None = None
    scored: int = 0
    versus: int | None = None

    @property
    def length(self) -> int:
        """Tokens in the packed row: the prompt plus every candidate."""
        return len(self.prompt) + sum(map(len, self.candidates))


@dataclass
class Batch:
    """Packed rows: ids, positions and segments (B, T); the column where candidates start; the 4-D mask."""
    input_ids: torch.Tensor
    positions: torch.Tensor
    segments: torch.Tensor
    start: int
    mask: torch.Tensor


def block_mask(segments: torch.Tensor) -> torch.Tensor:
    """(B, 1, T, T) bool: query q sees key k <= q of the prompt (segment 0) or of its own segment; pads see themselves.

    A pad sees itself so that no query row is fully masked (a fully masked row gives NaN, which would leak into
    other rows through 0 * NaN in the attention product).
    """
    t = segments.shape[1]
    q, k = segments[:, :, None], segments[:, None, :]
    causal = torch.ones(t, t, dtype=torch.bool, device=segments.device).tril()
    allowed = causal & (k >= 0) & (q >= 0) & ((k == 0) | (k == q))
    return (allowed | torch.eye(t, dtype=torch.bool, device=segments.device)).unsqueeze(1)


def pack(items: list[Item], pad_id: int, device) -> Batch:
    """Lay out items as rows of one batch (see the module docstring)."""
    start = max(len(it.prompt) for it in items)
    width = start + max(sum(map(len, it.candidates)) for it in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    pos = torch.zeros((len(items), width), dtype=torch.long)
    seg = torch.full((len(items), width), -1, dtype=torch.long)
    for row, it in enumerate(items):
        p = len(it.prompt)
        ids[row, start - p:start] = torch.tensor(it.prompt)
        pos[row, start - p:start] = torch.arange(p)
        seg[row, start - p:start] = 0
        col = start
        for j, cand in enumerate(it.candidates, start=1):
            ids[row, col:col + len(cand)] = torch.tensor(cand)
            pos[row, col:col + len(cand)] = torch.arange(p, p + len(cand))
            seg[row, col:col + len(cand)] = j
            col += len(cand)
    ids, pos, seg = ids.to(device), pos.to(device), seg.to(device)
    return Batch(ids, pos, seg, start, block_mask(seg))


def _attention_mask(model, mask: torch.Tensor) -> torch.Tensor:
    """The bool mask in the form the model's attention implementation takes (bool for sdpa, additive for eager)."""
    impl = attention_of(model)
    if impl not in MASKED_IMPLEMENTATIONS:
        raise ValueError(f"batched scoring needs an attention implementation that takes a 4-D mask "
                         f"({', '.join(MASKED_IMPLEMENTATIONS)}), the model uses {impl!r}: score inside "
                         f"engine.masked_attention(model)")
    if impl == "sdpa":
        return mask
    dtype = model.dtype
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)


def attention_of(model) -> str:
    """The model's attention implementation (eager when unset)."""
    return getattr(model.config, "_attn_implementation", None) or "eager"


@contextmanager
def masked_attention(model):
    """Score with sdpa when the model trains with a kernel that cannot take an arbitrary mask (flash, flex); restore."""
    impl = attention_of(model)
    if impl in MASKED_IMPLEMENTATIONS:
        yield model
        return
    model.set_attn_implementation("sdpa")
    try:
        yield model
    finally:
        model.set_attn_implementation(impl)


def _token_index(items: list[Item], start: int) -> tuple[list[int], list[int], list[int], list[int]]:
    """For every scored candidate token: its row, the column predicting it, its id, and its candidate's flat index."""
    rows, cols, tokens, owner = [], [], [], []
    flat = 0
    for row, it in enumerate(items):
        col = start
        for cand in it.candidates:
            skip = len(cand) - it.scored if it.scored else 0
            rows += [row] * (len(cand) - skip)
            cols += ([start - 1] + list(range(col, col + len(cand) - 1)))[skip:]  # token 0: predicted by the prompt
            tokens += cand[skip:]
            owner += [flat] * (len(cand) - skip)
            col += len(cand)
            flat += 1
    return rows, cols, tokens, owner


def batch_logp(model, items: list[Item], pad_id: int, reduce: str = "sum") -> list[torch.Tensor]:
    """Log-likelihood of each item's candidates after its prompt (one forward pass for all); differentiable."""
    if reduce not in ("sum", "mean"):
        raise ValueError(f"reduce must be 'sum' or 'mean', got {reduce!r}")
    batch = pack(items, pad_id, model.device)
    softs = [it.soft for it in items if it.soft is not None]
    if softs and len(softs) != len(items):
        raise ValueError("either every item or none carries soft-token vectors")
    inputs = ({"inputs_embeds": splice(model, batch.input_ids, torch.cat(softs))} if softs
              else {"input_ids": batch.input_ids})
    rows, cols, tokens, owner = _token_index(items, batch.start)
    if any(it.scored for it in items):  # only the answer columns: a tensor of positions
        needed = sorted(set(cols))
        keep = torch.tensor(needed, device=model.device)
        cols = np.searchsorted(needed, cols)
    else:  # logits from the prompts' last column on
        keep = batch.input_ids.shape[1] - batch.start + 1
        cols = [c - (batch.start - 1) for c in cols]
    logits = model(**inputs, attention_mask=_attention_mask(model, batch.mask), position_ids=batch.positions,
                   logits_to_keep=keep).logits
    compute.count_forward(model, sum(it.length for it in items), batch.input_ids.shape, logits.shape[:2])
    rows, cols, tokens, owner = (torch.as_tensor(np.asarray(x), device=model.device)
                                 for x in (rows, cols, tokens, owner))
    picked = logits[rows, cols].float()
    token_logp = picked.gather(-1, tokens[:, None]).squeeze(-1) - picked.logsumexp(-1)
    versus = [-1 if it.versus is None else it.versus for it in items for _ in it.candidates]
    if max(versus) >= 0:  # two-way: logit_answer - logsumexp(logit_answer, logit_versus)
        other = torch.as_tensor(versus, device=model.device)[owner]
        pair = picked.gather(-1, torch.stack([tokens, other.clamp(min=0)], -1))
        token_logp = torch.where(other >= 0, pair[:, 0] - pair.logsumexp(-1), token_logp)
    n_cands = [len(it.candidates) for it in items]
    total = torch.zeros(sum(n_cands), device=model.device).index_add(0, owner, token_logp)
    if reduce == "mean":
        total = total / torch.bincount(owner, minlength=len(total))
    return list(total.split(n_cands))


def plan_batches(lengths, batch_size: int, max_tokens: int | None = None) -> list[list[int]]:
    """Indices grouped into batches of similar length (longest first): at most batch_size rows and max_tokens cells."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    batches, current = [], []
    for i in order:
        width = lengths[current[0]] if current else lengths[i]  # the first (longest) row sets the padded width
        if current and (len(current) >= batch_size or (max_tokens and (len(current) + 1) * width > max_tokens)):
            batches.append(current)
            current = []
        current.append(int(i))
    return batches + [current] if current else batches


def auto_batch_size(model, longest: int, scored: int, device) -> int:
    """Rows per forward pass from free memory (CUDA: a third of what is free; CPU: 8, where batching gains little).

    Per row: activations of `longest` tokens, logits and their float copies for the `scored` candidate tokens, and an
    attention-score matrix per head in case the attention kernel materialises it.
    """
    if not str(device).startswith("cuda"):
        return 8
    free, _ = torch.cuda.mem_get_info(torch.device(device))
    cfg = model.config
    hidden = getattr(cfg, "hidden_size", 1024)
    inner = getattr(cfg, "intermediate_size", None) or 4 * hidden
    heads = getattr(cfg, "num_attention_heads", 16)
    per_row = longest * (hidden + inner) * 16 + scored * cfg.vocab_size * 10 + heads * longest * longest * 4
    return int(max(1, min(512, free // 3 // per_row)))


def check_items(items: list[Item]) -> None:
    """Refuse items a packed row cannot score: no prompt, no candidates, an empty candidate, too few tokens scored."""
    for k, it in enumerate(items):
        if not it.prompt or not it.candidates or any(len(c) == 0 for c in it.candidates):
            raise ValueError(f"item {k}: every item needs a prompt and non-empty candidates to score")
        if it.scored < 0 or any(len(c) < it.scored for c in it.candidates):
            raise ValueError(f"item {k}: scored={it.scored} trailing tokens, but a candidate is shorter")
        if it.versus is not None and it.scored != 1:
            raise ValueError(f"item {k}: a two-way score (versus={it.versus}) weighs one answer token: set scored=1")


@torch.no_grad()
def score_items(model, items: list[Item], pad_id: int, reduce: str = "sum", batch_size: int | None = None,
                progress: bool = True, desc: str = "ranking (batched)") -> list[np.ndarray]:
    """Scores of every item's candidates, batching items of similar length; batch_size None = from free memory."""
    check_items(items)
    lengths = [it.length for it in items]
    scored = max(sum(map(len, it.candidates)) for it in items)
    size = batch_size or auto_batch_size(model, max(lengths), scored, model.device)
    out: list[np.ndarray | None] = [None] * len(items)
    bar = tqdm(total=len(items), desc=desc, disable=not progress, mininterval=10, unit="seq")
    with masked_attention(model):
        compute.chose(rank_batch_size=size, rank_attention=attention_of(model), dtype=compute.dtype_name(model.dtype))
        for idx in plan_batches(lengths, size):
            scores = batch_logp(model, [items[i] for i in idx], pad_id, reduce)
            for i, s in zip(idx, scores):
                out[i] = s.cpu().numpy()
            bar.update(len(idx))
    bar.close()
    return out


def token_ids(tokenizer, text: str) -> list[int]:
    """Token ids of a text (no special tokens added)."""
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def completion_ids(tokenizer, completions, terminator: str | None = None) -> list[list[int]]:
    """Token ids of each completion followed by the end-of-turn token (as TRL trains it) or by `terminator`."""
    out = [token_ids(tokenizer, c + (terminator or tokenizer.eos_token)) for c in completions]
    if any(len(c) < 2 for c in out):
        raise ValueError("an empty completion (candidate title) cannot be scored: fix the item titles")
    return out


def _answered(tokenizer, text: str, prefix_ids: list[int], answer: str, answer_ids: list[int]) -> list[int]:
    """Token ids of text + answer, refused unless they start with the prefix's ids and end with the answer's."""
    full = tokenizer(text + answer, add_special_tokens=False)["input_ids"]
    if full[:len(prefix_ids)] != prefix_ids or full[len(full) - len(answer_ids):] != answer_ids:
        raise ValueError(f"the tokenizer merges tokens across the prompt/question/answer boundary of "
                         f"{text[len(text) - 40:]!r}: end the prefix and the question with a newline")
    return full


def pointwise_items(tokenizer, prefixes, questions, answer: str = "yes", soft=None,
                    versus: str | None = None) -> list[Item]:
    """Items that score the answer after prefix + question, one candidate per question (pointwise yes/no): log
    P(answer) over the vocabulary, or with `versus` log P(answer) / (P(answer) + P(versus)) (both one token each).

    Each candidate is the question's tokens then the answer's, taken from the tokenised whole text so that the ids
    equal what training saw; a tokenizer that merges tokens across the prefix/answer boundary is refused.
    """
    soft = soft if soft is not None else [None] * len(prefixes)
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    other = tokenizer(versus, add_special_tokens=False)["input_ids"] if versus is not None else None
    if other is not None and (len(answer_ids) != 1 or len(other) != 1):
        raise ValueError(f"two-way scoring needs {answer!r} and {versus!r} to be one token each, the tokenizer gives "
                         f"{answer_ids} and {other}: use a model whose tokenizer has both as single tokens")
    items = []
    for prefix, qs, vectors in zip(prefixes, questions, soft):
        p = tokenizer(prefix, add_special_tokens=False)["input_ids"]
        cands = []
        for q in qs:
            cands.append(_answered(tokenizer, prefix + q, p, answer, answer_ids)[len(p):])
            if other is not None:  # the versus token must be the one that would follow in this context
                _answered(tokenizer, prefix + q, p, versus, other)
        items.append(Item(p, cands, vectors, scored=len(answer_ids), versus=other[0] if other is not None else None))
    return items


def make_items(tokenizer, prompts, completions, soft=None, terminator: str | None = None) -> list[Item]:
    """Items from prompt texts, per-prompt candidate texts (ended as `completion_ids` says) and soft vectors."""
    soft = soft if soft is not None else [None] * len(prompts)
    items = []
    for prompt, texts, vectors in zip(prompts, completions, soft):
        if any(SOFT_TOKEN in t for t in texts):
            raise ValueError(f"a candidate text contains {SOFT_TOKEN}: soft tokens belong in the prompt only")
        items.append(Item(token_ids(tokenizer, prompt), completion_ids(tokenizer, texts, terminator), vectors))
    return items
