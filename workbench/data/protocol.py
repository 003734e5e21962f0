"""One call that gives every notebook the same protocol view: data, split, training windows, valid/test candidates."""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from .movielens import Dataset, load_dataset
from .splits import build_sequences, eval_examples, leave_one_out, load_candidates, prepare, select_users, training_windows


@dataclass
class Protocol:
    """The evaluation protocol for one parameter setting (DESIGN §2)."""
    data: Dataset
    split: pd.DataFrame      # user_id, train, valid, test
    train: pd.DataFrame      # user_id, history, target (sliding windows over the training part)
    valid: pd.DataFrame      # user_id, history, target, candidates
    test: pd.DataFrame       # user_id, history, target, candidates
    folder: object           # where the candidate files are
    dropped_users: int
    seqs: pd.DataFrame       # every kept user's full sequence (for drawing training candidates among unseen items)

    @property
    def n_items(self) -> int:
        """Largest item id + 1 (embedding tables index by raw id; 0 is padding)."""
        return int(self.data.items["item_id"].max()) + 1


def load_protocol(cfg: dict) -> Protocol:
    """Load data, write/read the fixed candidates, and restrict everything to cfg's user subset."""
    data = load_dataset(cfg["DATASET"], cfg["DATA_PATH"])
    folder = prepare(data, cfg["SEED"], cfg["N_NEGATIVES"], cfg["MIN_INTERACTIONS"])
    seqs = build_sequences(data.interactions, cfg["MIN_INTERACTIONS"])
    users = select_users(seqs["user_id"], cfg["MAX_USERS"], cfg["SEED"])
    split = leave_one_out(seqs[seqs["user_id"].isin(users)].reset_index(drop=True))
    views = {}
    for which in ("valid", "test"):
        cands = load_candidates(folder, which)[["user_id", "candidates"]]
        views[which] = eval_examples(split, which, cfg["HISTORY_LEN"]).merge(cands, on="user_id", how="left")
        if views[which]["candidates"].isna().any():
            raise ValueError(f"candidate file in {folder} misses some users: delete the folder and run prepare again")
    return Protocol(data, split, training_windows(split, cfg["HISTORY_LEN"]), views["valid"], views["test"], folder,
                    seqs.attrs["dropped_users"], seqs)
