"""Fixtures shared by the unit tests."""
from pathlib import Path

import pytest

from workbench.data import load_dataset
from workbench.prompts import keyvalue as kv

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


@pytest.fixture(scope="session")
def catalog():
    """Users and items of the ml-100k fixture, as the prompts read them."""
    data = load_dataset("ml-100k", FIXTURES / "ml-100k")
    return kv.Catalog(data.users, data.items)
