"""Runtime settings a result depends on: seeds, CPU threads, device, and the environment recorded with each result."""
from __future__ import annotations

import functools
import json
import os
import platform
import random
import subprocess
from importlib import metadata
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

LIBRARIES = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "numpy", "pandas", "papermill")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    import torch
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(device: str | None = None) -> str:
    """The requested device, else cuda when available, else cpu; a missing cuda is a clear error."""
    import torch
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"DEVICE={device!r} but no CUDA device is visible: use DEVICE=None or 'cpu'")
    return device


def set_threads(num_threads: int | None) -> int:
    """Set torch's CPU threads (None = all cores); profiles pass 1 for tiny models (see benchmarks/threads.py)."""
    import torch
    if num_threads is None:
        num_threads = os.cpu_count() or 1
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    torch.set_num_threads(int(num_threads))
    return int(num_threads)


RUN_OUTPUTS = (":!results", ":!figures", ":!*.md")  # what a run writes, and prose: not code changes


def _notebook_sources(text: str) -> list:
    """(cell type, source) of every cell: the code a notebook holds, without its outputs."""
    try:
        cells = json.loads(text).get("cells", [])
    except ValueError:
        return [("unreadable", text)]
    return [(c.get("cell_type"), "".join(c.get("source", ""))) for c in cells]


def code_changed(root: Path) -> bool:
    """Whether tracked code differs from HEAD: any file but results, figures and prose; notebooks by cell source only.

    A notebook whose outputs were re-written by a run is unchanged; an edited cell is a change (notebooks hold code).
    """
    out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", *RUN_OUTPUTS],
                         cwd=root, capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        path = line[3:].split(" -> ")[-1].strip('"')
        if not path.endswith(".ipynb") or not (root / path).exists():
            return True
        head = subprocess.run(["git", "show", f"HEAD:{path}"], cwd=root, capture_output=True, text=True)
        if head.returncode != 0 or _notebook_sources(head.stdout) != _notebook_sources((root / path).read_text()):
            return True
    return False


@functools.lru_cache(maxsize=None)
def git_commit(root: Path = ROOT) -> str | None:
    """The git commit of the checkout when it was imported ('+dirty' if its code differs from HEAD), or None."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout
        return sha.strip() + ("+dirty" if code_changed(Path(root)) else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def versions() -> dict:
    """Installed versions of the libraries a result depends on."""
    out = {"python": platform.python_version()}
    for lib in LIBRARIES:
        try:
            out[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            out[lib] = None
    return out


def device_description(device: str) -> str:
    """A human-readable device name: the GPU model, or the CPU with its core count."""
    import torch
    if device.startswith("cuda"):
        return f"{torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda})"
    return f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads"


git_commit()  # record the commit of the code this process imported, not of a later checkout
