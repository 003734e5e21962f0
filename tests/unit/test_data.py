"""Loaders on small files in the official formats, and the bad inputs they must refuse with a clear message."""
import shutil
from pathlib import Path

import pytest

from workbench.data import DataError, load_dataset
from workbench.data.movielens import split_title

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


@pytest.mark.parametrize("name", ["ml-100k", "ml-1m"])
def test_official_loaders_give_the_tidy_model(name):
    data = load_dataset(name, FIXTURES / name)
    assert list(data.users.columns) == ["user_id", "age", "gender", "occupation", "zip"]
    assert list(data.items.columns) == ["item_id", "title", "year", "genres", "release_date"]
    assert list(data.interactions.columns) == ["user_id", "item_id", "rating", "timestamp"]
    assert data.summary()["users"] == 5 and data.summary()["items"] == 12
    inter = data.interactions
    assert (inter.groupby("user_id")["timestamp"].diff().dropna() >= 0).all()
    tied = inter[inter.duplicated(["user_id", "timestamp"], keep=False)]
    assert (tied.groupby(["user_id", "timestamp"])["item_id"].diff().dropna() > 0).all()  # ties by item id
    assert data.items.loc[data.items.item_id == 4, "title"].item() == "The Film Number 4"
    assert all(isinstance(g, list) and g for g in data.items["genres"])


def test_ml1m_occupation_codes_are_named():
    data = load_dataset("ml-1m", FIXTURES / "ml-1m")
    assert data.users.loc[data.users.user_id == 1, "occupation"].item() == "academic/educator"


def test_packaged_ml100k_has_the_published_size():
    data = load_dataset("ml-100k")
    assert data.summary() == {"dataset": "ml-100k", "users": 943, "items": 1682, "interactions": 100000,
                              "density": 0.063}


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


def test_non_numeric_timestamp_is_named(tmp_path):
    folder = _copy(tmp_path)
    lines = (folder / "u.data").read_text().splitlines()
    lines[2] = lines[2].rsplit("\t", 1)[0] + "\tyesterday"
    (folder / "u.data").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="'timestamp' has 1 non-numeric value"):
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
