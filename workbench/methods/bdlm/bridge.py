"""BDLM's information-sharing module: user and item tables that a domain model reads directly and the LLM reads through
the projector as soft tokens (`projector.IDEmbedder` given these very tables), so training either model changes what
the other reads.

    domain logits(u, history) = (encode(history) + user_u) . item_i      (SASRec / GRU4Rec encoder; MF: no encoder)

From a trained SASRec the item rows are its item table and the user rows start at zero (the domain model starts as
that SASRec exactly; the user rows then learn what the sequence encoder misses); from MF both tables are MF's own.
"""
from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..baselines.models import pad_histories


class SharedTables(nn.Module):
    """User and item embedding tables (item row 0 = padding), trainable unless frozen with `requires_grad_(False)`.

    Args:
        users: (n_users, d) initial user rows (indexed by user id).
        items: (n_items, d) initial item rows (indexed by item id).
    """

    def __init__(self, users: torch.Tensor, items: torch.Tensor):
        super().__init__()
        if users.shape[1] != items.shape[1]:
            raise ValueError(f"user rows have width {users.shape[1]} but item rows {items.shape[1]}: the shared "
                             f"tables need one width")
        self.users = nn.Embedding.from_pretrained(users.detach().float().clone(), freeze=False)
        self.items = nn.Embedding.from_pretrained(items.detach().float().clone(), freeze=False, padding_idx=0)

    @property
    def dim(self) -> int:
        """The tables' width."""
        return self.items.embedding_dim


class DomainModel(nn.Module):
    """A conventional recommender whose embeddings are the shared tables (see the module docstring).

    Args:
        tables: the information-sharing module.
        encoder: a sequential encoder with `encode(seq)` and an `items` table (SASRec, GRU4Rec), re-pointed at the
            shared item table; None for MF (the user row alone scores items).
        max_len: history length the encoder reads.
    """

    def __init__(self, tables: SharedTables, encoder: nn.Module | None = None, max_len: int = 10):
        super().__init__()
        if encoder is not None:
            width = encoder.items.embedding_dim
            if width != tables.dim or encoder.items.num_embeddings != tables.items.num_embeddings:
                raise ValueError(f"the domain model's item table is {encoder.items.num_embeddings} x {width} but the "
                                 f"shared tables are {tables.items.num_embeddings} x {tables.dim}: build the tables "
                                 f"from this domain model (bridge.from_recommender)")
            encoder.items = tables.items
        self.tables, self.encoder = tables, encoder
        self.max_len = encoder.max_len if encoder is not None else max_len

    def forward(self, seq: torch.Tensor, users: torch.Tensor | None = None) -> torch.Tensor:
        """Logits over all items."""
        if users is None:
            raise ValueError("the domain model reads user rows: pass the user ids (a `user_id` column)")
        user = self.tables.users(users.to(self.tables.users.weight.device))
        hidden = user if self.encoder is None else self.encoder.encode(seq) + user
        return hidden @ self.tables.items.weight.T


def from_recommender(model: nn.Module, n_users: int) -> DomainModel:
    """A domain model (with new shared tables) from a fitted baseline network: SASRec/GRU4Rec (user rows at zero, the
    network copied) or MF (its own user and item tables)."""
    if hasattr(model, "encode"):
        encoder = copy.deepcopy(model)
        tables = SharedTables(torch.zeros(n_users, encoder.items.embedding_dim), encoder.items.weight)
        return DomainModel(tables, encoder)
    if hasattr(model, "users"):
        if model.users.num_embeddings < n_users:
            raise ValueError(f"the MF model has {model.users.num_embeddings} user rows, the data set needs {n_users}")
        return DomainModel(SharedTables(model.users.weight, model.items.weight), None, model.max_len)
    raise ValueError(f"{type(model).__name__} has no embeddings to share: use a SASRec, GRU4Rec or MF run")


def unshared(domain: DomainModel) -> DomainModel:
    """A copy of the domain model with its own tables (the no-sharing arm: the LLM keeps the originals)."""
    return copy.deepcopy(domain)


def candidate_logits(domain: DomainModel, view: pd.DataFrame, device=None) -> torch.Tensor:
    """(rows, candidates) logits of each row's candidates, in listed order; differentiable."""
    device = device or domain.tables.items.weight.device
    seq = pad_histories(view["history"], domain.max_len).to(device)
    users = torch.tensor(view["user_id"].tolist(), dtype=torch.long, device=device)
    cands = torch.as_tensor(np.asarray(view["candidates"].tolist()), dtype=torch.long, device=device)
    return domain(seq, users).gather(1, cands)
