"""One folder per evaluated run: results/<run>/ranks.parquet (user_id, rank) and metrics.json (metrics + context)."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pandas as pd

from . import metrics as M
from . import runtime
from .assets import atomic_write

RESULTS_ENV = "WORKBENCH_RESULTS"


def results_dir() -> Path:
    """$WORKBENCH_RESULTS, else results/ at the repository root."""
    return Path(os.environ.get(RESULTS_ENV) or Path(__file__).resolve().parent.parent / "results")


def run_name(method: str, cfg: dict, suffix: str = "") -> str:
    """A stable folder name: <method>[-<suffix>]-<profile>-seed<seed>."""
    parts = [method, suffix, cfg["PROFILE"], f"seed{cfg['SEED']}"]
    return "-".join(p for p in parts if p)


def save_run(name: str, ranks: pd.DataFrame, cfg: dict, device: str, wall_time_s: float,
             extra: dict | None = None, n_boot: int | None = None) -> Path:
    """Write ranks.parquet and metrics.json (metrics with CIs, parameters, environment) atomically; returns the JSON path."""
    if list(ranks.columns[:2]) != ["user_id", "rank"]:
        raise ValueError("ranks must have columns user_id, rank")
    folder = results_dir() / name
    ranks_path = atomic_write(folder / "ranks.parquet", lambda tmp: ranks.to_parquet(tmp, index=False))
    ci = M.bootstrap_ci(ranks["rank"], n_boot=n_boot or cfg.get("N_BOOTSTRAP", 1000), seed=cfg.get("SEED", 0))
    record = {
        "run": name,
        "protocol": f"sampled ranking, {cfg.get('N_NEGATIVES', 19) + 1} candidates, leave-one-out test",
        "metrics": {m: round(float(ci.loc[m, "mean"]), 6) for m in M.METRICS},
        "ci95": {m: [round(float(ci.loc[m, "ci_low"]), 6), round(float(ci.loc[m, "ci_high"]), 6)] for m in M.METRICS},
        "n_users": int(len(ranks)),
        "ranks_path": os.path.relpath(ranks_path, folder),
        "parameters": cfg,
        "profile": cfg.get("PROFILE"),
        "seed": cfg.get("SEED"),
        "git_commit": runtime.git_commit(),
        "versions": runtime.versions(),
        "device": runtime.device_description(device),
        "wall_time_s": round(float(wall_time_s), 2),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **(extra or {}),
    }
    return atomic_write(folder / "metrics.json", lambda tmp: tmp.write_text(json.dumps(record, indent=2, default=str)))


def load_run(name_or_path) -> tuple[dict, pd.DataFrame]:
    """A saved run's metrics.json and ranks, by run name or folder path."""
    folder = Path(name_or_path)
    if not folder.is_dir():
        folder = results_dir() / str(name_or_path)
    path = folder / "metrics.json"
    if not path.exists():
        raise FileNotFoundError(f"no metrics.json in {folder}: run the notebook that writes it first")
    record = json.loads(path.read_text())
    return record, pd.read_parquet(folder / record["ranks_path"])
