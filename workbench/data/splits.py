"""The shared protocol (docs/design.md, section 1): chronological sequences, leave-one-out, sliding windows, fixed candidate sets.

Candidates are drawn once per (data set, data fingerprint, TIE_BREAK, N_NEGATIVES, MIN_INTERACTIONS, CANDIDATE_SEED)
and saved; every method reads the same files, checked against the data's own users and targets on every load.
Reproduce: `python -m workbench prepare --seed 0` (prints where the files are, and whether they were reused).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from .. import assets
from .dataset import DataError, Dataset, fingerprint

SPLITS = ("valid", "test")
CANDIDATE_COLUMNS = ["user_id", "target", "candidates"]
TIE_BREAKS = ("file_order", "item_id")
REPREPARE = "run `python -m workbench prepare`"


def _check_tie_break(tie_break: str) -> None:
    if tie_break not in TIE_BREAKS:
        raise DataError(f"tie_break must be 'file_order' or 'item_id', got {tie_break!r}: set TIE_BREAK to one of them")


def order_interactions(interactions: pd.DataFrame, tie_break: str = "file_order") -> pd.DataFrame:
    """Interactions sorted by user, then timestamp; same-second ties in file order (the `row` column; without one,
    the frame's current order is taken as the file order) or, with tie_break="item_id", by item id (the old rule)."""
    _check_tie_break(tie_break)
    if "row" not in interactions.columns:
        interactions = interactions.assign(row=np.arange(len(interactions), dtype="int64"))
    keys = ["user_id", "timestamp", "row"] if tie_break == "file_order" else ["user_id", "timestamp", "item_id", "row"]
    return interactions.sort_values(keys)


def build_sequences(interactions: pd.DataFrame, min_interactions: int = 3, tie_break: str = "file_order", *,
                    report: bool = True) -> pd.DataFrame:
    """One row per user: item ids in time order, same-second ties by `tie_break` (file_order | item_id).

    Users below the minimum are dropped, counted in attrs["dropped_users"] and (report=True) reported on stdout.
    """
    if interactions.empty:
        raise DataError("no interactions: the data set is empty; check DATA_PATH and the files in it")
    ordered = order_interactions(interactions, tie_break)
    seqs = ordered.groupby("user_id", sort=True)["item_id"].agg(list).rename("items").reset_index()
    keep = seqs["items"].map(len) >= min_interactions
    n_users, dropped = len(seqs), int((~keep).sum())
    if not keep.any():
        raise DataError(f"no user has at least {min_interactions} interactions: check DATA_PATH and the files in "
                        f"it, or lower MIN_INTERACTIONS (leave-one-out needs 3)")
    if dropped and report:
        print(f"dropped {dropped} of {n_users} users with fewer than {min_interactions} interactions")
    seqs = seqs[keep].reset_index(drop=True)
    seqs.attrs.update(dropped_users=dropped, tie_break=tie_break, min_interactions=min_interactions)
    return seqs


def leave_one_out(seqs: pd.DataFrame) -> pd.DataFrame:
    """Split each sequence: last item = test, second to last = valid, the rest = train."""
    items = seqs["items"]
    return pd.DataFrame({"user_id": seqs["user_id"].to_numpy(), "train": items.map(lambda s: s[:-2]),
                         "valid": items.map(lambda s: s[-2]), "test": items.map(lambda s: s[-1])})


def training_windows(split: pd.DataFrame, history_len: int) -> pd.DataFrame:
    """Every (last history_len items, next item) pair inside the training part only: the training samples.

    `position` is the target's index in the user's full sequence (its whole history is `seqs` items[:position]).
    """
    rows = [(u, train[max(0, t - history_len):t], train[t], t)
            for u, train in zip(split["user_id"], split["train"]) for t in range(1, len(train))]
    return pd.DataFrame(rows, columns=["user_id", "history", "target", "position"])


def eval_examples(split: pd.DataFrame, which: str, history_len: int) -> pd.DataFrame:
    """History (last history_len items before the target), target and its index in the full sequence (`position`)."""
    if which not in SPLITS:
        raise ValueError(f"which must be one of {SPLITS}, got {which!r}")
    if which == "valid":
        hist = split["train"]
    else:
        hist = [t + [v] for t, v in zip(split["train"], split["valid"])]
    return pd.DataFrame({"user_id": split["user_id"].to_numpy(), "history": [h[-history_len:] for h in hist],
                         "target": split[which].to_numpy(), "position": [len(h) for h in hist]})


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


CANDIDATE_IDENTITY = ("dataset", "fingerprint", "tie_break", "n_negatives", "min_interactions", "candidate_seed")


def candidate_identity(data: Dataset, seed: int, n_negatives: int, min_interactions: int, tie_break: str) -> dict:
    """What identifies a fixed candidate set (CANDIDATE_IDENTITY): the data's name and fingerprint and the settings
    the candidates were drawn with.  The one definition: the folder name, the manifest and the run ids use it."""
    return {"dataset": data.name, "fingerprint": fingerprint(data), "tie_break": tie_break,
            "n_negatives": int(n_negatives), "min_interactions": int(min_interactions), "candidate_seed": int(seed)}


@dataclass
class Prepared:
    """The fixed candidates of one protocol setting, built and read once: where the files are, whether they were
    already there, the manifest that identifies them, and what was built on the way (the kept users' sequences,
    their leave-one-out split, each split's checked candidate frame)."""
    folder: Path
    reused: bool
    manifest: dict
    seqs: pd.DataFrame | None = None
    split: pd.DataFrame | None = None
    candidates: dict | None = None  # "valid" | "test" -> user_id, target, candidates

    @property
    def identity(self) -> dict:
        """The candidate set's identity (candidate_identity), as the manifest records it."""
        return {k: self.manifest[k] for k in CANDIDATE_IDENTITY}


def prepared_dir(identity: dict) -> Path:
    """Where the candidate files of one candidate identity live (under the cache)."""
    i = identity
    return assets.cache_dir(f"prepared/{i['dataset']}-{i['fingerprint']}-{i['tie_break']}-neg{i['n_negatives']}"
                            f"-min{i['min_interactions']}-seed{i['candidate_seed']}")


def _check_settings(seed, n_negatives, min_interactions, tie_break) -> None:
    _check_tie_break(tie_break)
    if not isinstance(n_negatives, (int, np.integer)) or n_negatives < 1:
        raise DataError(f"n_negatives must be an integer of at least 1, got {n_negatives!r}: candidates are the "
                        f"target plus N_NEGATIVES unseen items; set N_NEGATIVES >= 1")
    if not isinstance(min_interactions, (int, np.integer)) or min_interactions < 3:
        raise DataError(f"min_interactions must be an integer of at least 3, got {min_interactions!r}: leave-one-out "
                        f"needs a training, a validation and a test item; set MIN_INTERACTIONS >= 3")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DataError(f"the candidate seed must be a non-negative integer, got {seed!r}: set CANDIDATE_SEED")


def _reusable(out: Path, identity: dict, split: pd.DataFrame, n_negatives: int) -> tuple[dict, dict] | None:
    """The manifest and the checked candidate frames of complete, unchanged files drawn for this data and these
    settings; None otherwise."""
    try:
        manifest = json.loads((out / "manifest.json").read_text())
        if any(manifest.get(k) != v for k, v in identity.items()):
            return None
        files = manifest["sha256"]
        if set(files) != {f"candidates_{w}.parquet" for w in SPLITS}:
            return None
        if not all(assets.sha256_of(out / f) == h for f, h in files.items()):
            return None
        cands = {which: load_candidates(out, which) for which in SPLITS}
        for which in SPLITS:
            check_candidates(cands[which], split, which, out, n_negatives)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # DataError is a ValueError
        return None
    return manifest, cands


def prepare(data: Dataset, seed: int = 0, n_negatives: int = 19, min_interactions: int = 3,
            tie_break: str = "file_order", force: bool = False, report: bool = False) -> Prepared:
    """Write candidates_{valid,test}.parquet once (atomically, manifest last), or reuse them when the folder already
    holds complete files drawn for this data (fingerprint) and these settings; `seed` is the candidate seed.

    The sequences, the split and the checked candidate frames come back with the files (`Prepared`), so a caller
    builds nothing twice; report: print how many users were dropped."""
    _check_settings(seed, n_negatives, min_interactions, tie_break)
    identity = candidate_identity(data, seed, n_negatives, min_interactions, tie_break)
    out = prepared_dir(identity)
    manifest = out / "manifest.json"
    seqs = build_sequences(data.interactions, min_interactions, tie_break, report=report)
    split = leave_one_out(seqs)
    if manifest.exists() and not force:
        recorded = _reusable(out, identity, split, n_negatives)
        if recorded is not None:
            return Prepared(out, True, recorded[0], seqs, split, recorded[1])
        print(f"candidate files in {out} are incomplete, changed or stale: writing them again")
    hashes = {}
    for which in SPLITS:
        cands = sample_candidates(split, seqs, data.items["item_id"], which, n_negatives, seed)
        path = assets.atomic_write(out / f"candidates_{which}.parquet", partial(cands.to_parquet, index=False))
        hashes[path.name] = assets.sha256_of(path)
    info = {**identity, "users": len(split), "dropped_users": seqs.attrs["dropped_users"],
            "interactions": len(data.interactions), "items": len(data.items),
            "duplicate_rows": int(getattr(data, "duplicate_rows", 0)), "sha256": hashes}
    assets.atomic_write(manifest, lambda tmp: tmp.write_text(json.dumps(info, indent=2)))
    written = {which: load_candidates(out, which, split) for which in SPLITS}  # as every later read sees them
    return Prepared(out, False, info, seqs, split, written)


def load_candidates(folder, which: str, split: pd.DataFrame | None = None) -> pd.DataFrame:
    """Read a saved candidate file (folder: a path or a Prepared), checking its columns and that every list holds
    the target; with `split`, also that its users and targets are exactly the split's (see check_candidates)."""
    folder = Path(getattr(folder, "folder", folder))
    path = folder / f"candidates_{which}.parquet"
    if not path.exists():
        raise DataError(f"{path} not found: {REPREPARE} first")
    try:
        df = pd.read_parquet(path)
    except Exception as err:  # pyarrow raises several types for corrupt files
        raise DataError(f"{path} is unreadable ({type(err).__name__}): delete it and {REPREPARE}") from None
    missing = [c for c in CANDIDATE_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{path} lacks column(s) {', '.join(missing)}: delete it and {REPREPARE}")
    df["candidates"] = df["candidates"].map(lambda c: [int(i) for i in c])
    if not all(t in c for t, c in zip(df["target"], df["candidates"])):
        raise DataError(f"{path} has candidate lists without their target: delete {folder} and {REPREPARE}")
    if split is not None:
        check_candidates(df, split, which, folder)
    return df


def check_candidates(cands: pd.DataFrame, split: pd.DataFrame, which: str, folder=None,
                     n_negatives: int | None = None) -> None:
    """Refuse candidates drawn for other data: the file's users and targets must equal the split's users and
    `which` targets exactly (and, given n_negatives, every list must hold n_negatives + 1 distinct items)."""
    if which not in SPLITS:
        raise ValueError(f"which must be one of {SPLITS}, got {which!r}")
    folder = Path(getattr(folder, "folder", folder)) if folder is not None else None
    where = f"candidates_{which}.parquet in {folder}" if folder else f"the {which} candidates"
    todo = f"delete {folder} and {REPREPARE}" if folder else REPREPARE
    if cands["user_id"].duplicated().any():
        raise DataError(f"{where} lists {int(cands['user_id'].duplicated().sum())} user(s) twice: {todo}")
    stored = dict(zip(cands["user_id"].astype("int64"), cands["target"].astype("int64")))
    expected = dict(zip(split["user_id"].astype("int64"), split[which].astype("int64")))
    missing, extra = set(expected) - set(stored), set(stored) - set(expected)
    wrong = sum(1 for u, t in expected.items() if u in stored and stored[u] != t)
    differ = len(missing) + len(extra) + wrong
    if differ:
        raise DataError(f"{where}: {differ} of {len(set(stored) | set(expected))} {which} targets differ from the "
                        f"data ({wrong} other target(s), {len(missing)} user(s) missing, {len(extra)} not in the "
                        f"data): the files were drawn for other data or settings; {todo}")
    if n_negatives is not None:
        bad = sum(1 for c in cands["candidates"] if len(c) != n_negatives + 1 or len(set(c)) != len(c))
        if bad:
            raise DataError(f"{where}: {bad} list(s) do not hold {n_negatives + 1} distinct items "
                            f"(N_NEGATIVES={n_negatives}): {todo}")


def item_counts(sequences, n_items: int) -> np.ndarray:
    """Occurrences of each item id (index = id) over a collection of item sequences."""
    counts = np.zeros(n_items, dtype=float)
    for seq in sequences:
        np.add.at(counts, np.asarray(seq, dtype=int), 1.0)
    return counts


def seeded_subset(n_total: int, n: int, seed: int = 0) -> np.ndarray:
    """Sorted positions of a seeded subset of n of n_total: the first n of one seeded permutation, so a smaller subset
    is always inside a larger one with the same seed (ablation users are among the main run's users)."""
    return np.sort(np.random.default_rng(seed).permutation(n_total)[:n])


def select_users(user_ids, max_users: int | None, seed: int = 0) -> np.ndarray:
    """A seeded subset of at most max_users user ids (all of them, sorted, when max_users is None); nested in n."""
    ids = np.sort(np.asarray(list(user_ids)))
    if max_users is None or max_users >= len(ids):
        return ids
    return ids[seeded_subset(len(ids), max_users, seed)]
