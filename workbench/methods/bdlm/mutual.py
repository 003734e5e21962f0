"""Mutual learning (BDLM): each model is pulled toward the other's distribution over a window's 20 candidates.

    p_m(c) = softmax_c(s_m(c) / T)         s_llm: the title's log-likelihood (the ranking score), s_dom: domain logit
    KL term = T^2 * mean_rows sum_c p_teacher(c) * (log p_teacher(c) - log p_student(c))

LLM side: `MutualSFTTrainer`, LM loss + KL_LLM * KL(p_dom || p_llm), s_llm from the batched engine with gradients
(`engine.batch_logp`: the very scores ranking uses).  It records p_llm for every row it trains on, which is the teacher
of the domain side: `domain_phase`, next-item cross-entropy + KL_DOMAIN * KL(p_llm || p_dom) (`seqrec.train_step`).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ...llm.likelihood import score_items
from ...llm.listwise import RankingSFTTrainer
from .bridge import candidate_logits
from ..baselines.models import pad_histories, train_step
from ...results import load_tensors

RECORD_FILE = "llm_logp.pt"  # in each checkpoint of an LLM phase: the recorded p_llm per row so far


def distill_kl(student_scores: torch.Tensor, teacher_logp: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * mean over rows of KL(teacher || softmax(student_scores / T)); teacher_logp: log-probs at T, same shape."""
    if student_scores.shape != teacher_logp.shape:
        raise ValueError(f"student scores {tuple(student_scores.shape)} and teacher log-probs "
                         f"{tuple(teacher_logp.shape)} differ: both must list the same candidates of the same rows")
    student = F.log_softmax(student_scores.float() / temperature, dim=-1)
    teacher = teacher_logp.to(student.device).float()
    return temperature ** 2 * (teacher.exp() * (teacher - student)).sum(-1).mean()


def log_probs(scores, temperature: float) -> torch.Tensor:
    """log softmax(scores / T) over each row's candidates."""
    return F.log_softmax(torch.as_tensor(np.asarray(scores), dtype=torch.float32) / temperature, dim=-1)


class MutualSFTTrainer(RankingSFTTrainer):
    """Soft-token SFT on LLM_OBJECTIVE whose loss adds KL_LLM * KL(p_dom || p_llm) on each row's candidates (module
    docstring) and records each row's p_llm (log-probs, detached) for the domain side.

    Args:
        ranking: per row id, the engine item (prompt and candidate title token ids) that ranking would score, and
            LLM_OBJECTIVE (`listwise.Ranking`).
        teacher: (rows, candidates) domain log-probs at `temperature`, or None (no KL term: record only).
        kl_weight: weight of the KL term (0: record p_llm without a gradient).
        temperature: distillation temperature T.
        record: row id -> latest p_llm log-probs (filled in place; saved with each checkpoint and restored by a
            resume, so a resumed phase hands the domain side the distributions an uninterrupted one would).
    """

    def __init__(self, *args, ranking, teacher: torch.Tensor | None, kl_weight: float, temperature: float,
                 record: dict, **kwargs):
        super().__init__(*args, ranking=ranking, **kwargs)
        self.teacher, self.kl_weight = teacher, kl_weight
        self.temperature, self.record = temperature, record
        if kl_weight and teacher is None:
            raise ValueError("a KL weight without the domain model's log-probs: give `teacher`")

    def wants_scores(self) -> bool:
        """Every step scores its rows' candidates: p_llm is recorded for the domain side."""
        return True

    def scores_need_grad(self) -> bool:
        """Gradients through the scores for the KL term (and the listwise term)."""
        return bool(self.kl_weight) or super().scores_need_grad()

    def _save(self, output_dir=None, state_dict=None):
        super()._save(output_dir, state_dict)
        if self.args.should_save:  # the distributions recorded so far: a resume from here records the rest
            torch.save(dict(self.record), Path(output_dir or self.args.output_dir) / RECORD_FILE)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        path = Path(resume_from_checkpoint) / RECORD_FILE
        if path.exists():
            self.record.update(load_tensors(path, remedy=f"delete {Path(resume_from_checkpoint).parent}"))

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        out = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)  # fills self.batch_scores
        total = out[0] if return_outputs else out
        steps = self.current_gradient_accumulation_steps if num_items_in_batch is not None else 1  # as TRL's aux
        rows, scores = inputs["row"].tolist(), self.batch_scores
        logp = F.log_softmax(scores.detach().float() / self.temperature, dim=-1).cpu()
        self.record.update({r: logp[b] for b, r in enumerate(rows)})
        if self.kl_weight:
            kl = distill_kl(scores, self.teacher[rows], self.temperature)
            total = total + self.kl_weight * kl / steps
            self.log_terms({"loss_kl": kl})
        return (total, out[1]) if return_outputs else total


@torch.no_grad()
def score_rows(model, tokenizer, embedder, items: list, soft_ids, reduce: str, temperature: float) -> torch.Tensor:
    """(rows, candidates) LLM log-probs at `temperature` of ranking items (`listwise.Ranking.items`; soft vectors from
    their rows' soft_ids), scored
    as ranking scores them (the eval-mode model, stored order)."""
    embedder.eval()
    device = next(embedder.parameters()).device
    rows = [dataclasses.replace(it, soft=embedder(torch.as_tensor(list(ids), dtype=torch.long, device=device)))
            for it, ids in zip(items, soft_ids)]
    scores = score_items(model, rows, tokenizer.pad_token_id, reduce, progress=False)
    return log_probs(np.stack(scores), temperature)


def domain_phase(domain, windows: pd.DataFrame, steps: int, cfg: dict, seed: int, device: str = "cpu",
                 kl_view: pd.DataFrame | None = None, teacher: torch.Tensor | None = None, kl_weight: float = 0.0,
                 progress: bool = True) -> pd.DataFrame:
    """`steps` Adam steps of the domain model: next-item cross-entropy on seeded batches of the training windows, plus
    kl_weight * KL(p_llm || p_dom) on a seeded batch of `kl_view` rows (the LLM's windows, their candidates) whose
    LLM log-probs are `teacher`.  Parameters with requires_grad False (frozen shared tables) stay as they are.
    Batches and dropout are drawn from `seed` alone, so a phase run after a resume draws what it would have drawn."""
    if kl_weight and (kl_view is None or teacher is None or len(kl_view) != len(teacher)):
        raise ValueError("the domain KL term needs the LLM's windows and one row of LLM log-probs per window")
    torch.manual_seed(seed)  # the domain model's dropout: the same draws whatever ran before (a resumed run too)
    domain.to(device).train()
    params = [p for p in domain.parameters() if p.requires_grad]
    if not params:  # MF on frozen tables: nothing of the domain model can learn
        print("domain phase skipped: the domain model has no trainable parameters (MF with frozen shared tables)")
        domain.eval()
        return pd.DataFrame(columns=["domain_step", "loss_ce", "loss_kl"], dtype=float)
    opt = torch.optim.Adam(params, lr=cfg["LEARNING_RATE"])
    gen = torch.Generator().manual_seed(seed)
    seq = pad_histories(windows["history"], domain.max_len)
    target = torch.tensor(windows["target"].tolist(), dtype=torch.long)
    users = torch.tensor(windows["user_id"].tolist(), dtype=torch.long)
    log, size = [], cfg["BATCH_SIZE"]
    for step in tqdm(range(1, steps + 1), desc="domain model", disable=not progress, mininterval=10):
        idx = torch.randint(len(seq), (size,), generator=gen)
        extra = None
        if kl_weight:
            rows = torch.randint(len(kl_view), (min(size, len(kl_view)),), generator=gen).numpy()
            extra = lambda model: kl_weight * distill_kl(candidate_logits(model, kl_view.iloc[rows], device),
                                                         teacher[rows], cfg["KL_TEMPERATURE"])
        terms = train_step(domain, opt, seq[idx].to(device), target[idx].to(device), users[idx].to(device), extra,
                           where=f"domain step {step}")
        log.append({"domain_step": step, "loss_ce": terms["ce"], "loss_kl": terms.get("extra", 0.0) / kl_weight
                    if kl_weight else None})
    domain.eval()
    return pd.DataFrame(log)
