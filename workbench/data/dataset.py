"""The tidy data model every loader produces: users, items, interactions in file order; its checks and fingerprint.

users(user_id, age, gender, occupation, zip) · items(item_id, title, year, genres, release_date)
· interactions(user_id, item_id, rating, timestamp, row), `row` = 0-based position in the file as read, so that the
file order of same-second ratings survives any later sort.  Loaders: movielens.py, textrich.py (by name: sources.py).
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

DEMOGRAPHICS = ["age", "gender", "occupation", "zip"]


class DataError(ValueError):
    """A data file that is missing, unreadable or malformed, with a message that says what to do."""


@dataclass
class Dataset:
    """One data set in the tidy model; interactions sorted by user, time, then file order (the `row` column)."""
    name: str
    users: pd.DataFrame
    items: pd.DataFrame
    interactions: pd.DataFrame
    duplicate_rows: int = 0  # interactions repeating an earlier (user, item, timestamp); kept, and reported at load

    def summary(self) -> dict:
        """Counts a reader checks first."""
        n_u, n_i, n = len(self.users), len(self.items), len(self.interactions)
        return {"dataset": self.name, "users": n_u, "items": n_i, "interactions": n,
                "density": round(n / max(n_u * n_i, 1), 4)}


def split_title(raw: str) -> tuple[str, int | None]:
    """'Shawshank Redemption, The (1994)' -> ('The Shawshank Redemption', 1994)."""
    raw = str(raw).strip()
    match = re.match(r"^(.*?)\s*\((\d{4})\)\s*$", raw)
    title, year = (match.group(1), int(match.group(2))) if match else (raw, None)
    article = re.match(r"^(.*), (The|A|An|Les|La|Le|Il|Das|Der|Die|El)$", title)
    if article:
        title = f"{article.group(2)} {article.group(1)}"
    return title, year


def require_columns(df: pd.DataFrame, columns: list[str], source: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(f"{source} lacks column(s) {', '.join(missing)} (has: {', '.join(map(str, df.columns))}): "
                        f"point DATA_PATH at the official, unmodified files")


def _numeric(df: pd.DataFrame, columns: list[str], source: str, lines: bool = True) -> pd.DataFrame:
    """Columns as int64; a bad value is located by its 1-based line (headerless files: index 0 = line 1),
    or by its 0-based row for a table that has no lines (lines=False, the packaged parquet)."""
    for col in columns:
        values = pd.to_numeric(df[col], errors="coerce")
        bad = values.isna()
        if bad.any():
            pos = int(np.flatnonzero(bad.to_numpy())[0])
            where = f"line {pos + 1}" if lines else f"row {pos} (0-based)"
            raise DataError(f"{source}: column {col!r} has {int(bad.sum())} non-numeric value(s), first at {where} "
                            f"({df[col].iloc[pos]!r}): fix or remove those lines")
        df[col] = values.astype("int64")
    return df


def read_file(path: Path, reader, what: str) -> pd.DataFrame:
    if not path.exists():
        raise DataError(f"{what} not found at {path}: set DATA_PATH to the folder holding the official files")
    try:
        return reader(path)
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as err:
        raise DataError(f"{path} is unreadable ({type(err).__name__}: {str(err)[:120]}): "
                        f"re-download or re-extract it") from None


def tidy(name: str, users: pd.DataFrame, items: pd.DataFrame, inter: pd.DataFrame, source: str,
         lines: bool = True, files: dict | None = None, *, parse_titles: bool = True, demographics: bool = True,
         extra_columns: dict | None = None) -> Dataset:
    """Validate columns and types, parse titles, number the interactions in file order (`row`) and sort them by
    user, time, then file order; duplicated (user, item, timestamp) rows are kept and reported.

    The frames must come in file order; lines=True: they were read from headerless text files (index 0 = line 1).
    files: the file each frame was read from ({"interactions": path, "items": ..., "users": ...}), named in messages.
    Text-rich sources (textrich.py) pass parse_titles=False (items carry a clean `title`; year is missing),
    demographics=False (age, gender, occupation, zip filled with missing values) and extra_columns
    ({"items": [...], "users": [...]}: columns kept after the model's own).
    """
    label = {k: str((files or {}).get(k, f"{source} {k}")) for k in ("interactions", "items", "users")}
    extra = {k: list((extra_columns or {}).get(k, ())) for k in ("items", "users")}
    require_columns(inter, ["user_id", "item_id", "rating", "timestamp"], label["interactions"])
    require_columns(items, ["item_id", "raw_title" if parse_titles else "title", "genres", *extra["items"]], label["items"])
    require_columns(users, ["user_id", *(DEMOGRAPHICS if demographics else []), *extra["users"]], label["users"])
    inter = _numeric(inter[["user_id", "item_id", "rating", "timestamp"]].copy(), ["user_id", "item_id", "rating",
                                                                                   "timestamp"],
                     label["interactions"], lines)
    inter["row"] = np.arange(len(inter), dtype="int64")
    items = _numeric(items.copy(), ["item_id"], label["items"], lines)
    users = _numeric(users.copy(), ["user_id", "age"] if demographics else ["user_id"], label["users"], lines)
    if parse_titles:
        parsed = items["raw_title"].map(split_title)
        items["title"] = [t for t, _ in parsed]
        items["year"] = pd.array([y for _, y in parsed], dtype="Int64")
    else:
        items["year"] = pd.array([pd.NA] * len(items), dtype="Int64")
    if "release_date" not in items:
        items["release_date"] = None
    items = items[["item_id", "title", "year", "genres", "release_date", *extra["items"]]].sort_values(
        "item_id", ignore_index=True)
    if demographics:
        users = users.astype({"gender": str, "occupation": str, "zip": str})
    else:
        users = users.assign(age=pd.array([pd.NA] * len(users), dtype="Int64"), gender=None, occupation=None, zip=None)
    users = users[["user_id", *DEMOGRAPHICS, *extra["users"]]].sort_values("user_id", ignore_index=True)
    unknown = ~inter["item_id"].isin(items["item_id"])
    if unknown.any():
        first = inter[unknown].iloc[0]
        where = f"line {first['row'] + 1}" if lines else f"row {first['row']} (0-based)"
        raise DataError(f"{label['interactions']}: {int(unknown.sum())} interactions name items absent from the item "
                        f"file (first: item {int(first['item_id'])} at {where}): the files are from different releases")
    duplicates = int(inter.duplicated(["user_id", "item_id", "timestamp"]).sum())
    if duplicates:
        print(f"{label['interactions']}: {duplicates} duplicated interaction(s) (same user, item and timestamp as an "
              f"earlier line), kept as interactions: remove them from the file if they are not real repeats")
    inter = inter.sort_values(["user_id", "timestamp", "row"], ignore_index=True)
    return Dataset(name, users, items, inter, duplicates)


def text_digest(data: Dataset) -> str:
    """12 hex digits of the sha256 of the item and user tables, every column (titles, genres, texts, user features):
    what an LLM's prompts are made of, beyond what `fingerprint` covers."""
    digest = hashlib.sha256(b"workbench-text-v1")
    for table in (data.items, data.users):
        frame = table.sort_values(table.columns[0], kind="stable") if len(table.columns) else table
        digest.update(frame.to_csv(index=False).encode())
    return digest.hexdigest()[:12]


def fingerprint(data: Dataset) -> str:
    """12 hex digits of the sha256 of the interactions' user_id, item_id, timestamp in file order and the item ids:
    what the sequences and the candidates depend on (ratings and attributes do not enter)."""
    inter = data.interactions
    if "row" in inter.columns:
        inter = inter.sort_values("row")
    digest = hashlib.sha256(b"workbench-data-v1")
    arrays = [inter[c].to_numpy() for c in ("user_id", "item_id", "timestamp")]
    arrays.append(np.sort(data.items["item_id"].to_numpy()))
    for arr in arrays:
        arr = np.ascontiguousarray(arr, dtype="<i8")
        digest.update(len(arr).to_bytes(8, "little"))
        digest.update(arr.tobytes())
    return digest.hexdigest()[:12]


