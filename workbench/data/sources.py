"""Load a data set by name: the packaged MovieLens-100K, the official GroupLens files, or a text-rich source (MIND,
Amazon Reviews) from a folder the researcher brings.  Reproduce: `python -m workbench prepare --dataset ml-100k`.
"""
from __future__ import annotations

from pathlib import Path

from .dataset import DataError, Dataset
from .movielens import load_official, load_packaged_ml100k
from .textrich import load_text_rich

TEXT_RICH = ("mind", "amazon")  # loaded by textrich.py


def load_dataset(name: str = "ml-100k", path: str | Path | None = None) -> Dataset:
    """Load a data set by name: official files from `path` if given, else the packaged ML-100K; mind and amazon
    (textrich.py) always need `path`."""
    if name in TEXT_RICH:
        return load_text_rich(name, path)
    if path is not None:
        return load_official(name, path)
    if name != "ml-100k":
        raise DataError(f"{name} is not packaged offline: download it from GroupLens and set DATA_PATH to its folder")
    return load_packaged_ml100k()
