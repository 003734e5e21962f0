"""Loaders on small files in the official formats, and the bad inputs they must refuse with a clear message."""
import shutil
from pathlib import Path

import pytest

from workbench.data import DataError, load_dataset
from workbench.data.dataset import split_title

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
# user 1's ratings in u.data / ratings.dat order; two same-second pairs are in non-id order (5 before 1, 11 before 3)
USER1_FILE_ORDER = [7, 12, 5, 1, 4, 8, 11, 3]


@pytest.mark.parametrize("name", ["ml-100k", "ml-1m"])
def test_official_loaders_give_the_tidy_model(name):
    data = load_dataset(name, FIXTURES / name)
    assert list(data.users.columns) == ["user_id", "age", "gender", "occupation", "zip"]
    assert list(data.items.columns) == ["item_id", "title", "year", "genres", "release_date"]
    assert list(data.interactions.columns) == ["user_id", "item_id", "rating", "timestamp", "row"]
    assert data.summary()["users"] == 5 and data.summary()["items"] == 12
    inter = data.interactions
    assert (inter.groupby("user_id")["timestamp"].diff().dropna() >= 0).all()
    tied = inter[inter.duplicated(["user_id", "timestamp"], keep=False)]
    assert (tied.groupby(["user_id", "timestamp"])["row"].diff().dropna() > 0).all()  # ties in file order
    assert data.items.loc[data.items.item_id == 4, "title"].item() == "The Film Number 4"
    assert all(isinstance(g, list) and g for g in data.items["genres"])


@pytest.mark.parametrize("name", ["ml-100k", "ml-1m"])
def test_same_second_ratings_keep_the_file_order(name):
    data = load_dataset(name, FIXTURES / name)
    inter = data.interactions
    assert inter.loc[inter.user_id == 1, "item_id"].tolist() == USER1_FILE_ORDER
    assert sorted(inter["row"]) == list(range(24))  # 0-based position in the file as read
    first = inter.sort_values("row").iloc[0]
    assert (first.user_id, first.item_id, first.timestamp) == (1, 7, 880001000)


def test_ml1m_occupation_codes_are_named():
    data = load_dataset("ml-1m", FIXTURES / "ml-1m")
    assert data.users.loc[data.users.user_id == 1, "occupation"].item() == "academic/educator"


def test_packaged_ml100k_has_the_published_size():
    data = load_dataset("ml-100k")
    assert data.summary() == {"dataset": "ml-100k", "users": 943, "items": 1682, "interactions": 100000,
                              "density": 0.063}
    first = data.interactions.sort_values("row").iloc[0]  # the first line of the official u.data
    assert (first.user_id, first.item_id, first.rating, first.timestamp) == (196, 242, 3, 881250949)


def test_split_title():
    assert split_title("Shawshank Redemption, The (1994)") == ("The Shawshank Redemption", 1994)
    assert split_title("Unknown title") == ("Unknown title", None)


def _copy(tmp_path, name="ml-100k"):
    dst = tmp_path / name
    shutil.copytree(FIXTURES / name, dst)
    return dst


def test_missing_file_says_to_set_data_path(tmp_path):
    folder = _copy(tmp_path)
    (folder / "u.user").unlink()
    with pytest.raises(DataError, match="u.user not found.*DATA_PATH"):
        load_dataset("ml-100k", folder)


def test_missing_folder_and_unpackaged_dataset(tmp_path):
    with pytest.raises(DataError, match="not a folder"):
        load_dataset("ml-100k", tmp_path / "nowhere")
    with pytest.raises(DataError, match="not packaged offline"):
        load_dataset("ml-1m")


def test_wrong_columns_are_named(tmp_path):
    folder = _copy(tmp_path)
    text = (folder / "u.data").read_text().splitlines()
    (folder / "u.data").write_text("\n".join(line.rsplit("\t", 1)[0] for line in text) + "\n")
    with pytest.raises(DataError, match="3 columns, expected 4"):
        load_dataset("ml-100k", folder)


@pytest.mark.parametrize("name, file, sep", [("ml-100k", "u.data", "\t"), ("ml-1m", "ratings.dat", "::")])
def test_non_numeric_timestamp_is_named_by_its_line(tmp_path, name, file, sep):
    folder = _copy(tmp_path, name)
    lines = (folder / file).read_text().splitlines()
    lines[2] = lines[2].rsplit(sep, 1)[0] + f"{sep}yesterday"  # the third line of the file
    (folder / file).write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"'timestamp' has 1 non-numeric value\(s\), first at line 3 \('yesterday'\)"):
        load_dataset(name, folder)


def test_non_numeric_item_id_is_named_by_its_line(tmp_path):
    folder = _copy(tmp_path)
    lines = (folder / "u.item").read_text().splitlines()
    lines[0] = "x" + lines[0]
    (folder / "u.item").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="u.item.*'item_id'.*line 1 "):
        load_dataset("ml-100k", folder)


def test_unreadable_file_is_reported(tmp_path):
    folder = _copy(tmp_path, "ml-1m")
    (folder / "movies.dat").write_bytes(b"\x00\x01garbage")
    with pytest.raises(DataError, match="movies.dat"):
        load_dataset("ml-1m", folder)


def test_items_missing_from_the_item_file(tmp_path):
    folder = _copy(tmp_path)
    with open(folder / "u.data", "a") as fh:
        fh.write("1\t999\t4\t880009999\n")
    with pytest.raises(DataError, match="absent from the item file"):
        load_dataset("ml-100k", folder)


def test_duplicated_rows_are_reported_and_kept(tmp_path, capsys):
    folder = _copy(tmp_path)
    lines = (folder / "u.data").read_text().splitlines()
    (folder / "u.data").write_text("\n".join(lines + [lines[0], lines[0], lines[5]]) + "\n")
    data = load_dataset("ml-100k", folder)
    out = capsys.readouterr().out
    assert "3 duplicated interaction(s)" in out and "same user, item and timestamp" in out
    assert len(data.interactions) == 27 and data.duplicate_rows == 3
    load_dataset("ml-100k", FIXTURES / "ml-100k")
    assert "duplicated" not in capsys.readouterr().out


def test_tie_share_counts_only_ratings_that_have_a_predecessor(capsys):
    """24 ratings of 5 users make 19 consecutive pairs, 11 of them in the same second: 11/19, not 11/24."""
    from workbench.notebook import explore
    data = load_dataset("ml-100k", FIXTURES / "ml-100k")
    note = explore.tie_statistics(data).attrs["note"]
    assert note.startswith(f"{11 / 19:.3f} of consecutive ratings share a timestamp"), note
