"""Where runs write: the committed outputs only when refreshing them, a scratch folder otherwise.

The committed outputs (figures/, results/, the executed notebooks) are those of one `make run` at one commit
(`python -m workbench run --refresh`, which sets $WORKBENCH_REFRESH=1 for its kernels).  Every other run, a notebook
in JupyterLab, `workbench run 02 --profile smoke`, a test, writes figures and results under runs/scratch/ and reads
saved runs there first, then in the committed results/, so exploring never overwrites what is committed.
$WORKBENCH_FIGURES / $WORKBENCH_RESULTS name one folder for both (tests use them).
"""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REFRESH_ENV = "WORKBENCH_REFRESH"
SCRATCH = ROOT / "runs" / "scratch"


def refreshing() -> bool:
    """Whether this process refreshes the committed outputs ($WORKBENCH_REFRESH=1)."""
    return os.environ.get(REFRESH_ENV) == "1"


def write_dir(kind: str, env: str) -> Path:
    """Where `kind` (figures or results) is written: $env, else <root>/<kind> when refreshing, else scratch."""
    if os.environ.get(env):
        return Path(os.environ[env])
    return ROOT / kind if refreshing() else SCRATCH / kind


def read_dirs(kind: str, env: str) -> list[Path]:
    """Where saved `kind` is looked up, in order: the write folder, then (when it is scratch) the committed one."""
    first = write_dir(kind, env)
    return [first] if first == ROOT / kind or os.environ.get(env) else [first, ROOT / kind]


def locate(kind: str, env: str, name: str) -> Path:
    """The first existing <folder>/<name> of read_dirs (else the write folder's, which does not exist)."""
    for folder in read_dirs(kind, env):
        if (folder / name).exists():
            return folder / name
    return write_dir(kind, env) / name
