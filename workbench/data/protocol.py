"""One call that gives every notebook the same protocol view: data, split, training windows, valid/test candidates."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .movielens import DataError, Dataset, load_dataset
from .splits import (SPLITS, Prepared, build_sequences, check_candidates, eval_examples, leave_one_out,
                     load_candidates, prepare, select_users, training_windows)


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
    fingerprint: str         # the data's fingerprint (movielens.fingerprint)
    tie_break: str           # order of same-timestamp interactions: file_order | item_id
    n_negatives: int
    min_interactions: int
    candidate_seed: int      # seed of the fixed candidates and of the MAX_USERS subset (not the training SEED)
    max_users: int | None
    history_len: int

    @property
    def folder(self) -> Path:
        """Where the candidate files are."""
        return self.prepared.folder

    @property
    def n_items(self) -> int:
        """Largest item id + 1 (embedding tables index by raw id; 0 is padding)."""
        return int(self.data.items["item_id"].max()) + 1

    def identity(self) -> dict:
        """What identifies the evaluated candidate set: runs whose identities differ must not share a name."""
        return {"dataset": self.data.name, "fingerprint": self.fingerprint, "tie_break": self.tie_break,
                "n_negatives": self.n_negatives, "min_interactions": self.min_interactions,
                "candidate_seed": self.candidate_seed, "max_users": self.max_users, "history_len": self.history_len}


def load_protocol(cfg: dict) -> Protocol:
    """Load data, write/read the fixed candidates (checked against this data), restrict to cfg's user subset.

    Reads DATASET, DATA_PATH, CANDIDATE_SEED, N_NEGATIVES, MIN_INTERACTIONS, TIE_BREAK, MAX_USERS, HISTORY_LEN.
    """
    data = load_dataset(cfg["DATASET"], cfg["DATA_PATH"])
    seed, tie_break, n_neg, min_n = cfg["CANDIDATE_SEED"], cfg["TIE_BREAK"], cfg["N_NEGATIVES"], cfg["MIN_INTERACTIONS"]
    prepared = prepare(data, seed, n_neg, min_n, tie_break)
    seqs = build_sequences(data.interactions, min_n, tie_break)  # prints how many users were dropped
    full = leave_one_out(seqs)
    users = select_users(seqs["user_id"], cfg["MAX_USERS"], seed)
    split = full[full["user_id"].isin(users)].reset_index(drop=True)
    views = {}
    for which in SPLITS:
        cands = load_candidates(prepared.folder, which)
        check_candidates(cands, full, which, prepared.folder, n_neg)  # every user and target of this data
        views[which] = eval_examples(split, which, cfg["HISTORY_LEN"]).merge(
            cands[["user_id", "candidates"]], on="user_id", how="left", validate="one_to_one")
        if views[which]["candidates"].isna().any():
            raise DataError(f"candidate file in {prepared.folder} misses some users: delete the folder and run "
                            f"`python -m workbench prepare`")
    return Protocol(data, split, training_windows(split, cfg["HISTORY_LEN"]), views["valid"], views["test"], prepared,
                    seqs.attrs["dropped_users"], seqs, prepared.manifest["fingerprint"], tie_break, int(n_neg),
                    int(min_n), int(seed), cfg["MAX_USERS"], int(cfg["HISTORY_LEN"]))
