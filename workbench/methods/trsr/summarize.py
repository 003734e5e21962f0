"""Preference summaries of long histories with an instruct LLM: the summarisers of LLM-TRSR (Zheng et al., WWW 2024).

As the authors' `summary_generation.py`: a history (item ids, oldest first: everything before the target) is cut into
blocks of `block_size` items from the oldest item, so only the most recent block may be short, and every block is
summarised (the recommendation prompt also lists the most recent items verbatim; their `dataset_gen.py` does the same).
`max_blocks` is an optional cost cap the authors do not have: None keeps every block, k keeps the k most recent blocks
of that same partition (the older history is then left out).  `recent` > 0 leaves the last `recent` items out first
(not the method's choice: it passes 0).
Hierarchical: each block summarised alone, then the summaries merged (one block is its own summary); recurrent:
summary_k from summary_{k-1} and block k.
Generation is greedy (the authors sample; greedy is deterministic, so cacheable and testable), batched across users
with left padding masked, so a row's text does not depend on its batch (tested).  A prompt beyond the summariser's
context is an error naming MAX_BLOCKS; an empty generation becomes FALLBACK (its block's items), counted in the report.

Cache: one JSON file per user under `<cache>/<model>-<method>-<hash of the key>/`, the key (summariser name and
weights, method, block_size, max_blocks, recent, max_new_tokens, prompt-template version) also written to `key.json`;
a folder whose key.json disagrees with its name is refused (SummaryCacheError).  An entry records the block ids and
texts it summarised and is served only if they equal the current ones; an unreadable entry is recomputed.  Entries are
written atomically as each chunk of users finishes, so an interrupted run resumes where it stopped.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from ... import assets, compute
from ...llm.prompting import prompt_text

METHODS = ("hierarchical", "recurrent")
EMPTY_SUMMARY = ""  # a user whose history leaves nothing to summarise (counted as `no_history` in the report)
SYSTEM = "You describe a user's movie preferences in two or three sentences."
BLOCK = "Summarise this user's movie preferences from the movies they watched:\n{items}"
MERGE = ("Here are summaries of this user's movie preferences over successive periods, oldest first:\n{summaries}\n"
         "Summarise them into one description of the user's preferences.")
UPDATE = ("This summarises a user's movie preferences so far:\n{summary}\nThen the user watched:\n{items}\n"
          "Update the summary so that it describes the user's preferences now.")
FALLBACK = "Recently watched: {items}"
SCHEME = "3"  # 2: a single block is not merged; 3: blocks from the oldest item, the whole history
PROMPT_VERSION = hashlib.sha256("\x00".join([SCHEME, SYSTEM, BLOCK, MERGE, UPDATE, FALLBACK]).encode()).hexdigest()[:8]

Describe = Callable[[int], str]


class SummaryCacheError(RuntimeError):
    """A summary cache folder that cannot be used, with a message that says what to do."""


# ---------------------------------------------------------------- blocks and prompts (pure)

def blocks(history, block_size: int = 5, max_blocks: int | None = None, recent: int = 0) -> list[list[int]]:
    """The history (minus its last `recent` items) in blocks of block_size from the oldest; the last max_blocks."""
    if block_size < 1 or (max_blocks is not None and max_blocks < 1) or recent < 0:
        raise ValueError(f"need block_size >= 1, max_blocks >= 1 or None, recent >= 0: got {block_size}, "
                         f"{max_blocks}, {recent}")
    items = [int(i) for i in history]
    items = items[:len(items) - recent] if recent else items
    out = [items[s:s + block_size] for s in range(0, len(items), block_size)]  # the most recent block may be short
    return out[len(out) - max_blocks:] if max_blocks is not None and len(out) > max_blocks else out


def block_text(block, describe: Describe) -> str:
    """One line per item: '- <describe(item)>'."""
    return "\n".join(f"- {describe(i)}" for i in block)


def fallback_text(block, describe: Describe) -> str:
    """What replaces an empty generation: the items of the block it was about."""
    return FALLBACK.format(items="; ".join(describe(i) for i in block))


def _chat(tokenizer, content: str) -> str:
    return prompt_text(tokenizer, [{"role": "system", "content": SYSTEM}, {"role": "user", "content": content}])


def block_prompt(tokenizer, text: str) -> str:
    """Prompt that summarises one block (hierarchical step 1, recurrent step 1)."""
    return _chat(tokenizer, BLOCK.format(items=text))


def merge_prompt(tokenizer, summaries: list[str]) -> str:
    """Prompt that merges the block summaries, oldest first (hierarchical step 2)."""
    return _chat(tokenizer, MERGE.format(summaries="\n".join(f"{k}. {s}" for k, s in enumerate(summaries, 1))))


def update_prompt(tokenizer, summary: str, text: str) -> str:
    """Prompt that updates the summary so far with the next block (recurrent step k > 1)."""
    return _chat(tokenizer, UPDATE.format(summary=summary, items=text))


# ---------------------------------------------------------------- batched greedy generation

def _new_text(tokenizer, new_ids: torch.Tensor) -> str:
    """Decoded new tokens up to the first end-of-turn token."""
    ids = new_ids.tolist()
    if tokenizer.eos_token_id in ids:
        ids = ids[:ids.index(tokenizer.eos_token_id)]
    return tokenizer.decode(ids, skip_special_tokens=True).strip()


@torch.no_grad()
def generate_batch(model, tokenizer, prompts: list[str], max_new_tokens: int = 64, batch_size: int = 16) -> list[str]:
    """Greedy answers to the prompts, batch_size at a time (sorted by length, left-padded), in the prompts' order."""
    ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    context = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    longest = max(map(len, ids), default=0)
    if context and longest + max_new_tokens > context:
        raise ValueError(f"a summary prompt of {longest} tokens + {max_new_tokens} new ones exceeds the summariser's "
                         f"context of {context} tokens: set MAX_BLOCKS (fewer summaries to merge), or SUMMARY_MODEL "
                         f"to a model with a longer context")
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    answers = [""] * len(ids)
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        width = max(len(ids[i]) for i in rows)
        batch = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, i in enumerate(rows):
            batch[r, width - len(ids[i]):] = torch.tensor(ids[i])
            mask[r, width - len(ids[i]):] = 1
        out = model.generate(input_ids=batch.to(model.device), attention_mask=mask.to(model.device),
                             max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id,
                             eos_token_id=tokenizer.eos_token_id)
        for r, i in enumerate(rows):
            answers[i] = _new_text(tokenizer, out[r, width:])
        compute.count_generation(model, int(mask.sum()), out[:, width:], tokenizer.eos_token_id)
    return answers


# ---------------------------------------------------------------- the two summarisers (batched across users)

def _filled(answer: str, block, describe: Describe, counts: dict) -> str:
    """The answer, or the block's fallback text (counted) if it is empty."""
    if answer.strip():
        return answer.strip()
    counts["empty_outputs"] += 1
    return fallback_text(block, describe)


def hierarchical(generate, tokenizer, user_blocks: dict, describe: Describe, counts: dict) -> dict[int, dict]:
    """Per user: block summaries (all users' blocks in one batched pass), then their merge (one more pass); a user
    with a single block keeps its block summary (nothing to merge)."""
    jobs = [(u, k) for u, bl in user_blocks.items() for k in range(len(bl))]
    answers = generate([block_prompt(tokenizer, block_text(user_blocks[u][k], describe)) for u, k in jobs])
    parts, raw = {u: [] for u in user_blocks}, {}
    for (u, k), answer in zip(jobs, answers):
        parts[u].append(_filled(answer, user_blocks[u][k], describe, counts))
        raw[u] = answer
    merging = [u for u in user_blocks if len(parts[u]) > 1]
    raw.update(zip(merging, generate([merge_prompt(tokenizer, parts[u]) for u in merging]) if merging else []))
    return {u: {"intermediate": parts[u],
                "summary": _filled(raw[u], user_blocks[u][-1], describe, counts) if u in merging else parts[u][0],
                "fallback": not raw[u].strip()} for u in user_blocks}


def recurrent(generate, tokenizer, user_blocks: dict, describe: Describe, counts: dict) -> dict[int, dict]:
    """Per user: a summary carried forward block by block; step k is one batched pass over users with a block k."""
    steps, last = {u: [] for u in user_blocks}, {}
    for k in range(max(map(len, user_blocks.values()), default=0)):
        users = [u for u, bl in user_blocks.items() if len(bl) > k]
        texts = [block_text(user_blocks[u][k], describe) for u in users]
        prompts = [block_prompt(tokenizer, t) if k == 0 else update_prompt(tokenizer, steps[u][-1], t)
                   for u, t in zip(users, texts)]
        for u, answer in zip(users, generate(prompts)):
            steps[u].append(_filled(answer, user_blocks[u][k], describe, counts))
            last[u] = answer
    return {u: {"intermediate": s, "summary": s[-1], "fallback": not last[u].strip()} for u, s in steps.items()}


SUMMARISERS = {"hierarchical": hierarchical, "recurrent": recurrent}


# ---------------------------------------------------------------- the cache

def cache_key(model_name: str, method: str, block_size: int, max_blocks: int | None, recent: int,
              max_new_tokens: int) -> dict:
    """Everything that changes a summary besides the history and the item texts (which each entry records)."""
    return {"model": model_name, "method": method, "block_size": block_size, "max_blocks": max_blocks,
            "recent": recent, "max_new_tokens": max_new_tokens, "prompt_version": PROMPT_VERSION}


def cache_folder(root, key: dict) -> Path:
    """`<root>/<model>-<method>-<hash of key>`, created with its key.json; refused if key.json disagrees."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]
    model = re.sub(r"[^\w.-]+", "_", key["model"]).strip("._")[-48:] or "model"
    folder = Path(root) / f"{model}-{key['method']}-{digest}"
    marker = folder / "key.json"
    if marker.is_file():
        try:
            found = json.loads(marker.read_text())
        except ValueError:
            found = None
        if found != key:
            raise SummaryCacheError(f"{marker} records {found}, not {key}: the folder was written for other "
                                    f"settings or is damaged; delete {folder} to recompute its summaries")
    else:
        assets.atomic_write(marker, lambda tmp: tmp.write_text(json.dumps(key, indent=1, sort_keys=True)))
    return folder


def entry_path(folder: Path, user) -> Path:
    """The cache file of one user (or sample: an int or a string of letters, digits, '-' and '_')."""
    if not re.fullmatch(r"[\w-]+", str(user)):
        raise ValueError(f"summary key {user!r}: use an int or a string of letters, digits, '-' and '_'")
    return folder / f"user-{user}.json"


def read_entry(folder: Path, user: int, user_blocks: list, texts: list[str]) -> dict | None:
    """The cached entry if it summarised exactly these blocks and texts; None if missing, unreadable or stale."""
    try:
        entry = json.loads(entry_path(folder, user).read_text())
    except (OSError, ValueError):
        return None
    fresh = (isinstance(entry, dict) and entry.get("blocks") == user_blocks and entry.get("block_texts") == texts
             and isinstance(entry.get("summary"), str) and entry["summary"].strip())
    return entry if fresh else None


def write_entry(folder: Path, user: int, entry: dict) -> None:
    """Write one user's entry atomically (temp file, then os.replace)."""
    text = json.dumps(entry, indent=1)
    assets.atomic_write(entry_path(folder, user), lambda tmp: tmp.write_text(text))


# ---------------------------------------------------------------- the entry point

class Summaries(dict):
    """user -> summary text, with `report`: counts of users, cache hits, generations and fallbacks."""
    report: dict


def summarize_users(model, tokenizer, histories: dict, describe: Describe, method: str, block_size: int = 5,
                    max_blocks: int | None = None, recent: int = 0, max_new_tokens: int = 64, batch_size: int = 16,
                    cache_dir=None, model_name: str | None = None, progress: bool = True,
                    use_cache: bool = True) -> Summaries:
    """A preference summary per user (user -> text) by `method`, batched across users and cached per user.

    cache_dir: None for `assets.cache_dir("summaries")`; use_cache=False computes everything and writes nothing.
    model, tokenizer: the summariser (its own tokenizer and chat template); model_name: enters the cache key
    (default: the model's `name_or_path`, required when that is empty; the method passes name@weights digest).
    The returned dict's `report` counts users, no_history (EMPTY_SUMMARY), cached, generated, prompts,
    empty_outputs (empty generations replaced by FALLBACK) and fallback_summaries (final summaries that are FALLBACK).
    """
    if method not in SUMMARISERS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    model_name, folder = model_name or getattr(model.config, "name_or_path", "") or "", None
    if use_cache:
        if not model_name:
            raise ValueError("the model has no name_or_path: pass model_name (it keys the summary cache)")
        root = Path(cache_dir) if cache_dir is not None else assets.cache_dir("summaries")
        folder = cache_folder(root, cache_key(model_name, method, block_size, max_blocks, recent, max_new_tokens))
    counts = {"users": len(histories), "no_history": 0, "cached": 0, "generated": 0, "prompts": 0,
              "empty_outputs": 0, "fallback_summaries": 0}
    out, pending = Summaries(), {}
    for user, history in histories.items():
        bl = blocks(history, block_size, max_blocks, recent)
        texts = [block_text(b, describe) for b in bl]
        entry = read_entry(folder, user, bl, texts) if folder is not None and bl else None
        if not bl:
            out[user] = EMPTY_SUMMARY
            counts["no_history"] += 1
        elif entry is not None:
            out[user] = entry["summary"]
            counts["cached"] += 1
            counts["fallback_summaries"] += bool(entry.get("fallback"))
        else:
            pending[user] = (bl, texts)

    def generate(prompts):
        counts["prompts"] += len(prompts)
        return generate_batch(model, tokenizer, prompts, max_new_tokens, batch_size)

    users = list(pending)
    bar = tqdm(total=len(users), desc=f"summarising ({method})", disable=not progress or not users, mininterval=10)
    for start in range(0, len(users), batch_size):  # chunks of users: an interruption loses one chunk at most
        chunk = {u: pending[u][0] for u in users[start:start + batch_size]}
        results = SUMMARISERS[method](generate, tokenizer, chunk, describe, counts)
        for user, result in results.items():
            bl, texts = pending[user]
            fallback = bool(result["fallback"])
            entry = {"user": user if isinstance(user, str) else int(user), "method": method, "blocks": bl, "block_texts": texts,
                     "intermediate": result["intermediate"], "summary": result["summary"], "fallback": fallback}
            if folder is not None:
                write_entry(folder, user, entry)
            out[user] = result["summary"]
            counts["generated"] += 1
            counts["fallback_summaries"] += fallback
        bar.update(len(chunk))
    bar.close()
    out.report = counts
    if progress or counts["fallback_summaries"]:
        note = "note: " if counts["fallback_summaries"] else ""
        print(f"{note}summaries ({method}): " + ", ".join(f"{k} {v}" for k, v in counts.items())
              + (f"; cache {folder}" if folder is not None else ""))
    return out
