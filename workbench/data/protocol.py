"""One call that gives every notebook the same protocol view: data, split, training windows, valid/test candidates."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .dataset import DataError, Dataset
from .sources import load_dataset
from .splits import SPLITS, Prepared, eval_examples, item_counts, prepare, select_users, training_windows


@dataclass
class Protocol:
    """The evaluation protocol for one parameter setting (docs/design.md, section 1)."""
    data: Dataset
    split: pd.DataFrame      # user_id, train, valid, test (the evaluated users: MAX_USERS subset)
    train: pd.DataFrame      # user_id, history, target (sliding windows over the training part)
    valid: pd.DataFrame      # user_id, history, target, candidates
    test: pd.DataFrame       # user_id, history, target, candidates
    prepared: Prepared       # the candidate files: folder, reused or written, manifest
    dropped_users: int       # users with fewer than MIN_INTERACTIONS interactions (reported when loaded)
    seqs: pd.DataFrame       # every kept user's full sequence (for drawing training candidates among unseen items)
    max_users: int | None
    history_len: int

    @property
    def fingerprint(self) -> str:
        """The data's fingerprint (dataset.fingerprint), as the candidate files record it."""
        return self.prepared.manifest["fingerprint"]

    @property
    def tie_break(self) -> str:
        """Order of same-timestamp interactions: file_order | item_id."""
        return self.prepared.manifest["tie_break"]

    @property
    def candidate_seed(self) -> int:
        """Seed of the fixed candidates and of the MAX_USERS subset (not the training SEED)."""
        return self.prepared.manifest["candidate_seed"]

    @property
    def folder(self) -> Path:
        """Where the candidate files are."""
        return self.prepared.folder

    @property
    def n_items(self) -> int:
        """Largest item id + 1 (embedding tables index by raw id; 0 is padding)."""
        return int(self.data.items["item_id"].max()) + 1

    def item_counts(self) -> np.ndarray:
        """Interactions per item id in the training part (what Popularity ranks by; index = item id)."""
        return item_counts(self.split["train"], self.n_items)

    def identity(self) -> dict:
        """What identifies the evaluated candidate set (the candidate files' identity, the user subset, the history
        shown): runs whose identities differ must not share a name."""
        return {**self.prepared.identity, "max_users": self.max_users, "history_len": self.history_len}


def load_protocol(cfg: dict) -> Protocol:
    """Load data, write/read the fixed candidates once (checked against this data), restrict to cfg's user subset.

    Reads DATASET, DATA_PATH, CANDIDATE_SEED, N_NEGATIVES, MIN_INTERACTIONS, TIE_BREAK, MAX_USERS, HISTORY_LEN.
    """
    data = load_dataset(cfg["DATASET"], cfg["DATA_PATH"])
    seed = cfg["CANDIDATE_SEED"]
    prepared = prepare(data, seed, cfg["N_NEGATIVES"], cfg["MIN_INTERACTIONS"], cfg["TIE_BREAK"], report=True)
    seqs, full = prepared.seqs, prepared.split
    users = select_users(seqs["user_id"], cfg["MAX_USERS"], seed)
    split = full[full["user_id"].isin(users)].reset_index(drop=True)
    views = {}
    for which in SPLITS:
        cands = prepared.candidates[which]
        views[which] = eval_examples(split, which, cfg["HISTORY_LEN"]).merge(
            cands[["user_id", "candidates"]], on="user_id", how="left", validate="one_to_one")
        if views[which]["candidates"].isna().any():
            raise DataError(f"candidate file in {prepared.folder} misses some users: delete the folder and run "
                            f"`python -m workbench prepare`")
    return Protocol(data, split, training_windows(split, cfg["HISTORY_LEN"]), views["valid"], views["test"], prepared,
                    seqs.attrs["dropped_users"], seqs, cfg["MAX_USERS"], int(cfg["HISTORY_LEN"]))
