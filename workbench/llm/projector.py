"""ID embeddings as LLM input: a conventional recommender's item table, a projector into the LLM's embedding space,
and the heads of the contrastive losses (RSLLM; the user rows serve a user-level soft token).

`IDEmbedder` is a soft-token embedder (`softtokens.py`): ids in, one LLM-width vector per id out.  Ids below
`n_items` are items; ids from `n_items` on are users (`user_key`), when a user table is given.
"""
from __future__ import annotations

import hashlib

import torch
from torch import nn


class Projector(nn.Module):
    """Two linear layers with a GELU between: d_id -> d_llm (hidden width d_llm), as LLaRA's MLP projector."""

    def __init__(self, d_id: int, d_llm: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_id, d_llm), nn.GELU(), nn.Linear(d_llm, d_llm))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Projected vectors, (n, d_llm)."""
        return self.net(x)

    @torch.no_grad()
    def calibrate(self, inputs: torch.Tensor, target_std: float) -> None:
        """Scale the output layer so that the outputs on `inputs` have the LLM's embedding std (an untrained
        projector's outputs are far larger than token embeddings, which starts training at a huge loss)."""
        out = self(inputs)
        scale = target_std / out.std().clamp(min=1e-12)
        self.net[-1].weight.mul_(scale)
        self.net[-1].bias.mul_(scale)


def user_key(user_id: int, n_items: int) -> int:
    """The soft id of a user-level token: users follow the items in the id space."""
    return n_items + int(user_id)


def table_digest(table: torch.Tensor) -> str:
    """A short digest of an embedding table's values: keys checkpoints to the exact ID embeddings."""
    return hashlib.sha256(table.detach().cpu().float().contiguous().numpy().tobytes()).hexdigest()[:10]


def _table(table, trainable: bool) -> nn.Embedding | None:
    """An embedding table: a given nn.Embedding itself (shared), a tensor copied, or None."""
    if table is None or isinstance(table, nn.Embedding):
        return table
    return nn.Embedding.from_pretrained(table.detach().float().clone(), freeze=not trainable)


class IDEmbedder(nn.Module):
    """Item (and optional user) ID embeddings -> projector -> LLM-width soft-token vectors; contrastive heads.

    Args:
        items: (n_items, d_id) item table from a trained recommender (row 0 = padding), copied; or an nn.Embedding,
            used as it is (shared with another model: BDLM's information-sharing module).
        d_llm: the LLM's hidden size.
        trainable: whether copied ID tables are tuned (False: frozen, only the projector and heads learn); a shared
            nn.Embedding keeps its own requires_grad.
        users: optional (n_users, d_id) user table (or shared nn.Embedding) for user-level tokens (ids n_items + user).
        target_std: std the projected vectors start with (the LLM's input-embedding std); None leaves the init.
    """

    def __init__(self, items, d_llm: int, trainable: bool = False, users=None, target_std: float | None = None):
        super().__init__()
        self.items, self.users = _table(items, trainable), _table(users, trainable)
        self.n_items, d_id = self.items.weight.shape
        if self.users is not None and self.users.embedding_dim != d_id:
            raise ValueError(f"the user table has width {self.users.embedding_dim} but the item table {d_id}: "
                             f"one projector maps both, give tables of one width")
        self.projector = Projector(d_id, d_llm)
        self.heads = nn.ModuleDict({"user": nn.Linear(d_llm, d_llm), "text": nn.Linear(d_llm, d_llm)})
        if target_std is not None:
            self.projector.calibrate(self.items.weight[1:], target_std)

    def id_vectors(self, ids: torch.Tensor) -> torch.Tensor:
        """The raw ID embeddings of item ids (< n_items) and user keys (>= n_items)."""
        ids = ids.to(self.items.weight.device)
        is_user = ids >= self.n_items
        if not is_user.any():
            return self.items(ids)
        if self.users is None:
            raise ValueError(f"soft id {int(ids[is_user][0])} is a user key but this embedder has no user table: "
                             f"give IDEmbedder a users table or use item ids below {self.n_items}")
        out = torch.empty(len(ids), self.items.embedding_dim, device=ids.device, dtype=self.items.weight.dtype)
        out[~is_user] = self.items(ids[~is_user])
        out[is_user] = self.users(ids[is_user] - self.n_items)
        return out

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Projected vectors for ids, (n, d_llm): what replaces their soft-token placeholders."""
        n_keys = self.n_items + (self.users.num_embeddings if self.users is not None else 0)
        if ids.numel() and (ids.min() < 0 or ids.max() >= n_keys):
            raise ValueError(f"soft ids must lie in [0, {self.n_items}) for items (users from {self.n_items} on), "
                             f"got {int(ids.min())}..{int(ids.max())}: the ID table does not match these items")
        return self.projector(self.id_vectors(ids))
