"""Text-rich loaders (MIND, Amazon 2023 and 2018) on small files in the official formats, and their bad inputs."""
import gzip
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from workbench import config
from workbench.data import DataError, fingerprint, load_dataset
from workbench.data import textrich
from workbench.data.splits import build_sequences

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
MIND = FIXTURES / "mind"
AMAZON_2023, AMAZON_2018 = FIXTURES / "amazon" / "2023", FIXTURES / "amazon" / "2018"
# hand-checked from behaviors.tsv: history first (listed once though repeated on every row), then clicks by time;
# U100's earliest impression is row 8 (8:00 AM), before row 1 (9:05 AM); row 7 (U500) is malformed; U500's two
# clicks of row 10 share a second and keep their listed order; N8 and N11 are never clicked.
MIND_SEQUENCES = {"U100": ["N1", "N2", "N3", "N10", "N4", "N6", "N7"], "U200": ["N2", "N7"],
                  "U300": ["N9", "N10", "N12"], "U400": ["N5", "N6", "N9", "N1"], "U500": ["N3", "N12", "N2"]}
U100_FIRST_IMPRESSION = 1573459200  # 11/11/2019 8:00:00 AM UTC
UA, UB, UC, UD = ("AGKHLEW2SOWHNMFQIJGBECAF7INQ", "AFQLNQNQYFWQZPJQZS6V3NZU4QBQ", "AEAXAJACSDFLGZY4ZF2VLXM4JTTQ",
                  "AHV6QCNBJNSGLATP56JAWJ3C4G2A")
# line 4 is malformed, B0MISSING1 is absent from the metadata, UB's B00R8DXL44 review has asin B00R8DXL45
AMAZON_2023_SEQUENCES = {UA: ["B081TJ8YS3", "B00YQ6X8EO", "B07PNNCSP9"], UB: ["B07PNNCSP9", "B09JS339BZ", "B00R8DXL44"],
                         UC: ["B09JS339BZ", "B08BZ63GMJ", "B00YQ6X8EO"], UD: ["B081TJ8YS3"]}
AMAZON_2018_SEQUENCES = {"A1V6B6TNIC10QE": ["B0000530HU", "B00004U9V2", "B00005A77F"],
                         "A2F218M5AHZSUO": ["B00004U9V2", "B00005NDTD", "B0000530HU"],
                         "A3J9L1S8N3ORXD": ["B00005A77F"]}
CASES = [("mind", MIND, MIND_SEQUENCES), ("amazon", AMAZON_2023, AMAZON_2023_SEQUENCES),
         ("amazon", AMAZON_2018, AMAZON_2018_SEQUENCES)]


def raw_sequences(data) -> dict:
    """Each user's raw item ids in protocol order (user, time, file order), keyed by the raw user id."""
    users = dict(zip(data.users["user_id"], data.users["raw_id"]))
    items = dict(zip(data.items["item_id"], data.items["raw_id"]))
    inter = data.interactions.sort_values(["user_id", "timestamp", "row"])
    return {users[u]: [items[i] for i in g] for u, g in inter.groupby("user_id")["item_id"]}


@pytest.mark.parametrize("name, folder, expected", CASES)
def test_sequences_ids_and_columns(name, folder, expected):
    data = load_dataset(name, folder)
    assert raw_sequences(data) == expected
    assert list(data.users.columns) == ["user_id", "age", "gender", "occupation", "zip", "raw_id"]
    assert list(data.items.columns[:6]) == ["item_id", "title", "year", "genres", "release_date", "raw_id"]
    assert data.items.columns[-1] == "text"
    assert list(data.interactions.columns) == ["user_id", "item_id", "rating", "timestamp", "row"]
    assert data.users["user_id"].tolist() == list(range(1, len(expected) + 1))
    assert data.users["raw_id"].tolist() == sorted(expected)
    assert data.items["item_id"].tolist() == list(range(1, len(data.items) + 1))
    assert sorted(data.items["raw_id"]) == sorted({i for s in expected.values() for i in s})  # only items used
    assert data.users["age"].isna().all() and data.users["occupation"].isna().all()
    assert data.items["year"].isna().all() and data.items["release_date"].isna().all()
    assert sorted(data.interactions["row"]) == list(range(len(data.interactions)))
    assert all(str(t).strip() for t in data.items["title"]) and all(isinstance(g, list) for g in data.items["genres"])
    assert len(fingerprint(data)) == 12


@pytest.mark.parametrize("name, folder, expected", CASES)
def test_loaded_data_goes_through_the_protocol(name, folder, expected):
    data = load_dataset(name, folder)
    seqs = build_sequences(data.interactions, 3, report=False)
    assert len(seqs) == sum(len(s) >= 3 for s in expected.values())
    assert all(1 <= i <= len(data.items) for s in seqs["items"] for i in s)


def test_mind_history_precedes_the_first_impression_and_is_listed_once():
    data = load_dataset("mind", MIND)
    inter = data.interactions[data.interactions.user_id == 1]  # U100
    assert inter["timestamp"].tolist()[:4] == [U100_FIRST_IMPRESSION - 3, U100_FIRST_IMPRESSION - 2,
                                               U100_FIRST_IMPRESSION - 1, U100_FIRST_IMPRESSION]
    assert (inter["rating"] == 1).all()
    # history before the clicks of the same behaviors row in the file order (`row`), and never repeated
    assert inter.sort_values("row")["item_id"].map(dict(zip(data.items.item_id, data.items.raw_id))).tolist() == [
        "N1", "N2", "N3", "N4", "N6", "N7", "N10"]


def test_mind_text_fields_are_kept_and_joined():
    data = load_dataset("mind", MIND)
    n1 = data.items.set_index("raw_id").loc["N1"]
    assert n1["title"] == 'Headline number 1: "quoted" words'
    assert (n1["category"], n1["subcategory"], n1["genres"]) == ("sports", "football_nfl", ["sports", "football_nfl"])
    assert n1["abstract"].startswith("Abstract of story 1, with a comma; and a semicolon")
    assert n1["text"] == ('title: Headline number 1: "quoted" words; category: sports > football_nfl; '
                          'abstract: Abstract of story 1, with a comma; and a semicolon.')
    n12 = data.items.set_index("raw_id").loc["N12"]
    assert n12["abstract"] == "" and "abstract" not in n12["text"]


def test_amazon_2023_fields_and_timestamps_in_seconds():
    data = load_dataset("amazon", AMAZON_2023)
    items = data.items.set_index("raw_id")
    conditioner = items.loc["B00YQ6X8EO"]
    assert conditioner["description"] == "Restores leather. Safe on wood."
    assert conditioner["brand"] == "Howard Products" and pd.isna(conditioner["price"])
    assert conditioner["categories"] == ["All Beauty"] and conditioner["genres"] == ["All Beauty"]
    cleanser = items.loc["B081TJ8YS3"]
    assert cleanser["price"] == 6.99 and cleanser["categories"] == ["All Beauty", "Beauty & Personal Care",
                                                                     "Skin Care", "Face"]
    assert cleanser["text"] == ("title: Yes to Tomatoes Detoxifying Charcoal Cleanser; brand: Yes To; categories: "
                                "All Beauty > Beauty & Personal Care > Skin Care > Face; price: $6.99; "
                                "description: Gentle daily cleanser.")
    inter = data.interactions
    user_c = data.users.loc[data.users.raw_id == UC, "user_id"].item()
    assert inter.loc[inter.user_id == user_c, "timestamp"].tolist() == [1600000000, 1600000000, 1601000000]
    assert inter.loc[inter.user_id == user_c, "rating"].tolist() == [5, 4, 3]  # 5.0, 4.0, 3.0 in the file


def test_amazon_2018_gzip_price_strings_and_string_description():
    data = load_dataset("amazon", AMAZON_2018)
    items = data.items.set_index("raw_id")
    assert items.loc["B00004U9V2", "price"] == 12.99
    assert pd.isna(items.loc["B0000530HU", "price"])  # "" = no price
    assert items.loc["B00005A77F", "price"] == 1299.0 and items.loc["B00005NDTD", "price"] == 5.5  # a range: lower
    assert items.loc["B0000530HU", "description"] == "Lemon scented shampoo."  # a string, not a list
    assert items.loc["B00004U9V2", "brand"] == "Crabtree & Evelyn"
    assert items.loc["B00005A77F", "genres"] == ["Luxury Beauty", "Tools"]
    first = data.interactions.sort_values("row").iloc[0]
    assert first["timestamp"] == 1276560000 and first["rating"] == 5


def test_price_parser():
    assert [textrich.price(v) for v in (12.5, None, "", "$12.99", "$1,299.00", "$5 - $9", "<div>junk</div>")] == [
        12.5, None, None, 12.99, 1299.0, 5.0, None]


def test_malformed_lines_are_skipped_with_one_line(capsys):
    load_dataset("mind", MIND)
    out = capsys.readouterr().out
    assert "behaviors.tsv: skipped 1 malformed line(s) of 10 (first: line 7)" in out
    load_dataset("amazon", AMAZON_2023)
    out = capsys.readouterr().out
    assert "All_Beauty.jsonl: skipped 1 malformed line(s) of 12 (first: line 4)" in out


def test_items_absent_from_the_catalogue_are_dropped_with_a_note(tmp_path, capsys):
    load_dataset("amazon", AMAZON_2023)
    assert "dropped 1 of 11 interactions naming items absent from" in capsys.readouterr().out
    folder = _copy(tmp_path, MIND)
    with open(folder / "behaviors.tsv", "a") as fh:
        fh.write("11\tU300\t11/16/2019 1:00:00 PM\tN9 N10\tN99-1 N4-1\n")
    data = load_dataset("mind", folder)
    assert "dropped 1 of 21 interactions naming items absent from" in capsys.readouterr().out
    assert raw_sequences(data)["U300"] == ["N9", "N10", "N12", "N4"]


def _copy(tmp_path, folder):
    dst = tmp_path / folder.name
    shutil.copytree(folder, dst)
    return dst


def _append(path, lines):
    with open(path, "a") as fh:
        fh.write("".join(line + "\n" for line in lines))


def test_too_many_malformed_lines_are_refused(tmp_path):
    folder = _copy(tmp_path, MIND)
    _append(folder / "behaviors.tsv", [f"{k}\tU9\tnot a time\t\tN1-1" for k in range(11, 22)])  # 12 bad of 21
    with pytest.raises(DataError, match=r"12 of 21 lines are malformed \(first: line 7\), more than 1%.*re-download"):
        load_dataset("mind", folder)


def test_a_file_of_malformed_lines_is_refused(tmp_path):
    folder = _copy(tmp_path, AMAZON_2023)
    (folder / "meta_All_Beauty.jsonl").write_text("not json\n{\"no\": \"id\"}\n")
    with pytest.raises(DataError, match="none of the 2 line.*meta_All_Beauty.jsonl.*right, unmodified file"):
        load_dataset("amazon", folder)


@pytest.mark.parametrize("folder, file", [(MIND, "news.tsv"), (AMAZON_2023, "All_Beauty.jsonl")])
def test_an_empty_file_is_refused(tmp_path, folder, file):
    folder = _copy(tmp_path, folder)
    (folder / file).write_text("\n")
    with pytest.raises(DataError, match=f"{file} is empty"):
        load_dataset("mind" if file.endswith("tsv") else "amazon", folder)


def test_an_empty_gzip_file_is_refused(tmp_path):
    folder = _copy(tmp_path, AMAZON_2018)
    with gzip.open(folder / "meta_Luxury_Beauty.json.gz", "wt") as fh:
        fh.write("")
    with pytest.raises(DataError, match="meta_Luxury_Beauty.json.gz is empty"):
        load_dataset("amazon", folder)


def test_items_without_text_are_kept_titled_by_their_raw_id(tmp_path, capsys):
    folder = _copy(tmp_path, AMAZON_2023)
    meta = [json.loads(line) for line in (folder / "meta_All_Beauty.jsonl").read_text().splitlines()]
    meta[0].update(title="", description=[])  # B00YQ6X8EO
    (folder / "meta_All_Beauty.jsonl").write_text("".join(json.dumps(m) + "\n" for m in meta))
    data = load_dataset("amazon", folder)
    assert "1 item(s) have no title and no description (first: B00YQ6X8EO): kept" in capsys.readouterr().out
    assert raw_sequences(data) == AMAZON_2023_SEQUENCES
    item = data.items.set_index("raw_id").loc["B00YQ6X8EO"]
    assert item["title"] == "B00YQ6X8EO" and item["text"].startswith("brand: Howard Products")


def test_missing_files_and_path_are_named(tmp_path):
    with pytest.raises(DataError, match="not packaged offline.*behaviors.tsv and news.tsv"):
        load_dataset("mind")
    folder = _copy(tmp_path, MIND)
    (folder / "news.tsv").unlink()
    with pytest.raises(DataError, match="lacks news.tsv: MIND needs behaviors.tsv and news.tsv"):
        load_dataset("mind", folder)
    with pytest.raises(DataError, match="not a folder"):
        load_dataset("amazon", tmp_path / "nowhere")
    with pytest.raises(DataError, match=r"meta_Books.*found 0 review and 0 metadata file\(s\) \(none\)"):
        load_dataset("amazon", tmp_path / "mind")
    both = _copy(tmp_path, AMAZON_2023)
    shutil.copy(AMAZON_2018 / "Luxury_Beauty.json.gz", both)
    with pytest.raises(DataError, match="found 2 review and 1 metadata.*exactly one category's pair"):
        load_dataset("amazon", both)


def test_mind_test_set_without_labels_is_refused(tmp_path):
    folder = _copy(tmp_path, MIND)
    rows = [line.split("\t") for line in (folder / "behaviors.tsv").read_text().splitlines()]
    unlabeled = ["\t".join(r[:4] + [" ".join(t.rsplit("-", 1)[0] for t in r[4].split())]) for r in rows if len(r) == 5]
    (folder / "behaviors.tsv").write_text("\n".join(unlabeled) + "\n")
    with pytest.raises(DataError, match="none of the 9 line"):
        load_dataset("mind", folder)


def test_config_accepts_the_text_rich_datasets(tmp_path):
    cfg = config.resolve("smoke", DATASET="mind", DATA_PATH=str(MIND))
    assert cfg["DATASET"] == "mind"
    with pytest.raises(config.ConfigError, match="DATA_PATH"):
        config.resolve("smoke", DATASET="amazon")
