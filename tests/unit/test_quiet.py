"""Third-party noise is filtered in one place, and only the messages it names."""
import logging
import warnings

import workbench  # noqa: F401 - importing it installs the filters
from workbench import quiet


def test_library_warnings_named_in_quiet_are_hidden_and_others_are_not():
    from tqdm import TqdmWarning
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")  # as a fresh process sees them, then the filters `import workbench` installs
        quiet.install()
        warnings.warn("IProgress not found. Please update jupyter and ipywidgets.", TqdmWarning)
        warnings.warn("`is_gradient_checkpointing` is deprecated and will be removed in v6.", FutureWarning)
        warnings.warn("something the reader must see", FutureWarning)
    assert [str(w.message) for w in seen] == ["something the reader must see"]


def test_named_log_lines_are_dropped_and_the_rest_kept(caplog):
    quiet.install()
    logger = logging.getLogger("transformers.trainer_utils")
    with caplog.at_level(logging.WARNING, logger="transformers.trainer_utils"):
        logger.warning("mtime may not be reliable on this filesystem, falling back to numerical ordering")
        logger.warning("a real problem")
    assert [r.getMessage() for r in caplog.records] == ["a real problem"]


def test_library_progress_bars_are_off():
    import os
    assert os.environ.get("HF_DATASETS_DISABLE_PROGRESS_BARS") == "1"
    assert os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS") == "1"  # transformers' "Loading weights" bar follows it
