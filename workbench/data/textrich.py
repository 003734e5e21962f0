"""Text-rich loaders: MIND (news) and Amazon Reviews (2018 or 2023) from a folder the researcher brings, as the
tidy data model of movielens.py, with the items' long text fields and one joined `text` column for prompts.

Mapping (both sources):
- Users and items get contiguous ids 1..N in the order of their sorted raw id strings; the raw id is kept in `raw_id`.
  Users are those with at least one interaction; items are those that at least one interaction names (the catalogue
  files also list news or products nobody clicked or reviewed: they are left out, so that the candidate pool and the
  embedding table hold only items of the interactions).
- interactions(user_id, item_id, rating, timestamp, row): timestamp in unix seconds (int); `row` = the order in which
  the interactions are listed by the file (see MIND below), so same-second ties keep that order.
- items(item_id, title, year=<NA>, genres, release_date=None, raw_id, <text fields>, text); users(user_id, age, gender,
  occupation, zip: all missing, raw_id).

MIND (folder with behaviors.tsv and news.tsv): interactions = the history clicks and the clicked impressions (`N1-1`),
rating 1. A history has no time of its own: a user's history clicks (the histories of the user's rows merged in
order of first listing, each news once; MIND repeats the same history on every row of a user) get the timestamps
t0 - n, ..., t0 - 1, one second apart in their listed order, where t0 is the user's earliest impression time and n the
history's length. Their times are synthetic (only their order means anything); being distinct seconds, they keep the
listed order under both tie rules. `row`: the behaviors rows in file order, each contributing the user's not yet listed
history clicks, then its clicked impressions in listed order. Times ("11/11/2019 9:05:58 AM") are read as UTC.

Amazon (folder with one review file and one `meta_*` file, .jsonl/.json, optionally .gz; the format is detected per
record from its keys): 2023 reviews (user_id, parent_asin or asin, rating, timestamp in ms) and metadata (parent_asin,
title, description list, store, main_category + categories, price float or null); 2018 reviews (reviewerID, asin,
overall, unixReviewTime in s) and metadata (asin, title, description list or string, brand, category, price "$12.99",
"$5 - $9" (the lower bound) or "" (missing)). The item is the parent_asin where given. A repeated catalogue id keeps
its first record.

Bad input: malformed lines (bad JSON, a TSV row with the wrong number of fields, an unreadable time or impression) are
skipped with one printed line (how many, the first line number, the file), unless they are all the lines, or more than
MAX_BAD_LINES and more than MAX_BAD_SHARE of them: then a DataError. Interactions naming items absent from the
catalogue file are dropped with one printed line. Items with no title and no description (abstract) are kept, so that
no user's sequence changes, titled by their raw id (prompts refuse empty titles), and reported in one printed line.
An empty file, or no interaction left, is a DataError.

Longer than 300 lines: two source formats (MIND, Amazon Reviews), each with its own tolerant parser.
"""
from __future__ import annotations

import gzip
import json
import re
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from .dataset import DataError, Dataset, tidy

MAX_BAD_SHARE = 0.01  # malformed lines beyond this share of a file (and beyond MAX_BAD_LINES) are refused
MAX_BAD_LINES = 10  # up to this many malformed lines are always only skipped (small or hand-edited files)
MIND_FILES = ("behaviors.tsv", "news.tsv")
MIND_TIME = "%m/%d/%Y %I:%M:%S %p"
AMAZON_FILES = "one review file (e.g. Books.jsonl[.gz]) and its metadata file (meta_Books.jsonl[.gz])"
JSON_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz")
PRICE = re.compile(r"^\$?\s*([\d,]+(?:\.\d+)?)(?:\s*-\s*\$?\s*[\d,]+(?:\.\d+)?)?$")


# ---------------------------------------------------------------------------------------------------- reading lines
def _text_lines(path: Path):
    """The file's lines (gzip when it ends in .gz), split on \\n only, so that a stray \\r stays inside its field."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", newline="\n") as fh:
        yield from fh


def check_bad_lines(path: Path, total: int, bad: int, first_bad: int | None, what: str) -> None:
    """Refuse an empty file or too many malformed lines; report the skipped ones in one line."""
    if total == 0:
        raise DataError(f"{path} is empty: re-download or re-extract the {what} file")
    if bad == total:
        raise DataError(f"none of the {total} line(s) of {path} is a valid {what} record (first: line {first_bad}): "
                        f"is it the right, unmodified file?")
    if bad > MAX_BAD_LINES and bad > MAX_BAD_SHARE * total:
        raise DataError(f"{path}: {bad} of {total} lines are malformed (first: line {first_bad}), more than "
                        f"{MAX_BAD_SHARE:.0%}: the file is damaged or truncated; re-download or re-extract it")
    if bad:
        print(f"{path}: skipped {bad} malformed line(s) of {total} (first: line {first_bad})")


def parse_lines(path: Path, parse, what: str) -> list:
    """The records that `parse` makes of the file's non-blank lines; a line it returns None for is malformed."""
    records, total, bad, first_bad = [], 0, 0, None
    try:
        for number, line in enumerate(_text_lines(path), 1):
            if not line.strip():
                continue
            total += 1
            record = parse(line.rstrip("\r\n"))
            if record is None:
                bad, first_bad = bad + 1, first_bad or number
            else:
                records.append(record)
    except (OSError, UnicodeDecodeError, EOFError) as err:
        raise DataError(f"{path} is unreadable ({type(err).__name__}: {str(err)[:120]}): "
                        f"re-download or re-extract it") from None
    check_bad_lines(path, total, bad, first_bad, what)
    return records


# ------------------------------------------------------------------------------------------------------------ MIND
def mind_time(text: str) -> int:
    """'11/11/2019 9:05:58 AM' (read as UTC) -> unix seconds."""
    return int(datetime.strptime(text.strip(), MIND_TIME).replace(tzinfo=timezone.utc).timestamp())


def parse_behavior(line: str) -> tuple | None:
    """(user, time, history, clicked news) of one behaviors.tsv row; None when malformed."""
    fields = line.split("\t")
    if len(fields) != 5 or not fields[1].strip():
        return None
    try:
        time = mind_time(fields[2])
    except ValueError:
        return None
    shown = [token.rsplit("-", 1) for token in fields[4].split()]
    if any(len(pair) != 2 or pair[1] not in ("0", "1") for pair in shown):
        return None  # the MIND test set has no click labels: it cannot give interactions
    return fields[1].strip(), time, fields[3].split(), [news for news, label in shown if label == "1"]


def parse_news(line: str) -> tuple | None:
    """(news id, category, subcategory, title, abstract) of one news.tsv row; None when malformed."""
    fields = line.split("\t")
    if len(fields) != 8 or not fields[0].strip():
        return None
    return tuple(f.strip() for f in fields[:5])


def mind_interactions(behaviors: list[tuple]) -> pd.DataFrame:
    """History clicks and clicked impressions in listing order, with the history timestamps of the module docstring."""
    first_time = {}
    for user, time, _, _ in behaviors:
        first_time[user] = min(time, first_time.get(user, time))
    listed: dict[str, dict] = {}  # user -> {news id: position in the merged history}
    rows = []  # (user, news, timestamp, or None for a history click, to be set once the history's length is known)
    for user, time, history, clicks in behaviors:
        seen = listed.setdefault(user, {})
        for news in history:
            if news not in seen:
                seen[news] = len(seen)
                rows.append((user, news, None))
        rows.extend((user, news, time) for news in clicks)
    stamps = [t if t is not None else first_time[u] - len(listed[u]) + listed[u][n] for u, n, t in rows]
    return pd.DataFrame({"raw_user": [u for u, _, _ in rows], "raw_item": [n for _, n, _ in rows],
                         "rating": 1, "timestamp": np.asarray(stamps, dtype="int64")})


def mind_items(news: list[tuple]) -> pd.DataFrame:
    """News as items: title, genres [category, subcategory], the text fields and their joined text."""
    df = pd.DataFrame(news, columns=["raw_id", "category", "subcategory", "title", "abstract"])
    df = df.drop_duplicates("raw_id", ignore_index=True)
    df["genres"] = [[c for c in pair if c] for pair in zip(df["category"], df["subcategory"])]
    df["text"] = [join_text(title=t, category=" > ".join(g), abstract=a)
                  for t, g, a in zip(df["title"], df["genres"], df["abstract"])]
    df["empty_text"] = [not (t or a) for t, a in zip(df["title"], df["abstract"])]
    return df


def load_mind(folder: Path) -> Dataset:
    """MIND from a folder holding behaviors.tsv and news.tsv (train or dev set; the test set has no labels)."""
    f_behaviors, f_news = (folder / f for f in MIND_FILES)
    behaviors = parse_lines(f_behaviors, parse_behavior, "MIND behaviors")
    news = parse_lines(f_news, parse_news, "MIND news")
    return assemble("mind", mind_interactions(behaviors), mind_items(news), ["category", "subcategory", "abstract"],
                    {"interactions": f_behaviors, "items": f_news, "users": f_behaviors})


# ---------------------------------------------------------------------------------------------------------- Amazon
def parse_json(line: str) -> dict | None:
    """One JSON object, or None."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def review(record: dict | None) -> tuple | None:
    """(user, item, rating, unix seconds) of a 2023 or 2018 review record; None when a field is missing or bad."""
    if record is None:
        return None
    user = record.get("user_id", record.get("reviewerID"))
    item = record.get("parent_asin") or record.get("asin")
    rating = record.get("rating", record.get("overall"))
    try:
        seconds = int(record["timestamp"]) // 1000 if "timestamp" in record else int(record["unixReviewTime"])
        rating = float(rating)
    except (KeyError, TypeError, ValueError):
        return None
    if not (isinstance(user, str) and user and isinstance(item, str) and item) or rating != rating:
        return None
    return user, item, rating, seconds


def price(value) -> float | None:
    """2023 float or 2018 '$1,299.00' / '$5 - $9' (lower bound) -> float; '' or anything else -> None."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value) if value == value else None
    match = PRICE.match(str(value or "").strip())
    return float(match.group(1).replace(",", "")) if match else None


def _strings(value) -> list[str]:
    """A list of non-empty stripped strings from a list, a string or nothing."""
    values = value if isinstance(value, list) else [value]
    return [str(v).strip() for v in values if v is not None and str(v).strip()]


def product(record: dict | None) -> dict | None:
    """The item fields of a 2023 or 2018 metadata record; None without an id."""
    if record is None:
        return None
    raw_id = record.get("parent_asin") or record.get("asin")
    if not isinstance(raw_id, str) or not raw_id:
        return None
    categories = _strings(record.get("main_category")) + _strings(record.get("categories", record.get("category")))
    return {"raw_id": raw_id, "title": " ".join(_strings(record.get("title"))),
            "description": " ".join(_strings(record.get("description"))),
            "brand": " ".join(_strings(record.get("store", record.get("brand")))),
            "categories": list(dict.fromkeys(categories)), "price": price(record.get("price"))}


def amazon_items(products: list[dict]) -> pd.DataFrame:
    """Products as items: genres = categories, the text fields and their joined text."""
    df = pd.DataFrame(products, columns=["raw_id", "title", "description", "brand", "categories", "price"])
    df = df.drop_duplicates("raw_id", ignore_index=True)
    df["price"] = df["price"].astype("float64")
    df["genres"] = df["categories"].map(list)
    df["text"] = [join_text(title=t, brand=b, categories=" > ".join(c), price=f"${p:,.2f}" if p == p else "",
                            description=d)
                  for t, b, c, p, d in zip(df["title"], df["brand"], df["categories"], df["price"], df["description"])]
    df["empty_text"] = [not (t or d) for t, d in zip(df["title"], df["description"])]
    return df


def amazon_files(folder: Path) -> tuple[Path, Path]:
    """(review file, metadata file) of the folder: exactly one of each."""
    found = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(JSON_SUFFIXES))
    meta = [p for p in found if p.name.startswith("meta_")]
    reviews = [p for p in found if not p.name.startswith("meta_")]
    if len(meta) != 1 or len(reviews) != 1:
        names = ", ".join(p.name for p in found) or "none"
        raise DataError(f"{folder} must hold {AMAZON_FILES}; found {len(reviews)} review and {len(meta)} metadata "
                        f"file(s) ({names}): put exactly one category's pair in the folder")
    return reviews[0], meta[0]


def load_amazon(folder: Path) -> Dataset:
    """Amazon Reviews 2023 or 2018 from a folder holding one review file and its meta_ file."""
    f_reviews, f_meta = amazon_files(folder)
    reviews = parse_lines(f_reviews, lambda line: review(parse_json(line)), "Amazon review")
    products = parse_lines(f_meta, lambda line: product(parse_json(line)), "Amazon metadata")
    inter = pd.DataFrame(reviews, columns=["raw_user", "raw_item", "rating", "timestamp"])
    return assemble("amazon", inter, amazon_items(products), ["description", "brand", "categories", "price"],
                    {"interactions": f_reviews, "items": f_meta, "users": f_reviews})


# -------------------------------------------------------------------------------------------------------- assembly
def join_text(**fields: str) -> str:
    """'title: X; brand: Y; ...' over the non-empty fields: one readable item description for prompts."""
    return "; ".join(f"{key}: {value}" for key, value in fields.items() if value)


def drop_unknown_items(inter: pd.DataFrame, known: pd.Series, files: dict) -> pd.DataFrame:
    """Interactions whose item the catalogue file lists; the others are counted and dropped with one printed line."""
    unknown = ~inter["raw_item"].isin(known)
    if unknown.all():
        raise DataError(f"none of the {len(inter)} interactions of {files['interactions']} names an item of "
                        f"{files['items']}: the files are from different releases or categories; use a matching pair")
    if unknown.any():
        first = inter.loc[unknown, "raw_item"].iloc[0]
        print(f"{files['interactions']}: dropped {int(unknown.sum())} of {len(inter)} interactions naming items absent "
              f"from {files['items']} ({inter.loc[unknown, 'raw_item'].nunique()} item(s), first: {first})")
    return inter[~unknown].reset_index(drop=True)


def report_empty_text(items: pd.DataFrame, files: dict) -> pd.DataFrame:
    """Items without a title get their raw id as title; those with no text at all are reported in one line."""
    empty = items["empty_text"]
    if empty.any():
        print(f"{files['items']}: {int(empty.sum())} item(s) have no title and no description (first: "
              f"{items.loc[empty, 'raw_id'].iloc[0]}): kept, titled by their raw id")
    titles = items["title"].where(items["title"] != "", items["raw_id"])
    return items.assign(title=titles).drop(columns="empty_text")


def contiguous_ids(raw: pd.Series) -> dict:
    """Raw id -> 1..N in sorted order of the raw id strings."""
    return {r: k for k, r in enumerate(sorted(raw.unique()), 1)}


def assemble(name: str, inter: pd.DataFrame, catalogue: pd.DataFrame, fields: list[str], files: dict) -> Dataset:
    """Raw interactions (file order) and catalogue -> the tidy Dataset, validated and sorted by tidy()."""
    if inter.empty:
        raise DataError(f"{files['interactions']} holds no interaction (no click or review): use the train or dev "
                        f"files of the data set")
    inter = drop_unknown_items(inter, catalogue["raw_id"], files)
    user_ids, item_ids = contiguous_ids(inter["raw_user"]), contiguous_ids(inter["raw_item"])
    items = catalogue[catalogue["raw_id"].isin(item_ids)].copy()
    items["item_id"] = items["raw_id"].map(item_ids).astype("int64")
    items = report_empty_text(items, files)
    users = pd.DataFrame({"user_id": list(user_ids.values()), "raw_id": list(user_ids)})
    numbered = pd.DataFrame({"user_id": inter["raw_user"].map(user_ids), "item_id": inter["raw_item"].map(item_ids),
                             "rating": inter["rating"], "timestamp": inter["timestamp"]})
    return tidy(name, users, items, numbered, str(files["interactions"].parent), lines=False, files=files,
                parse_titles=False, demographics=False,
                extra_columns={"items": ["raw_id", *fields, "text"], "users": ["raw_id"]})


def load_text_rich(name: str, path: str | Path | None) -> Dataset:
    """`mind` or `amazon` from the folder `path` (see the module docstring for the files)."""
    expected = {"mind": " and ".join(MIND_FILES), "amazon": AMAZON_FILES}
    if name not in expected:
        raise DataError(f"unknown text-rich data set {name!r}: use one of {', '.join(expected)}")
    if path is None:
        raise DataError(f"{name} is not packaged offline: set DATA_PATH to the folder holding {expected[name]}")
    folder = Path(path)
    if not folder.is_dir():
        raise DataError(f"DATA_PATH {folder} is not a folder: point it at the folder holding {expected[name]}")
    if name == "mind":
        missing = [f for f in MIND_FILES if not (folder / f).is_file()]
        if missing:
            raise DataError(f"{folder} lacks {' and '.join(missing)}: MIND needs {expected[name]} (unzip the "
                            f"MINDsmall_train or MINDsmall_dev archive there)")
        return load_mind(folder)
    return load_amazon(folder)
