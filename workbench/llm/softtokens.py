"""Soft tokens: placeholder tokens in a prompt whose input embeddings are replaced by given vectors.

One code path: training (`train.SoftTokenSFTTrainer`), prefix-shared and naive scoring and generation (`rank.py`) all
build `inputs_embeds` with `splice`.  Vectors fill the placeholders in order, row-major over the batch.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..results import load_tensors

SOFT_TOKEN = "<|soft|>"
EMBEDDER_FILE = "soft_embedder.pt"
PAD_ID = -1  # pads a batch's soft_ids rows; never a real id


def add_soft_token(model, tokenizer) -> int:
    """Register SOFT_TOKEN as an extra special token (embeddings grow only if the vocab does); returns its id."""
    if SOFT_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"extra_special_tokens": [SOFT_TOKEN]}, replace_extra_special_tokens=False)
    old = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > old:
        with torch.random.fork_rng(devices=[]):  # the new rows are set below: leave the caller's random stream alone
            model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        with torch.no_grad():
            for layer in (model.get_input_embeddings(), model.get_output_embeddings()):
                if layer is not None:
                    layer.weight[old:] = layer.weight[:old].mean(0)
    model.config.soft_token_id = tokenizer.convert_tokens_to_ids(SOFT_TOKEN)
    return model.config.soft_token_id


def soft_token_id(model) -> int:
    """The placeholder id registered on the model by add_soft_token."""
    token_id = getattr(model.config, "soft_token_id", None)
    if token_id is None:
        raise ValueError("the model has no soft token: call softtokens.add_soft_token(model, tokenizer) first")
    return token_id


def splice(model, input_ids: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    """The model's input embeddings of `input_ids` with the placeholder rows replaced, in order, by `vectors`."""
    embeds = model.get_input_embeddings()(input_ids)
    mask = input_ids == soft_token_id(model)
    count, hidden = int(mask.sum()), embeds.shape[-1]
    if vectors.dim() != 2:
        raise ValueError(f"soft-token vectors must have shape ({count}, {hidden}), got {tuple(vectors.shape)}")
    if len(vectors) != count:
        raise ValueError(f"prompt has {count} soft-token placeholders but {len(vectors)} vectors were given: "
                         f"give one vector per {SOFT_TOKEN}, in order")
    if vectors.shape[1] != hidden:
        raise ValueError(f"soft-token vectors have width {vectors.shape[1]} but the model's hidden size is {hidden}: "
                         f"project them to {hidden}")
    return embeds.masked_scatter(mask.unsqueeze(-1), vectors.to(device=embeds.device, dtype=embeds.dtype))


def check_soft_ids(examples) -> None:
    """Refuse examples without a `soft_ids` column, or rows whose id count differs from their placeholder count."""
    if "soft_ids" not in examples:
        raise ValueError("soft tokens need a `soft_ids` column in examples (one id per soft-token placeholder)")
    for row, (prompt, ids) in enumerate(zip(examples["prompt"], examples["soft_ids"])):
        if prompt.count(SOFT_TOKEN) != len(ids):
            raise ValueError(f"row {row}: prompt has {prompt.count(SOFT_TOKEN)} soft-token placeholders but "
                             f"{len(ids)} soft_ids: give one id per {SOFT_TOKEN}, in order")


class SoftIdsCollator:
    """Wraps a collator: each row's `soft_ids`, padded with PAD_ID, go beside its batch as a (batch, k) LongTensor,
    and each `extra` column as a LongTensor: an integer column (target_id) as (batch,), a list column (candidate_ids)
    as (batch, longest), padded with PAD_ID."""

    def __init__(self, collator, extra: tuple[str, ...] = ()):
        self.collator, self.extra = collator, tuple(extra)

    def __call__(self, examples: list[dict]) -> dict:
        own = ("soft_ids", *self.extra)
        ids = [list(e["soft_ids"]) for e in examples]
        batch = self.collator([{k: v for k, v in e.items() if k not in own} for e in examples])
        width = max(map(len, ids), default=0)
        padded = [row + [PAD_ID] * (width - len(row)) for row in ids]
        batch["soft_ids"] = torch.tensor(padded, dtype=torch.long).reshape(len(ids), width)
        for column in self.extra:
            values = [e[column] for e in examples]
            if values and not isinstance(values[0], (int, np.integer)):
                longest = max(map(len, values))
                values = [[int(v) for v in row] + [PAD_ID] * (longest - len(row)) for row in values]
            batch[column] = torch.tensor([v if isinstance(v, list) else int(v) for v in values], dtype=torch.long)
        return batch


def unpad(soft_ids: torch.Tensor) -> torch.Tensor:
    """A padded (batch, k) soft_ids batch as one row-major list of ids, the order `splice` fills placeholders in."""
    return soft_ids[soft_ids != PAD_ID]


def save_embedder(embedder, folder, state: dict | None = None) -> None:
    """Write the embedder's weights (or a given state dict of them) to folder/soft_embedder.pt atomically."""
    path = Path(folder) / EMBEDDER_FILE
    tmp = path.with_name(f".{EMBEDDER_FILE}.partial")
    torch.save(embedder.state_dict() if state is None else state, tmp)
    os.replace(tmp, path)


def load_embedder(embedder, folder) -> None:
    """Restore the embedder's weights from folder/soft_embedder.pt."""
    path = Path(folder) / EMBEDDER_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: that run was trained without soft tokens; use another output_dir")
    device = next(embedder.parameters(), torch.empty(0)).device
    embedder.load_state_dict(load_tensors(path, device))
