"""Data: MovieLens loaders (one tidy data model) and the shared evaluation protocol."""
from .movielens import DataError, Dataset, load_dataset  # noqa: F401
