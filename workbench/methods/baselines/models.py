"""Conventional recommenders: Popularity, SASRec (causal self-attention), GRU4Rec and matrix factorisation, in PyTorch.

All score every item from a left-padded history (0 = padding) and the user id (`forward(seq, users)`: the sequential
models ignore the user, MF reads only the user), and train with full-softmax cross-entropy on the next item of each
training window, early-stopped on validation NDCG@10 (sampled, 20 candidates).
Reproduce: `python -m workbench run 02 --profile cpu`.
"""
from __future__ import annotations

import copy
import math

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from ... import metrics, process
from ...data.splits import item_counts


def pad_histories(histories, length: int) -> torch.Tensor:
    """Left-pad (or cut from the oldest end) each history to `length`; 0 is padding."""
    out = torch.zeros(len(histories), length, dtype=torch.long)
    for row, hist in enumerate(histories):
        hist = list(hist)[-length:]
        if not hist:
            raise ValueError(f"history {row} is empty: every user needs at least one item before the target")
        out[row, length - len(hist):] = torch.as_tensor(hist, dtype=torch.long)
    return out


class Popularity:
    """Scores each item by its number of interactions in the training part."""

    def __init__(self, n_items: int):
        self.counts = np.zeros(n_items, dtype=float)

    def fit(self, train_sequences) -> "Popularity":
        """Count item occurrences over all training sequences."""
        self.counts = self.counts + item_counts(train_sequences, len(self.counts))
        return self

    def all_scores(self, histories) -> np.ndarray:
        """The same popularity vector for every user (padding id 0 scores -inf)."""
        scores = np.tile(self.counts, (len(histories), 1))
        scores[:, 0] = -np.inf
        return scores


def init_embeddings(*tables: nn.Embedding, std: float = 0.02) -> None:
    """Small normal init (N(0, 1) makes the tied softmax start saturated: SASRec stalled at Popularity's level)."""
    for table in tables:
        nn.init.normal_(table.weight, std=std)
        if table.padding_idx is not None:
            with torch.no_grad():
                table.weight[table.padding_idx].zero_()


class SASRec(nn.Module):
    """Self-attentive sequential recommendation (Kang & McAuley 2018), pre-LN blocks, tied item embeddings."""

    def __init__(self, n_items: int, max_len: int, dim: int = 64, layers: int = 2, heads: int = 2, dropout: float = 0.2):
        super().__init__()
        self.max_len, self.heads = max_len, heads
        self.items = nn.Embedding(n_items, dim, padding_idx=0)
        self.positions = nn.Embedding(max_len, dim)
        self.dropout = nn.Dropout(dropout)
        block = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=dim, dropout=dropout, batch_first=True,
                                           norm_first=True, activation="gelu")
        self.blocks = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        init_embeddings(self.items, self.positions)

    def _mask(self, seq: torch.Tensor) -> torch.Tensor:
        """Causal mask that also hides padding keys; a padding query sees itself (no all-masked rows, no NaN)."""
        n = seq.shape[1]
        causal = torch.ones(n, n, dtype=torch.bool, device=seq.device).tril()
        allowed = causal & (seq != 0)[:, None, :]
        allowed = allowed | torch.eye(n, dtype=torch.bool, device=seq.device)
        return (~allowed).repeat_interleave(self.heads, dim=0)

    def encode(self, seq: torch.Tensor) -> torch.Tensor:
        """User representation: the output at the last (most recent) position."""
        pos = torch.arange(seq.shape[1], device=seq.device)
        x = self.dropout(self.items(seq) * math.sqrt(self.items.embedding_dim) + self.positions(pos))
        return self.norm(self.blocks(x, mask=self._mask(seq)))[:, -1]

    def forward(self, seq: torch.Tensor, users: torch.Tensor | None = None) -> torch.Tensor:
        """Logits over all items (the user id is not used)."""
        return self.encode(seq) @ self.items.weight.T


class GRU4Rec(nn.Module):
    """Session-based recommendation with a GRU (Hidasi et al. 2016), tied item embeddings."""

    def __init__(self, n_items: int, max_len: int, dim: int = 64, layers: int = 1, dropout: float = 0.2):
        super().__init__()
        self.max_len = max_len
        self.items = nn.Embedding(n_items, dim, padding_idx=0)
        self.dropout = nn.Dropout(dropout)
        self.gru = nn.GRU(dim, dim, num_layers=layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)
        init_embeddings(self.items)

    def encode(self, seq: torch.Tensor) -> torch.Tensor:
        """User representation: the GRU state after the most recent item."""
        out, _ = self.gru(self.dropout(self.items(seq)))
        return out[:, -1]

    def forward(self, seq: torch.Tensor, users: torch.Tensor | None = None) -> torch.Tensor:
        """Logits over all items (the user id is not used)."""
        return self.encode(seq) @ self.items.weight.T


class MF(nn.Module):
    """Matrix factorisation: score(u, i) = <user_u, item_i>, trained with the same next-item softmax (no history)."""

    def __init__(self, n_items: int, n_users: int, max_len: int, dim: int = 64, dropout: float = 0.2):
        super().__init__()
        self.max_len, self.n_users = max_len, n_users
        self.items = nn.Embedding(n_items, dim, padding_idx=0)
        self.users = nn.Embedding(n_users, dim)
        self.dropout = nn.Dropout(dropout)
        init_embeddings(self.items, self.users)

    def forward(self, seq: torch.Tensor, users: torch.Tensor | None = None) -> torch.Tensor:
        """Logits over all items from the user ids (the history is not used)."""
        if users is None:
            raise ValueError("MF scores users, not histories: pass the user ids (a `user_id` column)")
        return self.dropout(self.users(users)) @ self.items.weight.T


EVAL_BATCH = 1024  # histories per forward pass when scoring (all_scores)


def attention_bytes(cfg: dict) -> int:
    """Peak memory of SASRec's attention scores: per layer a (batch x heads x L x L) float matrix, kept three times
    for the backward pass in training (scores, softmax, dropout), plus the boolean masks; scoring runs EVAL_BATCH
    histories at once without gradients.  L = HISTORY_LEN."""
    square = cfg["NUM_HEADS"] * cfg["HISTORY_LEN"] ** 2
    train = cfg["BATCH_SIZE"] * square * (12 * cfg["NUM_LAYERS"] + 2)
    return int(max(train, EVAL_BATCH * square * 10))


def check_memory(name: str, cfg: dict, device: str = "cpu") -> None:
    """Refuse a SASRec whose attention would not fit in free memory (it would grow until the kernel is killed), with
    the estimate and what to lower."""
    if name != "sasrec":
        return
    need, free = attention_bytes(cfg), process.free_memory(device)
    if need > 0.8 * free:
        raise ValueError(f"HISTORY_LEN={cfg['HISTORY_LEN']} makes SASRec's attention need about {need / 2**30:.1f} GiB "
                         f"(batch {cfg['BATCH_SIZE']} x {cfg['NUM_HEADS']} heads x {cfg['HISTORY_LEN']}^2 scores x "
                         f"{cfg['NUM_LAYERS']} layer(s)); {free / 2**30:.1f} GiB are free on {device}: lower "
                         f"HISTORY_LEN or BATCH_SIZE")


def build_model(name: str, n_items: int, cfg: dict, n_users: int | None = None) -> nn.Module:
    """A neural baseline by name, sized from the resolved parameters (MF also needs n_users: largest user id + 1)."""
    kw = dict(n_items=n_items, max_len=cfg["HISTORY_LEN"], dim=cfg["EMBED_DIM"], dropout=cfg["DROPOUT"])
    if name == "sasrec":
        return SASRec(layers=cfg["NUM_LAYERS"], heads=cfg["NUM_HEADS"], **kw)
    if name == "gru4rec":
        return GRU4Rec(layers=cfg["NUM_LAYERS"], **kw)
    if name == "mf":
        if not n_users:
            raise ValueError("MF needs n_users (largest user id + 1)")
        return MF(n_users=n_users, **kw)
    raise ValueError(f"unknown baseline {name!r}: use popularity, sasrec, gru4rec or mf")


def user_ids(frame: pd.DataFrame | None, n: int) -> torch.Tensor | None:
    """The `user_id` column as a LongTensor (None without one)."""
    if frame is None or "user_id" not in frame:
        return None
    ids = torch.tensor(frame["user_id"].tolist(), dtype=torch.long)
    if len(ids) != n:
        raise ValueError(f"{len(ids)} user ids for {n} histories")
    return ids


@torch.no_grad()
def all_scores(model, histories, batch_size: int = EVAL_BATCH, device: str = "cpu", users=None) -> np.ndarray:
    """Scores of every item for each history (and user id), shape (users, n_items); padding id 0 scores -inf."""
    if isinstance(model, Popularity):
        return model.all_scores(histories)
    model.eval()
    seq = pad_histories(histories, model.max_len)
    users = None if users is None else torch.tensor(np.asarray(users).tolist(), dtype=torch.long)
    out = []
    for start in range(0, len(seq), batch_size):  # batch_size: EVAL_BATCH unless the caller says
        who = None if users is None else users[start:start + batch_size].to(device)
        logits = model(seq[start:start + batch_size].to(device), who).float()
        logits[:, 0] = -torch.inf
        out.append(logits.cpu().numpy())
    return np.concatenate(out)


def sampled_ranks(model, view: pd.DataFrame, device: str = "cpu") -> pd.DataFrame:
    """Ranks of the targets among each user's fixed candidates (sampled ranking)."""
    scores = all_scores(model, view["history"], device=device, users=view.get("user_id"))
    cand = np.asarray(view["candidates"].tolist())
    return metrics.candidate_ranks(view, np.take_along_axis(scores, cand, axis=1))


def full_ranks(model, view: pd.DataFrame, seen, device: str = "cpu") -> pd.DataFrame:
    """Ranks of the targets among all items, the user's earlier items excluded (full ranking)."""
    scores = all_scores(model, view["history"], device=device, users=view.get("user_id"))
    for row, items in enumerate(seen):
        scores[row, [i for i in items if i != view["target"].iat[row]]] = -np.inf
    target = view["target"].to_numpy()
    return pd.DataFrame({"user_id": view["user_id"].to_numpy(), "rank": metrics.ranks_from_scores(scores, target)})


def train_step(model, opt, seq: torch.Tensor, target: torch.Tensor, users: torch.Tensor | None = None,
               extra=None, where: str = "") -> dict:
    """One optimisation step of next-item cross-entropy over all items (+ `extra(model)`, a loss term); returns the
    terms' values.  A non-finite loss stops with the step named (`where`) before any weight changes."""
    logits = model(seq, users)
    logits[:, 0] = -torch.inf
    loss = nn.functional.cross_entropy(logits, target)
    terms = {"ce": loss}
    if extra is not None:
        terms["extra"] = extra(model)
        loss = loss + terms["extra"]
    if not torch.isfinite(loss):
        raise FloatingPointError(f"{type(model).__name__}: loss is {loss.item()} at {where}: lower LEARNING_RATE")
    opt.zero_grad()
    loss.backward()
    opt.step()
    return {k: v.item() for k, v in terms.items()}


def fit(model: nn.Module, train: pd.DataFrame, valid: pd.DataFrame, cfg: dict, device: str = "cpu",
        progress: bool = True) -> pd.DataFrame:
    """Train on the training windows, keep the epoch with the best validation NDCG@10; returns the training log."""
    torch.manual_seed(cfg["SEED"])
    model.to(device)
    seq = pad_histories(train["history"], model.max_len)
    target = torch.tensor(train["target"].to_numpy(), dtype=torch.long)
    users = user_ids(train, len(seq))
    opt = torch.optim.Adam(model.parameters(), lr=cfg["LEARNING_RATE"])
    gen = torch.Generator().manual_seed(cfg["SEED"])
    best, best_state, stale, log = -1.0, None, 0, []
    bar = tqdm(range(1, cfg["EPOCHS"] + 1), desc=type(model).__name__, disable=not progress, mininterval=10)
    for epoch in bar:
        model.train()
        total, order = 0.0, torch.randperm(len(seq), generator=gen)
        for start in range(0, len(seq), cfg["BATCH_SIZE"]):
            idx = order[start:start + cfg["BATCH_SIZE"]]
            who = None if users is None else users[idx].to(device)
            step = train_step(model, opt, seq[idx].to(device), target[idx].to(device), who,
                              where=f"epoch {epoch}, batch {start // cfg['BATCH_SIZE']}")
            total += step["ce"] * len(idx)
        ndcg = float(metrics.per_user_metrics(sampled_ranks(model, valid, device)["rank"])["NDCG@10"].mean())
        log.append({"epoch": epoch, "train_loss": total / len(seq), "valid_ndcg10": ndcg})
        bar.set_postfix(loss=f"{total / len(seq):.3f}", val_ndcg10=f"{ndcg:.3f}")
        if ndcg > best:
            best, best_state, stale = ndcg, copy.deepcopy(model.state_dict()), 0
        else:
            stale += 1
            if stale >= cfg["PATIENCE"]:
                break
    bar.close()
    if progress:
        best_epoch = max(log, key=lambda r: r["valid_ndcg10"])["epoch"]
        why = (f"stopped early at epoch {epoch} of {cfg['EPOCHS']}: no validation gain for {cfg['PATIENCE']} "
               f"epoch(s)") if epoch < cfg["EPOCHS"] else f"all {cfg['EPOCHS']} epochs run"
        print(f"{type(model).__name__}: {why}; keeping epoch {best_epoch} (validation NDCG@10 {best:.3f})",
              flush=True)
    model.load_state_dict(best_state)
    return pd.DataFrame(log)
