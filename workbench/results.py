"""One folder per evaluated run, written whole: results/<run id>/ranks.parquet, metrics.json and the method's files.

A run id is `<name>-<profile>-seed<seed>-<hash>`: the hash covers everything that changes the ranks (the candidate
set's identity and the method's result parameters), so runs that differ never share a folder.  The folder is built
under a temporary name and renamed into place, and metrics.json carries the ranks' sha256, checked on load.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from . import metrics
from . import outputs, process
from .assets import sha256_of

RESULTS_ENV = "WORKBENCH_RESULTS"


class ResultError(ValueError):
    """A saved run that is missing, damaged or does not match what it is compared with."""


def results_dir() -> Path:
    """Where runs are written: $WORKBENCH_RESULTS, else results/ when refreshing the committed outputs, else
    runs/scratch/results (see outputs.py)."""
    return outputs.write_dir("results", RESULTS_ENV)


def result_path(name: str) -> Path:
    """A saved run folder or file by name: the scratch copy first, then the committed one (outputs.locate)."""
    return outputs.locate("results", RESULTS_ENV, name)


def short_hash(obj) -> str:
    """Eight hex digits of the sha256 of obj as canonical JSON."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:8]


def run_id(name: str, cfg: dict, key: dict) -> str:
    """`<name>-<profile>-seed<SEED>-<hash of key>`: readable, and distinct for runs whose key differs."""
    return f"{name}-{cfg['PROFILE']}-seed{cfg['SEED']}-{short_hash(key)}"


def _record(name: str, ranks: pd.DataFrame, cfg: dict, device: str, wall_time_s: float, extra: dict | None,
            n_boot: int | None) -> dict:
    ci = metrics.bootstrap_ci(ranks["rank"], n_boot=n_boot or cfg.get("N_BOOTSTRAP", 1000), seed=cfg.get("SEED", 0))
    return {
        "run": name,
        "protocol": f"sampled ranking, {cfg.get('N_NEGATIVES', 19) + 1} candidates, leave-one-out test",
        "metrics": {m: round(float(ci.loc[m, "mean"]), 6) for m in metrics.METRICS},
        "ci95": {m: [round(float(ci.loc[m, "ci_low"]), 6), round(float(ci.loc[m, "ci_high"]), 6)] for m in metrics.METRICS},
        "n_users": int(len(ranks)),
        "ranks_path": "ranks.parquet",
        "parameters": cfg,
        "profile": cfg.get("PROFILE"),
        "seed": cfg.get("SEED"),
        "git_commit": process.git_commit(),
        "versions": process.versions(),
        "device": process.device_description(device),
        "wall_time_s": round(float(wall_time_s), 2),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **(extra or {}),
    }


def replace_folder(tmp: Path, folder: Path) -> None:
    """Move a finished temporary folder onto `folder`; an older folder of that name is removed only afterwards."""
    old = None
    if folder.exists():
        old = folder.with_name(f".{folder.name}.old-{os.getpid()}-{time.monotonic_ns()}")
        os.replace(folder, old)
    os.replace(tmp, folder)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def save_run(name: str, ranks: pd.DataFrame, cfg: dict, device: str, wall_time_s: float,
             extra: dict | None = None, n_boot: int | None = None, write_files=None) -> Path:
    """Write the run folder whole (ranks, metrics.json with the ranks' checksum, `write_files(folder)`); returns the JSON.

    write_files: optional callable that writes the method's own files (weights, adapters) into the temporary folder.
    """
    if list(ranks.columns[:2]) != ["user_id", "rank"]:
        raise ValueError("ranks must have columns user_id, rank")
    if ranks["user_id"].duplicated().any():
        raise ValueError("ranks hold a user twice: each user has one target rank")
    root = results_dir()
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{name}.", suffix=".partial"))
    try:
        ranks.to_parquet(tmp / "ranks.parquet", index=False)
        if write_files is not None:
            write_files(tmp)
        record = _record(name, ranks, cfg, device, wall_time_s, extra, n_boot)
        record["ranks_sha256"] = sha256_of(tmp / "ranks.parquet")
        (tmp / "metrics.json").write_text(json.dumps(record, indent=2, default=str))
        os.chmod(tmp, 0o755)
        replace_folder(tmp, root / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root / name / "metrics.json"


@dataclass
class SavedRun:
    """A run read back from its folder: its record (metrics.json), ranks and folder (the fitted model:
    `methods.pipeline.load_recommender`)."""
    record: dict
    ranks: pd.DataFrame
    folder: Path


def load_run(name_or_path) -> SavedRun:
    """A saved run by run id or folder path; a damaged or half-written run is an error, never read."""
    folder = Path(name_or_path)
    if not folder.is_dir():
        folder = result_path(str(name_or_path))
    path = folder / "metrics.json"
    if not path.exists():
        raise FileNotFoundError(f"no metrics.json in {folder}: run the notebook that writes it first")
    try:
        record = json.loads(path.read_text())
    except ValueError:
        raise ResultError(f"{path} is not valid JSON: delete {folder} and re-run the notebook that writes it") from None
    ranks_path = folder / record.get("ranks_path", "ranks.parquet")
    expected = record.get("ranks_sha256")
    if not ranks_path.exists() or (expected and sha256_of(ranks_path) != expected):
        raise ResultError(f"{ranks_path} does not match {path} (changed or half-written): delete {folder} and "
                          f"re-run the notebook that writes it")
    return SavedRun(record, pd.read_parquet(ranks_path), folder)


def find_runs(prefix: str = "") -> list[str]:
    """Run ids (scratch and committed) that start with `prefix`, sorted (temporary folders excluded)."""
    found = set()
    for root in outputs.read_dirs("results", RESULTS_ENV):
        if root.is_dir():
            found |= {p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
                      and p.name.startswith(prefix) and (p / "metrics.json").exists()}
    return sorted(found)
