"""Test session settings, set before any notebook kernel starts: smoke profile, results and figures in a temp folder.

Notebooks are executed once per session: by nbval when `notebooks/` is collected (make test), with their items run
first so that tests/test_notebooks.py reads what they saved; otherwise that module runs them with papermill.
"""
import os
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent
_TMP = tempfile.mkdtemp(prefix="workbench-tests-")
os.environ["WORKBENCH_PROFILE"] = "smoke"
os.environ.setdefault("WORKBENCH_RESULTS", os.path.join(_TMP, "results"))
os.environ.setdefault("WORKBENCH_FIGURES", os.path.join(_TMP, "figures"))
os.environ.setdefault("WORKBENCH_CHECKPOINTS", os.path.join(_TMP, "checkpoints"))
# Kernels (nbval's, papermill's) must draw inline, or the executed notebooks carry no figures: no MPLBACKEND for them;
# this process draws off-screen
os.environ.pop("MPLBACKEND", None)
import matplotlib  # noqa: E402

matplotlib.use("Agg")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a model hub
os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))])


def pytest_collection_modifyitems(session, config, items):
    """Run nbval's notebook items first and remember which notebooks they execute."""
    notebooks = [item for item in items if str(item.fspath).endswith(".ipynb")]
    items[:] = notebooks + [item for item in items if not str(item.fspath).endswith(".ipynb")]
    config.nbval_notebooks = {Path(str(item.fspath)).name for item in notebooks}
    config.nbval_outputs = {}


def pytest_runtest_teardown(item):
    """Keep what each nbval cell printed and drew: {notebook: [(cell source, outputs)]}, for tests/test_notebooks.py."""
    if hasattr(item, "test_outputs") and hasattr(item, "cell"):
        store = item.config.__dict__.setdefault("nbval_outputs", {})
        store.setdefault(Path(str(item.fspath)).name, []).append((item.cell.source, item.test_outputs or []))
