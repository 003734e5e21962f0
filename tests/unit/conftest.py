"""Fixtures shared by the unit tests."""
from pathlib import Path

import pytest

from workbench.data import load_dataset
from workbench.methods.mkv import prompts

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


@pytest.fixture(scope="session")
def catalog():
    """Users and items of the ml-100k fixture, as the prompts read them."""
    data = load_dataset("ml-100k", FIXTURES / "ml-100k")
    return prompts.Catalog(data.users, data.items)


@pytest.fixture
def run_folders(tmp_path, monkeypatch):
    """Saved runs and checkpoints in this test's own temporary folders."""
    from workbench import results
    monkeypatch.setenv(results.RESULTS_ENV, str(tmp_path / "results"))
    monkeypatch.setenv("WORKBENCH_CHECKPOINTS", str(tmp_path / "checkpoints"))
