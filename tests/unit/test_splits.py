"""The shared protocol: ordering, leave-one-out without leakage, sliding windows, fixed candidates."""
from pathlib import Path

import pandas as pd
import pytest

from workbench.data import DataError, load_dataset
from workbench.data import splits as S

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


@pytest.fixture
def data():
    return load_dataset("ml-100k", FIXTURES / "ml-100k")


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))


def test_short_users_are_dropped_and_counted(data):
    seqs = S.build_sequences(data.interactions, 3)
    assert seqs.attrs["dropped_users"] == 1 and 5 not in set(seqs.user_id)
    with pytest.raises(DataError, match="no user has at least"):
        S.build_sequences(data.interactions, 100)
    with pytest.raises(DataError, match="empty"):
        S.build_sequences(data.interactions.iloc[:0])


def test_leave_one_out_and_windows_do_not_leak(data):
    seqs = S.build_sequences(data.interactions)
    split = S.leave_one_out(seqs)
    for items, (_, row) in zip(seqs["items"], split.iterrows()):
        assert row.train + [row.valid, row.test] == items
    windows = S.training_windows(split, history_len=3)
    for user, group in windows.groupby("user_id"):
        row = split.set_index("user_id").loc[user]
        assert group["target"].tolist() == row.train[1:]           # every training target comes from train only
        assert all(set(h) <= set(row.train) for h in group["history"])
        assert all(len(h) <= 3 for h in group["history"])
    valid, test = S.eval_examples(split, "valid", 3), S.eval_examples(split, "test", 3)
    for (_, v), (_, t), (_, row) in zip(valid.iterrows(), test.iterrows(), split.iterrows()):
        assert v.history == row.train[-3:] and v.target == row.valid
        assert t.history == (row.train + [row.valid])[-3:] and t.target == row.test


def test_candidates_hold_the_target_and_only_unseen_negatives(data):
    seqs = S.build_sequences(data.interactions)
    split = S.leave_one_out(seqs)
    cands = S.sample_candidates(split, seqs, data.items.item_id, "test", n_negatives=3, seed=0)
    seen = dict(zip(seqs.user_id, seqs["items"]))
    for _, row in cands.iterrows():
        assert len(row.candidates) == 4 == len(set(row.candidates)) and row.target in row.candidates
        assert not (set(row.candidates) - {row.target}) & set(seen[row.user_id])


def test_candidates_are_deterministic_subset_stable_and_shuffled():
    data = load_dataset("ml-100k")
    seqs = S.build_sequences(data.interactions)
    split = S.leave_one_out(seqs)
    a = S.sample_candidates(split, seqs, data.items.item_id, "test", seed=0)
    b = S.sample_candidates(split, seqs, data.items.item_id, "test", seed=0)
    sub = S.sample_candidates(split.iloc[100:110], seqs, data.items.item_id, "test", seed=0)
    assert a.equals(b)
    assert sub.reset_index(drop=True).equals(a.iloc[100:110].reset_index(drop=True))
    positions = [c.index(t) for c, t in zip(a.candidates, a.target)]
    assert len(set(positions)) == 20  # the target is not always first
    other = S.sample_candidates(split, seqs, data.items.item_id, "test", seed=1)
    assert not other["candidates"].equals(a["candidates"])


def test_too_few_unseen_items_is_an_error(data):
    seqs = S.build_sequences(data.interactions)
    with pytest.raises(DataError, match="fewer than N_NEGATIVES"):
        S.sample_candidates(S.leave_one_out(seqs), seqs, data.items.item_id, "test", n_negatives=19)


def test_prepare_writes_once_and_regenerates_a_corrupt_file(data):
    folder = S.prepare(data, n_negatives=3)
    first = S.load_candidates(folder, "test")
    assert list(first.columns) == S.CANDIDATE_COLUMNS and (folder / "manifest.json").exists()
    (folder / "candidates_test.parquet").write_bytes(b"half-written")
    assert S.prepare(data, n_negatives=3) == folder
    assert S.load_candidates(folder, "test").equals(first)
    assert not list(folder.glob("*.partial"))


def test_bad_candidate_files_are_refused(tmp_path):
    with pytest.raises(DataError, match="run `python -m workbench prepare`"):
        S.load_candidates(tmp_path, "test")
    pd.DataFrame({"user_id": [1], "candidates": [[1, 2]]}).to_parquet(tmp_path / "candidates_test.parquet")
    with pytest.raises(DataError, match="lacks column"):
        S.load_candidates(tmp_path, "test")
    (tmp_path / "candidates_valid.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataError, match="unreadable"):
        S.load_candidates(tmp_path, "valid")


def test_select_users_is_seeded():
    ids = list(range(100))
    assert S.select_users(ids, None).tolist() == ids
    a, b = S.select_users(ids, 10, 0), S.select_users(ids, 10, 0)
    assert a.tolist() == b.tolist() and len(set(a)) == 10
