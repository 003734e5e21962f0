"""The shared protocol (DESIGN §2): chronological sequences, leave-one-out, sliding windows, fixed candidate sets.

Candidates are drawn once per (data set, seed, N_NEGATIVES) and saved; every method reads the same files.
Reproduce: `python -m workbench prepare --seed 0` (prints where the files are).
"""
from __future__ import annotations

import json
from functools import partial
import logging

import numpy as np
import pandas as pd

from .. import assets
from .movielens import DataError, Dataset

log = logging.getLogger(__name__)
SPLITS = ("valid", "test")
CANDIDATE_COLUMNS = ["user_id", "target", "candidates"]


def build_sequences(interactions: pd.DataFrame, min_interactions: int = 3) -> pd.DataFrame:
    """One row per user: item ids in time order (ties by item id); users below the minimum are dropped and counted."""
    if interactions.empty:
        raise DataError("no interactions: the data set is empty; check DATA_PATH and the files in it")
    ordered = interactions.sort_values(["user_id", "timestamp", "item_id"], kind="stable")
    seqs = ordered.groupby("user_id", sort=True)["item_id"].agg(list).rename("items").reset_index()
    keep = seqs["items"].map(len) >= min_interactions
    dropped = int((~keep).sum())
    if dropped:
        log.warning("dropped %d user(s) with fewer than %d interactions", dropped, min_interactions)
    seqs = seqs[keep].reset_index(drop=True)
    if seqs.empty:
        raise DataError(f"no user has at least {min_interactions} interactions: lower MIN_INTERACTIONS or check the data")
    seqs.attrs["dropped_users"] = dropped
    return seqs


def leave_one_out(seqs: pd.DataFrame) -> pd.DataFrame:
    """Split each sequence: last item = test, second to last = valid, the rest = train."""
    items = seqs["items"]
    return pd.DataFrame({"user_id": seqs["user_id"].to_numpy(), "train": items.map(lambda s: s[:-2]),
                         "valid": items.map(lambda s: s[-2]), "test": items.map(lambda s: s[-1])})


def training_windows(split: pd.DataFrame, history_len: int) -> pd.DataFrame:
    """Every (last history_len items, next item) pair inside the training part only: the training samples."""
    rows = [(u, train[max(0, t - history_len):t], train[t])
            for u, train in zip(split["user_id"], split["train"]) for t in range(1, len(train))]
    return pd.DataFrame(rows, columns=["user_id", "history", "target"])


def eval_examples(split: pd.DataFrame, which: str, history_len: int) -> pd.DataFrame:
    """History (last history_len items before the target) and target for the valid or test step."""
    if which not in SPLITS:
        raise ValueError(f"which must be one of {SPLITS}, got {which!r}")
    if which == "valid":
        hist = split["train"]
    else:
        hist = [t + [v] for t, v in zip(split["train"], split["valid"])]
    return pd.DataFrame({"user_id": split["user_id"].to_numpy(), "history": [h[-history_len:] for h in hist],
                         "target": split[which].to_numpy()})


def draw_candidates(users, targets, seqs: pd.DataFrame, item_ids, n_negatives: int, seed: int, streams) -> list:
    """Target + n_negatives never-interacted items per row, uniform without replacement, shuffled.

    Row k draws from default_rng([seed, user, *streams[k]]): a row's candidates do not depend on the other rows.
    """
    item_ids = np.asarray(sorted(set(int(i) for i in item_ids)))
    seen = dict(zip(seqs["user_id"], seqs["items"]))
    out = []
    for user, target, stream in zip(users, targets, streams):
        pool = np.setdiff1d(item_ids, np.asarray(seen[user]))
        if len(pool) < n_negatives:
            raise DataError(f"user {user} has only {len(pool)} unseen items, fewer than N_NEGATIVES={n_negatives}")
        rng = np.random.default_rng([seed, int(user), *stream])
        cands = np.concatenate([[target], rng.choice(pool, size=n_negatives, replace=False)])
        out.append(rng.permutation(cands).astype("int64").tolist())
    return out


def sample_candidates(split: pd.DataFrame, seqs: pd.DataFrame, item_ids, which: str, n_negatives: int = 19,
                      seed: int = 0) -> pd.DataFrame:
    """The fixed evaluation candidates of one split; each user's draw depends only on (seed, user, split)."""
    streams = [(SPLITS.index(which),)] * len(split)
    cands = draw_candidates(split["user_id"], split[which], seqs, item_ids, n_negatives, seed, streams)
    return pd.DataFrame({"user_id": split["user_id"].astype("int64").to_numpy(),
                         "target": split[which].astype("int64").to_numpy(), "candidates": cands})


def training_candidates(windows: pd.DataFrame, seqs: pd.DataFrame, item_ids, n_negatives: int = 19,
                        seed: int = 0) -> pd.DataFrame:
    """Training windows with a candidate list each (for LLM prompts), drawn like the evaluation candidates."""
    streams = [(len(SPLITS), int(k)) for k in windows.index]
    out = windows.copy()
    out["candidates"] = draw_candidates(windows["user_id"], windows["target"], seqs, item_ids, n_negatives, seed,
                                        streams)
    return out


def prepared_dir(dataset: str, seed: int, n_negatives: int, min_interactions: int):
    """Where the candidate files of one protocol setting live (under the cache)."""
    return assets.cache_dir(f"prepared/{dataset}-neg{n_negatives}-min{min_interactions}-seed{seed}")


def prepare(data: Dataset, seed: int = 0, n_negatives: int = 19, min_interactions: int = 3, force: bool = False):
    """Write candidates_{valid,test}.parquet once (atomically, manifest last) and return their folder."""
    out = prepared_dir(data.name, seed, n_negatives, min_interactions)
    manifest = out / "manifest.json"
    if manifest.exists() and not force:
        try:
            recorded = json.loads(manifest.read_text())["sha256"]
            if all(assets.sha256_of(out / f) == h for f, h in recorded.items()):
                return out
        except (OSError, ValueError, KeyError):
            pass
        log.warning("prepared files in %s are incomplete or changed: regenerating", out)
    seqs = build_sequences(data.interactions, min_interactions)
    split = leave_one_out(seqs)
    hashes = {}
    for which in SPLITS:
        cands = sample_candidates(split, seqs, data.items["item_id"], which, n_negatives, seed)
        path = assets.atomic_write(out / f"candidates_{which}.parquet", partial(cands.to_parquet, index=False))
        hashes[path.name] = assets.sha256_of(path)
    info = {"dataset": data.name, "seed": seed, "n_negatives": n_negatives, "min_interactions": min_interactions,
            "users": len(split), "dropped_users": seqs.attrs["dropped_users"], "sha256": hashes}
    assets.atomic_write(manifest, lambda tmp: tmp.write_text(json.dumps(info, indent=2)))
    return out


def load_candidates(folder, which: str) -> pd.DataFrame:
    """Read a saved candidate file, checking its columns and that every list holds the target."""
    path = folder / f"candidates_{which}.parquet"
    if not path.exists():
        raise DataError(f"{path} not found: run `python -m workbench prepare` first")
    try:
        df = pd.read_parquet(path)
    except Exception as err:  # pyarrow raises several types for corrupt files
        raise DataError(f"{path} is unreadable ({type(err).__name__}): delete it and run "
                        f"`python -m workbench prepare`") from None
    missing = [c for c in CANDIDATE_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{path} lacks column(s) {', '.join(missing)}: delete it and run `python -m workbench prepare`")
    df["candidates"] = df["candidates"].map(lambda c: [int(i) for i in c])
    if not all(t in c for t, c in zip(df["target"], df["candidates"])):
        raise DataError(f"{path} has candidate lists without their target: delete it and re-run prepare")
    return df


def select_users(user_ids, max_users: int | None, seed: int = 0) -> np.ndarray:
    """A seeded subset of at most max_users user ids (all of them, sorted, when max_users is None)."""
    ids = np.sort(np.asarray(list(user_ids)))
    if max_users is None or max_users >= len(ids):
        return ids
    return np.sort(np.random.default_rng(seed).choice(ids, size=max_users, replace=False))
