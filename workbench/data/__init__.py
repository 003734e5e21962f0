"""Data: MovieLens and text-rich (MIND, Amazon Reviews) loaders into one tidy data model, and the shared protocol."""
from .dataset import DataError, Dataset, fingerprint  # noqa: F401
from .sources import load_dataset  # noqa: F401
from .splits import Prepared, check_candidates, prepare  # noqa: F401
