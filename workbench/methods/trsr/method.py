"""LLM-TRSR's recommender: long histories summarised by an LLM, then a LoRA-tuned recommender prompt.

The whole history before the target is cut into blocks of BLOCK_SIZE from the oldest item (MAX_BLOCKS: an optional
cap keeping the most recent blocks) and summarised hierarchically or recurrently (`summarize.py`, cached on disk) by
the summariser: SUMMARY_MODEL (loaded frozen) or, by default, the base LLM with its adapter disabled.  The prompt holds
the summary, the RECENT_ITEMS most recent items and the candidate(s) (`prompts.py`): pointwise by default (one yes/no
prompt per candidate, score P(yes) / (P(yes) + P(no))), listwise as an option.  TRSR_HISTORY = full | recent are the
ablation's variants without a summary.  Training windows get the summary of their own history (never of later
items).  Reproduce: `python -m workbench run 05` (summaries, method) and `python -m workbench run 06` (ablation).
"""
from __future__ import annotations

import hashlib
import math
import time
from contextlib import nullcontext

import numpy as np
import pandas as pd
import torch

from ...llm.loading import default_dtype, load_llm, model_identity
from ...llm.prompting import is_listed
from ...llm.recommender import LLMRecommender, prompt_lengths
from ...recommender import implements
from . import prompts, summarize


def weights_digest(model) -> str:
    """A short digest of a model's parameter names, shapes, sums and dtype: keys caches to these exact weights."""
    digest = hashlib.sha256(str(model.dtype).encode())
    with torch.no_grad():
        for name, p in model.named_parameters():
            x = p.detach().double()
            digest.update(f"{name}{tuple(p.shape)}{x.sum().item():.10e}{x.square().sum().item():.10e}".encode())
    return digest.hexdigest()[:10]


@implements("trsr")
class LLMTRSR(LLMRecommender):
    """Preference summary + recent items + candidate(s), LoRA SFT; pointwise P(yes) vs P(no), or listwise titles."""
    caps = {"LLM_EVAL_USERS": "TRSR_EVAL_USERS", "LLM_TRAIN_SAMPLES": "TRSR_TRAIN_SAMPLES"}
    method_params = ("TRSR_HISTORY", "TRSR_SCORING", "BLOCK_SIZE", "MAX_BLOCKS", "RECENT_ITEMS", "SUMMARY_MODEL",
                     "SUMMARY_TOKENS")

    @classmethod
    def decode_plan(cls, cfg: dict, users: int, windows: int) -> dict:
        """{(history, part): decoding steps} of the summaries (cached per history kind): hierarchical = the blocks'
        summaries, then the merge; recurrent = one level per block; each level SUMMARY_BATCH_SIZE histories at a time,
        up to SUMMARY_TOKENS steps (MAX_BLOCKS None: ~20 blocks, MovieLens' median history)."""
        kind = cfg["TRSR_HISTORY"]
        if kind not in ("hierarchical", "recurrent"):
            return {}
        blocks, batch, tokens = cfg["MAX_BLOCKS"] or 20, cfg["SUMMARY_BATCH_SIZE"], cfg["SUMMARY_TOKENS"]
        out = {}
        for part, n in (("users", users), ("windows", windows)):
            if n:
                levels = (math.ceil(n * blocks / batch) + math.ceil(n / batch) if kind == "hierarchical"
                          else blocks * math.ceil(n / batch))
                out[(kind, part)] = levels * tokens
        return out

    def __init__(self, cfg: dict, protocol, device: str = "cpu"):
        super().__init__(cfg, protocol, device)
        self.describe = prompts.describe_item(self.catalog)
        self.sequences = {int(u): list(s) for u, s in zip(protocol.seqs["user_id"], protocol.seqs["items"])}
        self.base_name = f"{cfg['MODEL']}@{weights_digest(self.model)}"  # the base weights, before any adapter
        self._summarizer = None  # SUMMARY_MODEL's (model, tokenizer, name), once loaded
        self.summary_texts: dict[str, str] = {}
        self.summary_counts: dict[str, int] = {}
        self.summary_seconds = self.rank_summary_seconds = 0.0

    @classmethod
    def run_key(cls, cfg: dict, protocol) -> dict:
        """The shared run key, plus the weights of a SUMMARY_MODEL (a folder replaced under its name makes new runs)."""
        key = super().run_key(cfg, protocol)
        return {**key, "summary_weights": model_identity(cfg["SUMMARY_MODEL"])} if cfg["SUMMARY_MODEL"] else key

    def base_key(self) -> dict:
        """The shared checkpoint base key, plus a SUMMARY_MODEL's weights (its summaries are in the training prompts)."""
        key, name = super().base_key(), self.cfg["SUMMARY_MODEL"]
        return {**key, "summary_weights": model_identity(name)} if name else key

    def summarizer(self):
        """(model, tokenizer, name@weights digest) that write the summaries: SUMMARY_MODEL, loaded once on the
        method's device and frozen, or the base model (its adapter is disabled while it summarises)."""
        name = self.cfg["SUMMARY_MODEL"]
        if name is None:
            return self.model, self.tokenizer, self.base_name
        if self._summarizer is None:
            model, tokenizer = load_llm(name, self.device, default_dtype(self.device, self.cfg["DTYPE"]),
                                        tiny_texts=self.corpus(), seed=self.cfg["SEED"])
            model.requires_grad_(False)
            self._summarizer = (model, tokenizer, f"{name}@{weights_digest(model)}")
        return self._summarizer

    @property
    def summarizer_name(self) -> str:
        """The summariser's name and weights digest: it keys the summary cache."""
        return self.summarizer()[2]

    @property
    def pointwise(self) -> bool:
        """Whether each candidate gets its own yes/no prompt."""
        return self.cfg["TRSR_SCORING"] == "pointwise"

    def corpus(self) -> list[str]:
        """Titles, genres, years and every template's words."""
        items = self.protocol.data.items
        words = [prompts.SYSTEM, prompts.POINTWISE_SYSTEM, prompts.QUESTION, prompts.POINTWISE_QUESTION, "Preference summary: Recently "
                 "watched, oldest first: Candidates: Candidate: yes no (nothing yet)", summarize.SYSTEM, summarize.BLOCK, summarize.MERGE,
                 summarize.UPDATE, summarize.FALLBACK] + list(prompts.ANSWERS) * 50  # yes, no: one token each
        texts = words + [str(v) for col in ("title", "year", "text") if col in items for v in items[col]]
        if "genres" in items:
            texts += [", ".join(map(str, g)) for g in items["genres"]]
        return [str(t) for t in texts]

    def histories(self, view: pd.DataFrame) -> list[list[int]]:
        """Each row's whole history: the user's items before the target (`position`)."""
        if "position" not in view:
            raise ValueError("LLM-TRSR needs the view's `position` column (the target's index in the user's sequence)")
        out = []
        for u, p, t in zip(view["user_id"], view["position"], view["target"]):
            seq = self.sequences[int(u)]
            if int(p) >= len(seq) or seq[int(p)] != int(t):
                raise ValueError(f"user {u}: item {p} of the sequence is not the target {t}: the view does not come "
                                 f"from this protocol")
            out.append(seq[:int(p)])
        return out

    def recent(self, history: list[int]) -> list[int]:
        """The RECENT_ITEMS most recent items."""
        k = self.cfg["RECENT_ITEMS"]
        return list(history[-k:]) if k else []

    def listed(self, history: list[int]) -> list[int]:
        """The items written out in the prompt: every item (full) or the recent ones."""
        return list(history) if self.cfg["TRSR_HISTORY"] == "full" else self.recent(history)

    def summaries(self, view: pd.DataFrame, histories: list[list[int]]) -> list[str]:
        """Each row's preference summary of its whole history by the summariser, once per (user, position)."""
        method = self.cfg["TRSR_HISTORY"]
        if method not in summarize.METHODS:
            return [summarize.EMPTY_SUMMARY] * len(view)
        keys = [f"{int(u)}-{int(p)}" for u, p in zip(view["user_id"], view["position"])]
        todo = {k: h for k, h in zip(keys, histories) if k not in self.summary_texts}
        if todo:
            model, tokenizer, name = self.summarizer()
            own = model is self.model and hasattr(model, "disable_adapter")
            start = time.time()
            model.eval()
            with model.disable_adapter() if own else nullcontext():
                out = summarize.summarize_users(model, tokenizer, todo, self.describe, method, self.cfg["BLOCK_SIZE"],
                                                self.cfg["MAX_BLOCKS"], 0, self.cfg["SUMMARY_TOKENS"],
                                                self.cfg["SUMMARY_BATCH_SIZE"], model_name=name)
            self.summary_seconds += time.time() - start
            for k, v in out.report.items():
                self.summary_counts[k] = self.summary_counts.get(k, 0) + v
            self.summary_texts.update(out)
        return [self.summary_texts[k] for k in keys]

    def prompts(self, view: pd.DataFrame, epoch: int | None = None) -> pd.DataFrame:
        """Evaluation prompts (epoch=None) or training prompts (pointwise: 1 positive : 1 negative per window)."""
        histories = self.histories(view)
        return prompts.build_examples(view, [self.listed(h) for h in histories], self.summaries(view, histories),
                                 self.catalog, self.tokenizer, self.cfg["MAX_PROMPT_TOKENS"], self.pointwise,
                                 train=epoch is not None, seed=self.cfg["SEED"], epoch=epoch or 0,
                                 show_candidates=is_listed(self.cfg["PROMPT_FORM"]))

    def prompt_tokens(self, view: pd.DataFrame) -> pd.DataFrame:
        """Per row, listwise prompt tokens with the whole history listed (uncut), the recent items only, and (when
        TRSR_HISTORY summarises) the summary + recent items; `history_items` is the whole history's length."""
        histories = self.histories(view)
        recent = [self.recent(h) for h in histories]
        variants = {"whole history": (histories, [""] * len(view)), "recent items": (recent, [""] * len(view))}
        if self.cfg["TRSR_HISTORY"] in summarize.METHODS:
            variants["summary + recent"] = (recent, self.summaries(view, histories))
        out = {"user_id": view["user_id"].to_numpy(), "history_items": [len(h) for h in histories]}
        for name, (listed, summaries) in variants.items():
            texts = [prompts.listwise_prompt(self.tokenizer, s, items, c, self.describe, self.catalog.title,
                                             is_listed(self.cfg["PROMPT_FORM"]))
                     for s, items, c in zip(summaries, listed, view["candidates"])]
            out[name] = prompt_lengths(self.tokenizer, texts)
        return pd.DataFrame(out)

    def n_orders(self, scorer: str) -> int:
        """Candidate orders per user: one for pointwise prompts (each candidate is asked about alone)."""
        return 1 if self.pointwise else super().n_orders(scorer)

    def rank(self, view: pd.DataFrame, scorer: str | None = None) -> pd.DataFrame:
        """As every LLM method; the time spent generating the view's summaries is kept apart (`rank_summary_seconds`)."""
        before = self.summary_seconds
        ranks = super().rank(view, scorer)
        self.rank_summary_seconds = self.summary_seconds - before
        return ranks

    def generate_then_match(self, view: pd.DataFrame) -> dict:
        """Listwise only: a pointwise prompt names one candidate, so there is nothing to generate and match."""
        return {} if self.pointwise else super().generate_then_match(view)

    def report(self, view: pd.DataFrame) -> dict:
        """The shared report plus the history lengths and the summaries' counts and generation time."""
        out = super().report(view)
        lengths = [len(h) for h in self.histories(view)]
        out["history_items"] = {"mean": float(np.mean(lengths)), "median": float(np.median(lengths)),
                                "max": int(max(lengths))}
        if self.summary_counts:
            generated = self.summary_counts.get("generated", 0)
            out["summaries"] = {**self.summary_counts, "summarizer": self.summarizer_name,
                                "seconds": round(self.summary_seconds, 2),
                                "seconds_while_ranking": round(self.rank_summary_seconds, 2),
                                "seconds_per_generated": round(self.summary_seconds / generated, 3) if generated
                                else None}
        return out
