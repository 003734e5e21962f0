"""The method contract every recommender implements, and the registry that declares and finds a method by name.

A method is declared once, in its folder's `__init__.py` (`methods/<name>/`): a `MethodSpec` with its label, the
module that implements it, its notebook, its report entries and its ablation; its parameters are registered into the
one parameter table beside it (`config.register`).  The implementing class is bound by `@implements(name)` and
imported only when first asked for (`get_method`), so declaring every method stays light.

The contract (`Recommender`): the constructor builds the method's parts and does no work; `fit` trains on the
protocol's training part; `rank` ranks a view of users against their fixed candidates (-> user_id, rank);
`diagnose` runs any extra, timed evaluation (generate-then-match); `report` adds cheap entries to the run record;
`save` / `load` write and rebuild the fitted method.  `methods/pipeline.py` drives it: seed -> fit -> rank ->
diagnose -> save with provenance.  Reproduce: `python -m workbench run 02 --profile smoke`.
"""
from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ClassVar, Sequence

from . import config


@dataclass(frozen=True)
class Entry:
    """One row of the comparison (report, notebook 09): a run of the method, or one model of it.

    Args:
        label: the row's name.
        run_name: the run's name when it is not the method's (e.g. mkv-zeroshot).
        changes: parameter overrides of that run, as (name, value) pairs.
        variant: a column of the run's variants.parquet to read instead of its ranks (BDLM's models).
        paired_with: the label of the entry this one is paired against in the report (an LLM method's untrained
            reference: "did it learn?").
        method, notebook: filled in by `register` from the method's spec.
    """
    label: str
    run_name: str | None = None
    changes: tuple = ()
    variant: str | None = None
    paired_with: str | None = None
    method: str = ""
    notebook: str = ""


ZERO_SHOT = (("LLM_TRAIN_SAMPLES", 0),)  # an LLM method's untrained reference: the same prompts, no training


def zero_shot(cfg: dict) -> dict:
    """The parameters of an LLM method's untrained reference run (`<name>-zeroshot`): no SFT, no generation."""
    return config.override(cfg, **dict(ZERO_SHOT), GEN_EVAL_USERS=0)


def llm_entries(name: str, label: str, zero_label: str | None = None) -> tuple[Entry, Entry]:
    """An LLM method's two comparison rows: its untrained reference (`zero_label`, default `<label> zero-shot`; run
    `<name>-zeroshot`) and the trained method (`label`), paired with it in the report."""
    zero = Entry(zero_label or f"{label} zero-shot", f"{name}-zeroshot", ZERO_SHOT)
    return zero, Entry(label, paired_with=zero.label)


@dataclass(frozen=True)
class Ablation:
    """A method's ablation: its arms (parameter changes), the settings every arm shares, the arm others are paired with.

    Args:
        arms_param: the parameter listing the arms to run (e.g. MKV_ARMS).
        arm_changes: arm name -> its parameter changes (an unknown arm is a ValueError naming the known ones).
        own_training: arms train on ABLATION_TRAIN_SAMPLES windows (False: the method's own training size).
        reference: the arm the others are paired against.
        notebook: the notebook that runs it, when it is not the method's.
    """
    arms_param: str
    arm_changes: Callable[[str], dict]
    own_training: bool = True
    reference: str | None = None
    notebook: str | None = None

    def config(self, cfg: dict) -> dict:
        """The parameters every arm shares: ABLATION_EVAL_USERS users, no generation and (own_training)
        ABLATION_TRAIN_SAMPLES windows."""
        changes = {"LLM_EVAL_USERS": cfg["ABLATION_EVAL_USERS"], "GEN_EVAL_USERS": 0}
        if self.own_training:
            changes["LLM_TRAIN_SAMPLES"] = cfg["ABLATION_TRAIN_SAMPLES"]
        return config.override(cfg, **changes)

    def arms(self, cfg: dict) -> dict:
        """{arm: parameter changes} for the arms cfg lists (each once: the parameter table refuses a repeat); the
        reference arm alone (nothing to compare it with) is a one-line error."""
        listed = list(cfg[self.arms_param])
        if self.reference is not None and listed == [self.reference]:
            raise config.ConfigError(f"{self.arms_param} = {listed} holds only the reference arm {self.reference!r}, "
                                     f"which the other arms are compared with: add at least one other arm")
        return {arm: self.arm_changes(arm) for arm in listed}


@dataclass
class MethodSpec:
    """A registered method: what it is called, where it is implemented, and what the report and ablation read.

    Args:
        name: registry key (lower case; the run ids start with it).
        label: the name tables and figures show.
        module: the module whose class is marked `@implements(name)`.
        notebook: the notebook (file stem) that saves its runs.
        entries: its rows in the comparison.
        ablation: its ablation, if any.
    """
    name: str
    label: str
    module: str
    notebook: str
    entries: tuple[Entry, ...] = ()
    ablation: Ablation | None = None
    recommender: type | None = field(default=None, repr=False)

    @property
    def ablation_notebook(self) -> str:
        """The notebook (file stem) that runs the ablation."""
        return (self.ablation.notebook if self.ablation and self.ablation.notebook else self.notebook)


REGISTRY: dict[str, MethodSpec] = {}


def register(spec: MethodSpec) -> MethodSpec:
    """Declare a method (its folder's `__init__.py` calls this once)."""
    if not spec.name or spec.name in REGISTRY:
        raise ValueError(f"method name {spec.name!r} is empty or already registered")
    spec.entries = tuple(dataclasses.replace(e, method=spec.name, notebook=spec.notebook) for e in spec.entries)
    REGISTRY[spec.name] = spec
    return spec


def entries() -> tuple[Entry, ...]:
    """Every registered method's comparison rows, in registration order."""
    return tuple(e for spec in REGISTRY.values() for e in spec.entries)


def implements(name: str):
    """Class decorator: bind a Recommender class to the registered method `name` (its name and label come from the
    spec)."""
    def bind(cls):
        spec = get_spec(name)
        cls.name, cls.label = spec.name, spec.label
        spec.recommender = cls
        return cls
    return bind


def get_spec(name: str) -> MethodSpec:
    """The registered method called `name`, or a one-line error listing the registered ones."""
    if name not in REGISTRY:
        raise KeyError(f"unknown method {name!r}: use one of {', '.join(REGISTRY)}")
    return REGISTRY[name]


def get_method(name: str) -> type:
    """The Recommender class of the registered method `name` (its module imported on first use)."""
    spec = get_spec(name)
    if spec.recommender is None:
        importlib.import_module(spec.module)
        if spec.recommender is None:
            raise ImportError(f"{spec.module} has no class marked @implements({name!r})")
    return spec.recommender


class Recommender:
    """The contract: build parts; fit on the training part; rank views of users against their fixed candidates.

    Subclasses set `result_params` (the parameters, beyond the candidate set and SEED, that change the ranks: they
    go into the run id, so runs that differ never share a folder); `name` and `label` come from the registry.
    The constructor must not train, read other runs or change process-wide state: that belongs in `fit`.
    """
    name: ClassVar[str] = ""
    label: ClassVar[str] = ""
    result_params: ClassVar[tuple[str, ...]] = ()

    def __init__(self, cfg: dict, protocol, device: str = "cpu"):
        self.cfg, self.protocol, self.device = cfg, protocol, device
        self.inputs: dict[str, str] = {}  # run id -> content digest of every saved run this one read
        self.resumed: list[str] = []  # what fit resumed or reused instead of computing (checkpoints, rounds)

    @classmethod
    def upstream(cls, cfg: dict) -> dict:
        """The saved runs this method reads, {role: (method name, that run's parameters)}: their run ids are part of
        this method's run id (`pipeline.method_run_id`), so reading another run makes another run.  None here."""
        return {}

    @classmethod
    def run_key(cls, cfg: dict, protocol) -> dict:
        """What identifies this method's results: the candidate set, the method, its result parameters."""
        return {"method": cls.name, "protocol": protocol.identity(),
                "params": {k: cfg[k] for k in sorted(cls.result_params)}}

    def eval_view(self, which: str = "test"):
        """The users this method is evaluated on (all of the protocol's users unless a subclass samples)."""
        return getattr(self.protocol, which)

    def fit(self, callbacks: Sequence = ()):
        """Train on the protocol's training part; returns the training log (one row per epoch or step).

        callbacks: `transformers.TrainerCallback`s for methods trained by a Trainer (ignored by the others)."""
        raise NotImplementedError

    def rank(self, view, scorer: str | None = None):
        """Rank of each user's target among its fixed candidates: columns user_id, rank (1 = best).

        scorer: how an LLM method scores candidates (`llm/scoring.py`); None = the method's default."""
        raise NotImplementedError

    def diagnose(self, view) -> dict:
        """Extra evaluation beyond the ranks (timed apart as `diagnose_seconds`); none by default."""
        return {}

    def report(self, view) -> dict:
        """Extra entries for the run record from what fit, rank and diagnose computed (no inference here)."""
        return {}

    def save(self, folder: Path) -> None:
        """Write what `load` needs into the run folder (weights, adapters); nothing by default."""

    @classmethod
    def load(cls, folder: Path, record: dict, device: str = "cpu") -> "Recommender":
        """Rebuild the fitted method from a run folder written by `save`."""
        raise NotImplementedError(f"{cls.name} cannot be loaded from a run folder")
