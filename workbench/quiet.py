"""Third-party noise, filtered in one place: warnings and progress bars we cannot fix at their source.

`install()` runs when `workbench` is imported (before transformers, datasets or tqdm.auto are), so every notebook,
test and command line sees the same filters.  Each filter names one message; nothing of our own code is hidden.
"""
from __future__ import annotations

import logging
import os
import warnings

# (category, message regex): warnings from libraries that say nothing about the reader's run
WARNINGS = (
    # tqdm.auto in a kernel without ipywidgets: it falls back to text bars, which is what we want
    ("TqdmWarning", r"IProgress not found"),
    # transformers' own Trainer reads this deprecated property (transformers 5.x); not our call
    ("FutureWarning", r"`is_gradient_checkpointing` is deprecated"),
)
# (logger, message start): log lines of libraries about their own internals
LOG_LINES = (
    ("transformers.trainer_utils", "mtime may not be reliable"),
)
# environment switches read by libraries at import: HF datasets' per-map progress bars (TRL prepares five per run)
# and the Hugging Face hub's, which transformers follows ("Loading weights" at every model load)
ENVIRONMENT = {"HF_DATASETS_DISABLE_PROGRESS_BARS": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}


class _DropMessages(logging.Filter):
    """Drops log records whose message starts with one of the given texts."""

    def __init__(self, starts: tuple[str, ...]):
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(self.starts)


def install() -> None:
    """Apply every filter above (idempotent)."""
    for key, value in ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    for category, message in WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=_category(category))
    for name, start in LOG_LINES:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) and start in f.starts for f in logger.filters):
            logger.addFilter(_DropMessages((start,)))


def _category(name: str) -> type[Warning]:
    """A warning class by name (tqdm's is looked up without importing tqdm.auto)."""
    if name == "TqdmWarning":
        from tqdm import TqdmWarning
        return TqdmWarning
    import builtins
    return getattr(builtins, name)
