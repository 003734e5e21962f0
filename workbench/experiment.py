"""Steps shared by the LLM notebooks: model setup, the evaluated users, SFT samples, scoring and comparison.

Every LLM method calls these, so all of them see the same users, candidates and baselines.
"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd

from . import metrics as M
from . import rank, results, runtime
from .data.splits import select_users, training_candidates
from .models.llm import load_llm
from .prompts import keyvalue as kv

AUGMENTS = {"none": kv.Augment(), "shuffle": kv.Augment(shuffle=True), "mask": kv.Augment(mask_p=1.0),
            "both": kv.Augment(shuffle=True, mask_p=1.0)}


def augment(name: str, mask_p: float) -> kv.Augment:
    """The named augmentation arm with MASK_P applied."""
    if name not in AUGMENTS:
        raise ValueError(f"unknown AUGMENT {name!r}: use one of {', '.join(AUGMENTS)}")
    arm = AUGMENTS[name]
    return kv.Augment(shuffle=arm.shuffle, mask_p=mask_p if arm.mask_p else 0.0)


def tiny_corpus(protocol) -> list[str]:
    """Text the tiny model's tokenizer is trained on: titles, attributes and the prompt's fixed words."""
    items, users = protocol.data.items, protocol.data.users
    words = [kv.SYSTEM, "User: Watched, oldest first: Candidates: Which candidate will the user watch next?",
             " ".join(kv.USER_KEYS + kv.ITEM_KEYS), "male female unknown"]
    texts = (words + items["title"].tolist() + [", ".join(g) for g in items["genres"]] + items["year"].tolist()
             + users["occupation"].tolist() + users["zip"].tolist())
    return [str(t) for t in texts]


def setup_llm(cfg: dict, protocol, device: str):
    """(model, tokenizer, catalog) for cfg's MODEL, with threads chosen for its size."""
    model, tokenizer = load_llm(cfg["MODEL"], device, tiny_texts=tiny_corpus(protocol), seed=cfg["SEED"])
    n_params = sum(p.numel() for p in model.parameters())
    runtime.set_threads(cfg["NUM_THREADS"] if cfg["NUM_THREADS"] is not None else (1 if n_params < 5e6 else None))
    return model, tokenizer, kv.Catalog(protocol.data.users, protocol.data.items)


def eval_view(protocol, cfg: dict, which: str = "test", n_users=None) -> pd.DataFrame:
    """The seeded subset of users an LLM is evaluated on (LLM_EVAL_USERS), the same for every method."""
    view = getattr(protocol, which)
    users = select_users(view["user_id"], n_users or cfg["LLM_EVAL_USERS"], cfg["SEED"])
    return view[view["user_id"].isin(users)].reset_index(drop=True)


def training_view(protocol, cfg: dict) -> pd.DataFrame:
    """A seeded subset of training windows (LLM_TRAIN_SAMPLES), each with its own candidate list."""
    windows = protocol.train
    n = cfg["LLM_TRAIN_SAMPLES"]
    if n is not None and n < len(windows):
        windows = windows.loc[np.sort(np.random.default_rng(cfg["SEED"]).choice(len(windows), n, replace=False))]
    return training_candidates(windows, protocol.seqs, protocol.data.items["item_id"], cfg["N_NEGATIVES"], cfg["SEED"])


def sft_examples(catalog, view: pd.DataFrame, tokenizer, cfg: dict, aug: kv.Augment) -> pd.DataFrame:
    """LLM_EPOCHS draws of the training prompts (a fresh augmentation per epoch), stacked."""
    draws = [kv.build_examples(catalog, view, tokenizer, cfg["MAX_PROMPT_TOKENS"], aug, cfg["SEED"], epoch)
             for epoch in range(cfg["LLM_EPOCHS"])]
    return pd.concat(draws, ignore_index=True)


def evaluate(model, tokenizer, catalog, view: pd.DataFrame, cfg: dict, method: str = "prefix") -> tuple:
    """(ranks DataFrame, seconds, prompt token counts) for the fixed evaluation prompts of `view`."""
    examples = kv.build_examples(catalog, view, tokenizer, cfg["MAX_PROMPT_TOKENS"])
    start = time.time()
    ranks = rank.rank_examples(model, tokenizer, examples, view, catalog, method, cfg["SCORE_REDUCE"])
    lengths = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in examples["prompt"]]
    return ranks, time.time() - start, lengths


def baseline_ranks(cfg: dict, users, methods=("popularity", "sasrec", "gru4rec")) -> dict:
    """Saved baseline ranks (notebook 02, same profile and seed) restricted to `users`."""
    out = {}
    for method in methods:
        try:
            _, ranks = results.load_run(results.run_name(method, cfg))
        except FileNotFoundError as err:
            raise FileNotFoundError(f"{err}; run notebook 02_baselines in profile {cfg['PROFILE']} first") from None
        out[method] = ranks[ranks["user_id"].isin(set(users))].sort_values("user_id").reset_index(drop=True)
    return out


def compare(ranks_by_method: dict, cfg: dict, reference: str) -> pd.DataFrame:
    """Paired bootstrap of every method against `reference` on their common users (diff, CI, p)."""
    frames = {}
    for name, ranks in ranks_by_method.items():
        if name == reference:
            continue
        a, b = M.align_ranks(ranks, ranks_by_method[reference])
        frames[f"{name} - {reference}"] = M.paired_bootstrap(a, b, cfg["N_BOOTSTRAP"], cfg["SEED"])
    return pd.concat(frames)
