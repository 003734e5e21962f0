"""Contrastive alignment (RSLLM): InfoNCE, and the soft-token SFT trainer that adds two InfoNCE terms to the LM loss.

    loss = LM(target title | prompt) + LAMBDA_USER * InfoNCE(user_head(h_prompt), e_target)
                                     + LAMBDA_ITEM * InfoNCE(text_head(t_i), e_i)

h_prompt: the LLM's last hidden state at the prompt's last token; e_i: item i's projected ID embedding (its soft-token
vector); t_i: the LLM's last hidden states, mean-pooled over item i's title encoded alone.  Negatives of the user term
(USER_NCE_NEGATIVES): `candidates` (default), the row's own other candidates, every one of them in the prompt as the
target is, so the term can only be lowered by telling the target from items the prompt also shows; `batch` (the
first reading, kept to reproduce it), the other rows' targets, mostly absent from this prompt: a shortcut, since
recognising which vectors the prompt contains lowers it (tested).  The item term's negatives are the other items of
the batch.  Each term is logged separately (`loss_lm`, `loss_user_nce`, `loss_item_nce`).
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F

from ...llm import softtokens
from ...llm.listwise import RankingSFTTrainer
from ...llm.sft import is_peft


def info_nce(queries: torch.Tensor, keys: torch.Tensor, temperature: float,
             ids: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE with in-batch negatives: query i matches key i.

        s_ij = cos(q_i, k_j) / temperature
        L = -1/(2n) * sum_i [ log softmax_j(s_i.)_i + log softmax_j(s_.i)_i ]

    ids: optional label per row; a pair (i, j != i) with the same label is left out (not a false negative).
    """
    if len(queries) != len(keys):
        raise ValueError(f"{len(queries)} queries but {len(keys)} keys: InfoNCE pairs row i with row i")
    sims = F.normalize(queries.float(), dim=-1) @ F.normalize(keys.float(), dim=-1).T / temperature
    if ids is not None:
        same = (ids[:, None] == ids[None, :]) & ~torch.eye(len(ids), dtype=torch.bool, device=ids.device)
        sims = sims.masked_fill(same.to(sims.device), float("-inf"))
    target = torch.arange(len(sims), device=sims.device)
    return (F.cross_entropy(sims, target) + F.cross_entropy(sims.T, target)) / 2


def candidate_nce(queries: torch.Tensor, keys: torch.Tensor, target: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE of each query against its own row's keys: queries (B, d), keys (B, n, d), target (B,) the index of the
    positive among the row's n keys (the others are its negatives).

        s_ij = cos(q_i, k_ij) / temperature,   L = -1/B * sum_i log softmax_j(s_i.)_target_i
    """
    if keys.shape[:1] != queries.shape[:1] or keys.shape[-1] != queries.shape[-1] or target.shape != queries.shape[:1]:
        raise ValueError(f"queries {tuple(queries.shape)}, keys {tuple(keys.shape)} and targets "
                         f"{tuple(target.shape)} do not pair one row of keys and one target with each query")
    sims = (F.normalize(keys.float(), dim=-1) @ F.normalize(queries.float(), dim=-1).unsqueeze(-1)).squeeze(-1)
    return F.cross_entropy(sims / temperature, target.to(sims.device))


def backbone(model):
    """The transformer under the LM head (the module whose output is the last hidden state)."""
    base = model.get_base_model() if is_peft(model) else model
    return base.base_model


@contextmanager
def captured_hidden(model):
    """{'hidden': last hidden states of the backbone's latest forward pass inside the block}."""
    seen = {}
    handle = backbone(model).register_forward_hook(lambda module, args, out: seen.update(hidden=out[0]))
    try:
        yield seen
    finally:
        handle.remove()


def last_prompt_index(labels: torch.Tensor) -> torch.Tensor:
    """Per row, the prompt's last position: the one before the first completion token (labels != -100)."""
    answer = labels != -100
    if not answer.any(1).all():
        raise ValueError("a training row has no completion tokens: every row needs an answer to train on")
    return answer.float().argmax(1) - 1


NEGATIVES = ("candidates", "batch")


class ContrastiveSFTTrainer(RankingSFTTrainer):
    """Soft-token SFT whose loss adds the user-target and item ID-text InfoNCE terms (see the module docstring).

    Args:
        lambda_user: weight of InfoNCE(prompt's last hidden state through the user head, target's ID embedding).
        lambda_item: weight of InfoNCE(title's hidden states through the text head, item's ID embedding).
        temperature: InfoNCE temperature.
        titles: item id -> title text (what the item term encodes).
        align_items: at most this many of the batch's items enter the item term (a seeded sample per step).
        negatives: the user term's negatives: `candidates` (the row's own other candidates) or `batch` (the other
            rows' targets; a shortcut, see the module docstring).
    """
    row_columns = ("soft_ids", "row", "target_id", "candidate_ids")
    lm_forward = True  # the user term reads the LM pass's hidden states (under LLM_OBJECTIVE=listwise too)

    def __init__(self, *args, lambda_user: float, lambda_item: float, temperature: float, titles: dict,
                 align_items: int, negatives: str = "candidates", **kwargs):
        super().__init__(*args, **kwargs)
        if self.args.padding_free or self.args.packing:
            raise ValueError("the contrastive terms read each row's prompt end from a padded batch: use "
                             "SFT_PACKING=padded")
        self.lambda_user, self.lambda_item, self.temperature = lambda_user, lambda_item, temperature
        self.titles, self.align_items = titles, align_items
        if negatives not in NEGATIVES:
            raise ValueError(f"user-term negatives must be one of {', '.join(NEGATIVES)}, got {negatives!r}")
        self.negatives = negatives

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        with captured_hidden(self.model) as seen:
            out = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        lm = out[0] if return_outputs else out  # the LLM_OBJECTIVE loss (RankingSFTTrainer logs its terms)
        steps = self.current_gradient_accumulation_steps if num_items_in_batch is not None else 1  # as TRL's aux
        terms, total = {}, lm
        if self.lambda_user:
            terms["loss_user_nce"] = self.user_term(seen["hidden"], inputs)
            total = total + self.lambda_user * terms["loss_user_nce"] / steps
        if self.lambda_item:
            terms["loss_item_nce"] = self.item_term(inputs["soft_ids"])
            total = total + self.lambda_item * terms["loss_item_nce"] / steps
        self.log_terms(terms)
        return (total, out[1]) if return_outputs else total

    def user_term(self, hidden: torch.Tensor, inputs: dict) -> torch.Tensor:
        """InfoNCE between each row's prompt representation and its target's projected ID embedding, against the
        row's other candidates (or, with negatives=batch, the other rows' targets)."""
        embedder = self.model.soft_embedder
        rows = torch.arange(len(hidden), device=hidden.device)
        users = embedder.heads["user"](hidden[rows, last_prompt_index(inputs["labels"])].float())
        if self.negatives == "batch":
            return info_nce(users, embedder(inputs["target_id"]), self.temperature, inputs["target_id"])
        cands, target = inputs["candidate_ids"], inputs["target_id"]
        if (cands == softtokens.PAD_ID).any() or not (cands == target[:, None]).sum(1).eq(1).all():
            raise ValueError("every row must list its target once among candidate_ids, all rows as many candidates")
        keys = embedder(cands.reshape(-1)).reshape(*cands.shape, -1)
        return candidate_nce(users, keys, (cands == target[:, None]).float().argmax(1), self.temperature)

    def item_term(self, soft_ids: torch.Tensor) -> torch.Tensor:
        """InfoNCE between items' title representations and their projected ID embeddings (the batch's items)."""
        embedder = self.model.soft_embedder
        ids = soft_ids[(soft_ids != softtokens.PAD_ID) & (soft_ids < embedder.n_items)].unique()
        if len(ids) > self.align_items:
            gen = torch.Generator().manual_seed(int(self.args.seed) * 1_000_003 + int(self.state.global_step))
            ids = ids[torch.randperm(len(ids), generator=gen)[:self.align_items].to(ids.device)].sort().values
        if len(ids) < 2:
            return torch.zeros((), device=soft_ids.device)
        text = embedder.heads["text"](self.title_states(ids).float())
        return info_nce(text, embedder(ids), self.temperature)

    def title_states(self, ids: torch.Tensor) -> torch.Tensor:
        """The LLM's last hidden states mean-pooled over each item's title, encoded alone (right-padded)."""
        tok = self.processing_class
        encoded = [tok(self.titles[int(i)], add_special_tokens=False)["input_ids"] for i in ids]
        width = max(map(len, encoded))
        input_ids = torch.full((len(encoded), width), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros(len(encoded), width, dtype=torch.long)
        for row, seq in enumerate(encoded):
            input_ids[row, :len(seq)], mask[row, :len(seq)] = torch.tensor(seq), 1
        device = ids.device
        hidden = backbone(self.model)(input_ids=input_ids.to(device), attention_mask=mask.to(device))[0]
        weights = mask.to(device=device, dtype=hidden.dtype).unsqueeze(-1)
        return (hidden * weights).sum(1) / weights.sum(1)
