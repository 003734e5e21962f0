"""LLM-TRSR's recommender: long histories summarised by an LLM, then a LoRA-tuned recommender prompt.

The history older than the RECENT_ITEMS most recent items is cut into blocks of BLOCK_SIZE (the last MAX_BLOCKS) and
summarised by the base LLM, hierarchically or recurrently (`summarize.py`, cached on disk); the prompt holds the
summary, the recent items and the candidate(s) (`prompts.py`).  TRSR_HISTORY = full | recent are the
ablation's variants without a summary.  Training windows get the summary of their own history (never of later
items).  Reproduce: `python -m workbench run 05` (summaries, method) and `python -m workbench run 06` (ablation).
"""
from __future__ import annotations

import hashlib
import time
from contextlib import nullcontext

import numpy as np
import pandas as pd
import torch

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
    """Preference summary + recent items + candidates, LoRA SFT; listwise title likelihood or pointwise P(yes)."""
    method_params = ("TRSR_HISTORY", "TRSR_SCORING", "BLOCK_SIZE", "MAX_BLOCKS", "RECENT_ITEMS", "SUMMARY_TOKENS")

    def __init__(self, cfg: dict, protocol, device: str = "cpu"):
        super().__init__(cfg, protocol, device)
        self.describe = prompts.describe_item(self.catalog)
        self.sequences = {int(u): list(s) for u, s in zip(protocol.seqs["user_id"], protocol.seqs["items"])}
        self.summarizer_name = f"{cfg['MODEL']}@{weights_digest(self.model)}"
        self.summary_texts: dict[str, str] = {}
        self.summary_counts: dict[str, int] = {}
        self.summary_seconds = self.rank_summary_seconds = 0.0

    @property
    def pointwise(self) -> bool:
        """Whether each candidate gets its own yes/no prompt."""
        return self.cfg["TRSR_SCORING"] == "pointwise"

    def corpus(self) -> list[str]:
        """Titles, genres, years and every template's words."""
        items = self.protocol.data.items
        words = [prompts.SYSTEM, prompts.POINTWISE_SYSTEM, prompts.QUESTION, prompts.POINTWISE_QUESTION, "Preference summary: Recently "
                 "watched, oldest first: Candidates: Candidate: yes no (nothing yet)", summarize.SYSTEM, summarize.BLOCK, summarize.MERGE,
                 summarize.UPDATE, summarize.FALLBACK]
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
        """Each row's preference summary by the base LLM (LoRA disabled), generated once per (user, position)."""
        method = self.cfg["TRSR_HISTORY"]
        if method not in summarize.METHODS:
            return [summarize.EMPTY_SUMMARY] * len(view)
        keys = [f"{int(u)}-{int(p)}" for u, p in zip(view["user_id"], view["position"])]
        todo = {k: h for k, h in zip(keys, histories) if k not in self.summary_texts}
        if todo:
            base = self.model.disable_adapter() if hasattr(self.model, "disable_adapter") else nullcontext()
            start = time.time()
            self.model.eval()
            with base:
                out = summarize.summarize_users(self.model, self.tokenizer, todo, self.describe, method,
                                        self.cfg["BLOCK_SIZE"], self.cfg["MAX_BLOCKS"], self.cfg["RECENT_ITEMS"],
                                        self.cfg["SUMMARY_TOKENS"], self.cfg["SUMMARY_BATCH_SIZE"],
                                        model_name=self.summarizer_name)
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
                                 train=epoch is not None, seed=self.cfg["SEED"], epoch=epoch or 0)

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
            texts = [prompts.listwise_prompt(self.tokenizer, s, items, c, self.describe, self.catalog.title)
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
