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
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a model hub
os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))])


def pytest_collection_modifyitems(session, config, items):
    """Run nbval's notebook items first and remember which notebooks they execute."""
    notebooks = [item for item in items if str(item.fspath).endswith(".ipynb")]
    items[:] = notebooks + [item for item in items if not str(item.fspath).endswith(".ipynb")]
    config.nbval_notebooks = {Path(str(item.fspath)).name for item in notebooks}
