"""One folder per evaluated run, written whole: results/<run id>/ranks.parquet, metrics.json and the method's files.

A run id is `<name>-<profile>-seed<seed>-<hash>`: the hash covers everything that changes the ranks (the candidate
set's identity, the method's result parameters, the base model's weights, the run ids of the runs it read), so runs
that differ never share a folder.  The folder is built under a temporary name and renamed into place.

Nothing is read back unverified: metrics.json lists the sha256 of every file the run wrote (`files_sha256`) and is
itself sealed (`record_sha256`, the digest of the rest of the record); `load_run` refuses a record without them, one
whose seal or any present file does not match, metrics that do not follow from the ranks, and a run that read
another run (`inputs`) which has since been re-made.  Weights and adapters stay out of git: a listed file that is
absent is an error only where it is needed (`SavedRun.file`).
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


REQUIRED = ("ranks.parquet",)  # kept in git with metrics.json; every other listed file may be local-only (weights)


def _seal(record: dict) -> str:
    """sha256 of a record's canonical JSON (without its seal)."""
    body = {k: v for k, v in record.items() if k != "record_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def file_hashes(folder: Path) -> dict:
    """sha256 of every file under a run folder but metrics.json (and hidden files), by path relative to it."""
    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): sha256_of(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != "metrics.json" and not p.name.startswith(".")}


def content_digest(record: dict) -> str:
    """A short digest of what a saved run holds (its files' sha256s): what a run that read it records."""
    return short_hash(record["files_sha256"])


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
    """Write the run folder whole (ranks, `write_files(folder)`, then metrics.json with every file's sha256 and its
    seal); returns the JSON.

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
        record["files_sha256"] = file_hashes(tmp)
        record = json.loads(json.dumps(record, default=str))  # as it reads back: the seal covers exactly that
        record["record_sha256"] = _seal(record)
        (tmp / "metrics.json").write_text(json.dumps(record, indent=2))
        os.chmod(tmp, 0o755)
        replace_folder(tmp, root / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root / name / "metrics.json"


@dataclass
class SavedRun:
    """A run read back from its folder and verified: its record (metrics.json), ranks and folder (the fitted model:
    `methods.pipeline.load_recommender`)."""
    record: dict
    ranks: pd.DataFrame
    folder: Path

    def file(self, name: str, notebook: str = "") -> Path:
        """A file the run wrote (verified by load_run), or a one-line error: never written, or not kept in git."""
        path = self.folder / name
        if name not in self.record["files_sha256"]:
            raise FileNotFoundError(f"run {self.folder.name} wrote no {name}: re-run the notebook that makes it")
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing (weights and adapters are not kept in git): re-run "
                                    f"{'notebook ' + notebook if notebook else 'the notebook that makes it'} to "
                                    f"re-create it")
        return path


def _refuse(folder: Path, why: str) -> ResultError:
    return ResultError(f"{folder}/metrics.json {why}: delete {folder} and re-run the notebook that writes it")


def read_record(folder: Path) -> dict:
    """A run's record, refused unless sealed and listing its files' checksums (an edited record changes numbers)."""
    path = folder / "metrics.json"
    if not path.exists():
        raise FileNotFoundError(f"no metrics.json in {folder}: run the notebook that writes it first")
    try:
        record = json.loads(path.read_text())
    except ValueError:
        raise _refuse(folder, "is not valid JSON") from None
    if not isinstance(record, dict) or not isinstance(record.get("files_sha256"), dict) or "record_sha256" not in record:
        raise _refuse(folder, "has no checksums (files_sha256, record_sha256): it was edited or made by an older "
                              "version, and is not trusted")
    if record["record_sha256"] != _seal(record):
        raise _refuse(folder, "does not match its seal (edited after it was written)")
    return record


def verify_files(folder: Path, record: dict) -> None:
    """Every listed file that is present matches its sha256; the committed ones (REQUIRED, *.parquet) are present;
    no unlisted file sits beside them."""
    listed = record["files_sha256"]
    for name, expected in listed.items():
        path = folder / name
        if not path.exists():
            if name in REQUIRED or name.endswith(".parquet"):
                raise _refuse(folder, f"lists {name}, which is missing")
            continue
        if sha256_of(path) != expected:
            raise _refuse(folder, f"does not match {name} (changed or half-written)")
    extra = sorted(set(file_hashes(folder)) - set(listed))
    if extra:
        raise _refuse(folder, f"does not list {extra[0]}{' and others' if len(extra) > 1 else ''} (added afterwards)")


def check_metrics(folder: Path, record: dict, ranks: pd.DataFrame) -> None:
    """The record's metrics are the means of its ranks' per-user metrics (to the 6 decimals recorded)."""
    means = metrics.per_user_metrics(ranks["rank"]).mean()
    wrong = [m for m in metrics.METRICS if abs(record.get("metrics", {}).get(m, float("nan")) - means[m]) > 1e-6
             or record["metrics"][m] != record["metrics"][m]]
    if wrong or record.get("n_users") != len(ranks):
        raise _refuse(folder, f"has metrics that do not follow from its ranks ({', '.join(wrong) or 'n_users'})")


def load_run(name_or_path, _seen: frozenset = frozenset()) -> SavedRun:
    """A saved run by run id or folder path, verified (module docstring); a damaged, edited or half-written run, or
    one whose inputs were re-made since, is an error, never read."""
    folder = Path(name_or_path)
    if not folder.is_dir():
        folder = result_path(str(name_or_path))
    record = read_record(folder)
    if record.get("run") != folder.name:  # a copied or renamed folder would stand in for another run
        raise _refuse(folder, f"is the record of run {record.get('run')}, not of {folder.name} (copied or renamed)")
    verify_files(folder, record)
    ranks = pd.read_parquet(folder / "ranks.parquet")
    check_metrics(folder, record, ranks)
    for run_id, digest in (record.get("inputs") or {}).items():
        if run_id in _seen:
            raise _refuse(folder, f"names itself among its inputs ({run_id})")
        try:
            upstream = load_run(run_id, _seen | {folder.name})
        except FileNotFoundError:
            raise ResultError(f"run {folder.name} read run {run_id}, which is missing: re-run the notebook that "
                              f"makes {run_id}, then the one that makes {folder.name}") from None
        if content_digest(upstream.record) != digest:
            raise ResultError(f"run {folder.name} read run {run_id}, which has been re-made since (other files): "
                              f"re-run the notebook that makes {folder.name}")
    return SavedRun(record, ranks, folder)


def load_tensors(path: Path, device: str = "cpu", remedy: str = "delete it and re-run the notebook that wrote it"):
    """A torch file the workbench wrote, read without unpickling code (weights_only); a damaged or foreign file is a
    one-line error naming it and `remedy`, never torch's own advice."""
    import pickle
    import torch
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:120]
        raise ResultError(f"{path} is damaged or not a file this workbench wrote ({reason}): {remedy}") from None


def find_runs(prefix: str = "") -> list[str]:
    """Run ids (scratch and committed) that start with `prefix`, sorted (temporary folders excluded)."""
    found = set()
    for root in outputs.read_dirs("results", RESULTS_ENV):
        if root.is_dir():
            found |= {p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
                      and p.name.startswith(prefix) and (p / "metrics.json").exists()}
    return sorted(found)
