"""The shared protocol: ordering, leave-one-out without leakage, sliding windows, fixed candidates that know their data."""
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from workbench.data import DataError, load_dataset
from workbench.data import splits
from workbench.data.protocol import load_protocol

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


@pytest.fixture
def data():
    return load_dataset("ml-100k", FIXTURES / "ml-100k")


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))


def _cfg(path, **over):
    cfg = dict(DATASET="ml-100k", DATA_PATH=str(path), SEED=0, CANDIDATE_SEED=0, N_NEGATIVES=3, MIN_INTERACTIONS=3,
               TIE_BREAK="file_order", MAX_USERS=None, HISTORY_LEN=3)
    return {**cfg, **over}


def _moved(tmp_path):
    """The fixture with one rating moved later: user 2's valid and test targets become 1 and 11 (11 and 1 before)."""
    folder = tmp_path / "moved"
    shutil.copytree(FIXTURES / "ml-100k", folder)
    text = (folder / "u.data").read_text().replace("2\t11\t1\t880002120", "2\t11\t1\t880002200")
    (folder / "u.data").write_text(text)
    return folder


def test_short_users_are_dropped_counted_and_reported(data, capsys):
    seqs = splits.build_sequences(data.interactions, 3)
    assert seqs.attrs["dropped_users"] == 1 and 5 not in set(seqs.user_id)
    assert "dropped 1 of 5 users with fewer than 3 interactions" in capsys.readouterr().out
    with pytest.raises(DataError, match="no user has at least"):
        splits.build_sequences(data.interactions, 100)
    with pytest.raises(DataError, match="empty"):
        splits.build_sequences(data.interactions.iloc[:0])
    splits.build_sequences(data.interactions, 2)
    assert "dropped" not in capsys.readouterr().out


def test_same_second_ties_follow_the_file_order_by_default(data):
    seqs = splits.build_sequences(data.interactions).set_index("user_id")["items"]
    assert seqs[1] == [7, 12, 5, 1, 4, 8, 11, 3] and seqs[2] == [5, 10, 3, 9, 11, 1]
    by_id = splits.build_sequences(data.interactions, tie_break="item_id").set_index("user_id")["items"]
    assert by_id[1] == [7, 12, 1, 5, 4, 8, 3, 11] and by_id[2] == [5, 10, 3, 9, 1, 11]
    shuffled = data.interactions.sample(frac=1, random_state=0)  # any later sort or shuffle: the row column decides
    assert splits.build_sequences(shuffled).equals(splits.build_sequences(data.interactions))
    assert splits.build_sequences(shuffled, tie_break="item_id").equals(splits.build_sequences(data.interactions,
                                                                                     tie_break="item_id"))
    with pytest.raises(DataError, match="tie_break must be 'file_order' or 'item_id'"):
        splits.build_sequences(data.interactions, tie_break="rating")


def test_leave_one_out_and_windows_do_not_leak(data):
    seqs = splits.build_sequences(data.interactions)
    split = splits.leave_one_out(seqs)
    for items, (_, row) in zip(seqs["items"], split.iterrows()):
        assert row.train + [row.valid, row.test] == items
    windows = splits.training_windows(split, history_len=3)
    for user, group in windows.groupby("user_id"):
        row = split.set_index("user_id").loc[user]
        assert group["target"].tolist() == row.train[1:]           # every training target comes from train only
        assert all(set(h) <= set(row.train) for h in group["history"])
        assert all(len(h) <= 3 for h in group["history"])
    valid, test = splits.eval_examples(split, "valid", 3), splits.eval_examples(split, "test", 3)
    for (_, v), (_, t), (_, row) in zip(valid.iterrows(), test.iterrows(), split.iterrows()):
        assert v.history == row.train[-3:] and v.target == row.valid
        assert t.history == (row.train + [row.valid])[-3:] and t.target == row.test


def test_candidates_hold_the_target_and_only_unseen_negatives(data):
    seqs = splits.build_sequences(data.interactions)
    split = splits.leave_one_out(seqs)
    cands = splits.sample_candidates(split, seqs, data.items.item_id, "test", n_negatives=3, seed=0)
    seen = dict(zip(seqs.user_id, seqs["items"]))
    for _, row in cands.iterrows():
        assert len(row.candidates) == 4 == len(set(row.candidates)) and row.target in row.candidates
        assert not (set(row.candidates) - {row.target}) & set(seen[row.user_id])


def test_candidates_are_deterministic_subset_stable_and_shuffled():
    data = load_dataset("ml-100k")
    seqs = splits.build_sequences(data.interactions)
    split = splits.leave_one_out(seqs)
    a = splits.sample_candidates(split, seqs, data.items.item_id, "test", seed=0)
    b = splits.sample_candidates(split, seqs, data.items.item_id, "test", seed=0)
    sub = splits.sample_candidates(split.iloc[100:110], seqs, data.items.item_id, "test", seed=0)
    assert a.equals(b)
    assert sub.reset_index(drop=True).equals(a.iloc[100:110].reset_index(drop=True))
    positions = [c.index(t) for c, t in zip(a.candidates, a.target)]
    assert len(set(positions)) == 20  # the target is not always first
    other = splits.sample_candidates(split, seqs, data.items.item_id, "test", seed=1)
    assert not other["candidates"].equals(a["candidates"])


def test_too_few_unseen_items_is_an_error(data):
    seqs = splits.build_sequences(data.interactions)
    with pytest.raises(DataError, match="fewer than N_NEGATIVES"):
        splits.sample_candidates(splits.leave_one_out(seqs), seqs, data.items.item_id, "test", n_negatives=19)


def test_fingerprint_identifies_the_interactions_in_file_order(data, tmp_path):
    fp = splits.fingerprint(data)
    assert len(fp) == 12 and int(fp, 16) >= 0
    assert splits.fingerprint(load_dataset("ml-100k", FIXTURES / "ml-100k")) == fp
    shuffled = splits.Dataset(data.name, data.users, data.items, data.interactions.sample(frac=1, random_state=0))
    assert splits.fingerprint(shuffled) == fp
    assert splits.fingerprint(load_dataset("ml-100k", _moved(tmp_path))) != fp
    swapped = tmp_path / "swapped"  # the same ratings, two same-second lines swapped: a different sequence
    shutil.copytree(FIXTURES / "ml-100k", swapped)
    lines = (swapped / "u.data").read_text().splitlines()
    i, j = lines.index("1\t5\t5\t880001060"), lines.index("1\t1\t2\t880001060")
    lines[i], lines[j] = lines[j], lines[i]
    (swapped / "u.data").write_text("\n".join(lines) + "\n")
    assert splits.fingerprint(load_dataset("ml-100k", swapped)) != fp
    fewer_items = splits.Dataset(data.name, data.users, data.items.iloc[:-1], data.interactions)
    assert splits.fingerprint(fewer_items) != fp


def test_prepare_writes_once_and_regenerates_a_corrupt_file(data):
    prep = splits.prepare(data, n_negatives=3)
    assert isinstance(prep, splits.Prepared) and not prep.reused
    folder = prep.folder
    first = splits.load_candidates(folder, "test")
    assert list(first.columns) == splits.CANDIDATE_COLUMNS and (folder / "manifest.json").exists()
    again = splits.prepare(data, n_negatives=3)
    assert again.reused and again.folder == folder and again.manifest == prep.manifest
    (folder / "candidates_test.parquet").write_bytes(b"half-written")
    redone = splits.prepare(data, n_negatives=3)
    assert not redone.reused and redone.folder == folder
    assert splits.load_candidates(folder, "test").equals(first)
    assert not list(folder.glob("*.partial"))


def test_prepare_records_what_identifies_the_candidates(data):
    prep = splits.prepare(data, seed=2, n_negatives=3, tie_break="item_id")
    manifest = json.loads((prep.folder / "manifest.json").read_text())
    assert manifest == prep.manifest
    assert {k: manifest[k] for k in ("dataset", "fingerprint", "tie_break", "n_negatives", "min_interactions",
                                     "candidate_seed", "users", "dropped_users")} == {
        "dataset": "ml-100k", "fingerprint": splits.fingerprint(data), "tie_break": "item_id", "n_negatives": 3,
        "min_interactions": 3, "candidate_seed": 2, "users": 4, "dropped_users": 1}
    assert splits.fingerprint(data) in prep.folder.name and "item_id" in prep.folder.name
    assert splits.prepare(data, seed=2, n_negatives=3).folder != prep.folder  # file_order: another candidate set


def test_prepare_on_other_data_does_not_reuse_candidates(data, tmp_path):
    first = splits.prepare(data, n_negatives=3)
    other = load_dataset("ml-100k", _moved(tmp_path))
    second = splits.prepare(other, n_negatives=3)
    assert second.folder != first.folder and not second.reused
    split = splits.leave_one_out(splits.build_sequences(other.interactions))
    test = splits.load_candidates(second.folder, "test", split)
    assert test["target"].tolist() == split["test"].tolist()


def test_candidates_of_other_data_are_refused_on_load(data, tmp_path):
    folder = splits.prepare(data, n_negatives=3).folder
    other = load_dataset("ml-100k", _moved(tmp_path))
    split = splits.leave_one_out(splits.build_sequences(other.interactions))
    for which in ("valid", "test"):  # user 2's last two items swapped places
        with pytest.raises(DataError, match=rf"1 of 4 {which} targets differ .*delete {folder} and run "
                                            r"`python -m workbench prepare`"):
            splits.load_candidates(folder, which, split)
    own = splits.leave_one_out(splits.build_sequences(data.interactions))
    splits.load_candidates(folder, "test", own)  # its own data: fine
    with pytest.raises(DataError, match=r"1 of 4 test targets differ .*1 not in the data"):
        splits.check_candidates(splits.load_candidates(folder, "test"), own.iloc[1:], "test", folder)
    with pytest.raises(DataError, match=r"4 list\(s\) do not hold 20 distinct items"):
        splits.check_candidates(splits.load_candidates(folder, "test"), own, "test", folder, n_negatives=19)


def test_prepare_refuses_settings_that_break_the_protocol(data):
    with pytest.raises(DataError, match="n_negatives"):
        splits.prepare(data, n_negatives=0)
    with pytest.raises(DataError, match="min_interactions"):
        splits.prepare(data, n_negatives=3, min_interactions=2)
    with pytest.raises(DataError, match="tie_break"):
        splits.prepare(data, n_negatives=3, tie_break="random")


def test_bad_candidate_files_are_refused(tmp_path):
    with pytest.raises(DataError, match="run `python -m workbench prepare`"):
        splits.load_candidates(tmp_path, "test")
    pd.DataFrame({"user_id": [1], "candidates": [[1, 2]]}).to_parquet(tmp_path / "candidates_test.parquet")
    with pytest.raises(DataError, match="lacks column"):
        splits.load_candidates(tmp_path, "test")
    (tmp_path / "candidates_valid.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataError, match="unreadable"):
        splits.load_candidates(tmp_path, "valid")


def test_select_users_is_seeded():
    ids = list(range(100))
    assert splits.select_users(ids, None).tolist() == ids
    a, b = splits.select_users(ids, 10, 0), splits.select_users(ids, 10, 0)
    assert a.tolist() == b.tolist() and len(set(a)) == 10


def test_load_protocol_on_other_files_uses_their_own_candidates(tmp_path):
    first = load_protocol(_cfg(FIXTURES / "ml-100k"))
    moved = load_protocol(_cfg(_moved(tmp_path)))
    assert moved.folder != first.folder
    for view in (moved.valid, moved.test):
        assert all(t in c for t, c in zip(view["target"], view["candidates"]))
    assert moved.test["target"].tolist() == moved.split["test"].tolist()
    assert moved.split.set_index("user_id").loc[2, "test"] == 11


def test_protocol_identity_and_candidate_seed(tmp_path, capsys):
    p = load_protocol(_cfg(FIXTURES / "ml-100k", SEED=5, CANDIDATE_SEED=1, MAX_USERS=2))
    assert "dropped 1 of 5 users with fewer than 3 interactions" in capsys.readouterr().out
    assert p.dropped_users == 1 and p.tie_break == "file_order" and p.prepared.manifest["dropped_users"] == 1
    assert p.prepared.manifest["candidate_seed"] == 1 and p.folder == p.prepared.folder
    assert p.split["user_id"].tolist() == splits.select_users([1, 2, 3, 4], 2, 1).tolist() and len(p.test) == 2
    assert p.identity() == {"dataset": "ml-100k", "fingerprint": p.fingerprint, "tie_break": "file_order",
                            "n_negatives": 3, "min_interactions": 3, "candidate_seed": 1, "max_users": 2,
                            "history_len": 3}
    assert p.fingerprint == splits.fingerprint(p.data) and p.n_items == 13 and len(p.seqs) == 4
    other = load_protocol(_cfg(_moved(tmp_path), SEED=5, CANDIDATE_SEED=1, MAX_USERS=2))
    assert other.identity() != p.identity()
    by_id = load_protocol(_cfg(FIXTURES / "ml-100k", SEED=5, CANDIDATE_SEED=1, MAX_USERS=2, TIE_BREAK="item_id"))
    assert by_id.identity()["tie_break"] == "item_id" and by_id.folder != p.folder


def test_cli_prepare_says_written_or_reused(capsys):
    from workbench import config
    from workbench.__main__ import main
    try:
        config.resolve(None, CANDIDATE_SEED=0, TIE_BREAK="file_order")
    except Exception:
        pytest.skip("config.resolve does not know CANDIDATE_SEED / TIE_BREAK yet")
    args = ["prepare", "--data-path", str(FIXTURES / "ml-100k"), "--n-negatives", "3", "--seed", "1",
            "--tie-break", "item_id"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "candidates written to" in out and "item_id" in out and "seed1" in out
    assert "dropped 1 of 5 users" in out
    assert main(args) == 0
    assert "candidates reused from" in capsys.readouterr().out
    assert main(["prepare", "--data-path", str(FIXTURES / "ml-100k"), "--n-negatives", "0"]) == 2


def test_smaller_seeded_subsets_lie_inside_larger_ones():
    ids = list(range(1000, 1943))
    assert set(splits.select_users(ids, 24, 3)) <= set(splits.select_users(ids, 40, 3)) <= set(splits.select_users(ids, 60, 3))
    small, large = splits.seeded_subset(97_000, 24, 0), splits.seeded_subset(97_000, 48, 0)
    assert set(small) <= set(large) and len(set(large)) == 48 and list(large) == sorted(large)


@pytest.mark.parametrize("fresh", [True, False], ids=["written", "reused"])
def test_load_protocol_builds_the_sequences_and_reads_each_candidate_file_once(monkeypatch, fresh):
    """The data path runs once per load_protocol (it ran twice: prepare, then load_protocol again)."""
    if not fresh:
        load_protocol(_cfg(FIXTURES / "ml-100k"))  # the files exist: the second call reuses them
    calls = {"sequences": 0, "candidates": 0}
    build, load = splits.build_sequences, splits.load_candidates

    def counted_build(*a, **k):
        calls["sequences"] += 1
        return build(*a, **k)

    def counted_load(*a, **k):
        calls["candidates"] += 1
        return load(*a, **k)

    monkeypatch.setattr(splits, "build_sequences", counted_build)
    monkeypatch.setattr(splits, "load_candidates", counted_load)
    p = load_protocol(_cfg(FIXTURES / "ml-100k"))
    assert calls == {"sequences": 1, "candidates": len(splits.SPLITS)}
    assert p.prepared.reused is not fresh and p.identity()["n_negatives"] == 3


def test_the_candidate_identity_is_defined_once_and_names_the_folder(data):
    prep = splits.prepare(data, seed=2, n_negatives=3)
    assert prep.identity == splits.candidate_identity(data, 2, 3, 3, "file_order")
    assert prep.folder == splits.prepared_dir(prep.identity)
    assert set(splits.CANDIDATE_IDENTITY) <= set(prep.manifest)
