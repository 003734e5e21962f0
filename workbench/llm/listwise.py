"""A ranking objective beside the papers' SFT (LLM_OBJECTIVE): cross-entropy over each training row's candidates.

    sft       the papers' loss: the answer's token log-likelihood (TRL SFTTrainer, completion only)
    listwise  -log softmax_c(s(c))[target]: s(c) is candidate c's title log-likelihood after the row's prompt, the
              very score ranking sorts by (`likelihood.batch_logp`, with gradients), so training moves the ranks
    both      the sum of the two

One trainer serves every LLM method: `RankingSFTTrainer` adds the term to soft-token and plain rows alike, and the
methods' own trainers (RSLLM's contrastive terms, BDLM's KL term) build on it.  With `listwise` alone the LM forward
pass is skipped unless a subclass needs its hidden states (`lm_forward`).
Reproduce the learning curve that compares the objectives: `python benchmarks/learning_curve.py`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pandas as pd
import torch
import torch.nn.functional as F

from . import softtokens
from .likelihood import Item, batch_logp, make_items, masked_attention
from .sft import SoftTokenSFTTrainer

OBJECTIVES = ("sft", "listwise", "both")


@dataclass
class Ranking:
    """What the ranking term scores for each training row (by its `row` column): the engine item (prompt and
    candidate title ids, as ranking scores them), the target's index among the item's candidates; the objective, the
    title reduction (SCORE_REDUCE) and the listwise softmax's temperature (LISTWISE_TEMPERATURE)."""
    items: list[Item]
    targets: list[int]
    objective: str = "sft"
    reduce: str = "sum"
    temperature: float = 1.0

    def __post_init__(self):
        if self.objective not in OBJECTIVES:
            raise ValueError(f"LLM_OBJECTIVE must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        if not self.temperature > 0:
            raise ValueError(f"LISTWISE_TEMPERATURE must be > 0, got {self.temperature!r}")
        if len(self.items) != len(self.targets):
            raise ValueError(f"{len(self.items)} ranking items for {len(self.targets)} targets: give one of each per row")
        for k, (item, target) in enumerate(zip(self.items, self.targets)):
            if not 0 <= target < len(item.candidates):
                raise ValueError(f"row {k}: target index {target} outside its {len(item.candidates)} candidates")


def ranking_rows(tokenizer, rows: pd.DataFrame, catalog, objective: str, reduce: str = "sum",
                 terminator: str | None = None, temperature: float = 1.0) -> tuple[pd.DataFrame, Ranking]:
    """SFT rows (prompt, completion, candidates, target) with a `row` column, and their `Ranking`: each row's prompt
    followed by each candidate's title (ended as ranking ends it: `terminator`, None = end-of-turn)."""
    missing = [c for c in ("prompt", "candidates", "target") if c not in rows]
    if missing:
        raise ValueError(f"the ranking objective needs the column(s) {', '.join(missing)} in the SFT rows")
    titles = [[catalog.title(i) for i in cands] for cands in rows["candidates"]]
    targets = []
    for cands, target in zip(rows["candidates"], rows["target"]):
        cands = [int(c) for c in cands]
        if cands.count(int(target)) != 1:
            raise ValueError(f"target {target} is not among its row's candidates once: rank the view's candidates")
        targets.append(cands.index(int(target)))
    items = make_items(tokenizer, rows["prompt"], titles, terminator=terminator)
    return rows.assign(row=range(len(rows))), Ranking(items, targets, objective, reduce, temperature)


def with_candidates(rows: pd.DataFrame, view: pd.DataFrame) -> pd.DataFrame:
    """Prompt rows of a view, one per view row, with that row's candidates and target (refused if not aligned)."""
    if len(rows) != len(view) or ("user_id" in rows and list(rows["user_id"]) != list(view["user_id"])):
        raise ValueError(f"{len(rows)} prompt rows for {len(view)} windows: a ranking objective needs one prompt "
                         f"per window (pointwise rows ask about one candidate each: use TRSR_SCORING=listwise)")
    return rows.assign(candidates=view["candidates"].to_numpy(), target=view["target"].to_numpy())


def listwise_loss(scores: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Mean over rows of -log softmax(scores / temperature)[target]; scores (rows, candidates), targets (rows,)
    indices.  The temperature keeps the ranking's order and softens a softmax that summed title log-likelihoods
    (tens of nats apart) make nearly one-hot."""
    if scores.ndim != 2 or scores.shape[0] != targets.shape[0]:
        raise ValueError(f"scores {tuple(scores.shape)} and targets {tuple(targets.shape)}: one row of candidate "
                         f"scores per target")
    return F.cross_entropy(scores.float() / temperature, targets.to(scores.device))


class RankingSFTTrainer(SoftTokenSFTTrainer):
    """SFT rows with a `row` column (and soft tokens, if the rows have them) trained on LLM_OBJECTIVE: the LM loss,
    the listwise cross-entropy over the row's candidates, or both; each term is logged (`loss_lm`, `loss_listwise`).

    Args:
        ranking: the rows' `Ranking` (None: the LM loss alone, the rows need no `row` column).
    Subclasses that add terms read `self.batch_scores` (the candidate scores of the current batch, when computed) and
    set `lm_forward = True` if they need the LM forward pass even under `listwise`.
    """
    row_columns = ("soft_ids", "row")
    lm_forward = False

    def __init__(self, *args, ranking: Ranking | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.ranking, self.batch_scores = ranking, None

    @property
    def objective(self) -> str:
        """sft | listwise | both (sft without a Ranking)."""
        return self.ranking.objective if self.ranking is not None else "sft"

    def wants_scores(self) -> bool:
        """Whether this step scores the batch's candidates (the listwise term; subclasses add their own reasons)."""
        return self.objective != "sft"

    def scores_need_grad(self) -> bool:
        """Whether the candidate scores carry gradients (only a term trained on them needs it)."""
        return self.objective != "sft"

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        steps = self.current_gradient_accumulation_steps if num_items_in_batch is not None else 1  # as TRL's aux
        out, terms, total = None, {}, None
        if self.objective != "listwise" or self.lm_forward:
            out = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            lm = out[0] if return_outputs else out
            terms["loss_lm"] = lm.detach() * steps
            total = lm if self.objective != "listwise" else lm * 0.0
        self.batch_scores = None
        if self.wants_scores():
            rows = inputs["row"].tolist()
            with torch.set_grad_enabled(self.scores_need_grad() and torch.is_grad_enabled()):
                self.batch_scores = self.candidate_scores(inputs["soft_ids"], rows)
            if self.objective != "sft":
                targets = torch.tensor([self.ranking.targets[r] for r in rows], dtype=torch.long)
                terms["loss_listwise"] = listwise_loss(self.batch_scores, targets, self.ranking.temperature)
                part = terms["loss_listwise"] / steps
                total = part if total is None else total + part
        self.log_terms(terms)
        return (total, out[1] if out is not None else None) if return_outputs else total

    def log_terms(self, terms: dict) -> None:
        """Log each loss term beside the total (TRL's per-step metrics)."""
        mode = "train" if self.model.training else "eval"
        for name, value in terms.items():
            self._metrics[mode][name].append(self.accelerator.gather_for_metrics(value.detach()).mean().item())

    def candidate_scores(self, soft_ids: torch.Tensor, rows: list[int]) -> torch.Tensor:
        """(batch, candidates) title log-likelihoods of the rows' candidates after their prompts (soft tokens in)."""
        if self.ranking is None:
            raise ValueError("candidate scores need the rows' Ranking: pass ranking= to the trainer")
        items = [self.ranking.items[r] for r in rows]
        embedder = self.model.soft_embedder
        if embedder is not None:
            items = [dataclasses.replace(it, soft=embedder(ids[ids != softtokens.PAD_ID]))
                     for it, ids in zip(items, soft_ids)]
        with masked_attention(self.model):
            scores = batch_logp(self.model, items, self.processing_class.pad_token_id, self.ranking.reduce)
        if len({len(s) for s in scores}) != 1:
            raise ValueError("rows list different numbers of candidates: a batch compares equal-length lists")
        return torch.stack(scores)
