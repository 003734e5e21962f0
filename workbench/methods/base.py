"""The method contract every recommender implements, and the registry that finds one by name.

A method is fitted on the protocol's training part with its parameters, ranks a view of users against their fixed
candidates (-> user_id, rank), and saves and loads itself.  `run_method` (methods/running.py) drives it:
seed -> fit -> rank -> save the run with its provenance.  Adding a method = one module with one registered class.
"""
from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pandas as pd

REGISTRY: dict[str, type] = {}


def register(cls):
    """Class decorator: make a Recommender available by its `name`."""
    if not cls.name or cls.name in REGISTRY:
        raise ValueError(f"method name {cls.name!r} is empty or already registered")
    REGISTRY[cls.name] = cls
    return cls


def get_method(name: str) -> type:
    """The registered Recommender class called `name`."""
    if name not in REGISTRY:
        raise KeyError(f"unknown method {name!r}: use one of {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


class Recommender:
    """The contract: fit on the training part, rank views of users against their fixed candidates, save and load.

    Subclasses set `name` (registry key), `label` (for tables) and `result_params` (the parameters, beyond the
    candidate set and SEED, that change the ranks: they go into the run id, so runs that differ never share a folder).
    """
    name: ClassVar[str] = ""
    label: ClassVar[str] = ""
    result_params: ClassVar[tuple[str, ...]] = ()

    def __init__(self, cfg: dict, protocol, device: str = "cpu"):
        self.cfg, self.protocol, self.device = cfg, protocol, device

    @classmethod
    def run_key(cls, cfg: dict, protocol) -> dict:
        """What identifies this method's results: the candidate set, the method, its result parameters."""
        return {"method": cls.name, "protocol": protocol.identity(),
                "params": {k: cfg[k] for k in sorted(cls.result_params)}}

    def eval_view(self, which: str = "test") -> pd.DataFrame:
        """The users this method is evaluated on (all of the protocol's users unless a subclass samples)."""
        return getattr(self.protocol, which)

    def fit(self) -> pd.DataFrame:
        """Train on the protocol's training part; returns the training log (one row per epoch or step)."""
        raise NotImplementedError

    def rank(self, view: pd.DataFrame) -> pd.DataFrame:
        """Rank of each user's target among its fixed candidates: columns user_id, rank (1 = best)."""
        raise NotImplementedError

    def report(self, view: pd.DataFrame) -> dict:
        """Extra entries for the run record (e.g. full-ranking metrics); none by default."""
        return {}

    def save(self, folder: Path) -> None:
        """Write what `load` needs into the run folder (weights, adapters); nothing by default."""

    @classmethod
    def load(cls, folder: Path, record: dict, device: str = "cpu") -> "Recommender":
        """Rebuild the fitted method from a run folder written by `save`."""
        raise NotImplementedError(f"{cls.name} cannot be loaded from a run folder")
