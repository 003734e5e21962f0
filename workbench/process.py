"""Runtime settings a result depends on: seeds, CPU threads, device, and the environment recorded with each result."""
from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import random
import subprocess
from contextlib import contextmanager
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


def free_memory(device: str = "cpu") -> int:
    """Bytes free for new tensors: the CUDA device's free memory, else the machine's available memory."""
    if str(device).startswith("cuda"):
        import torch
        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


@contextmanager
def environment(values: dict):
    """os.environ with `values` set (child processes, notebook kernels, inherit it), restored afterwards."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


RUN_OUTPUTS = (":!results", ":!figures", ":!*.md")  # what a run writes, and prose: not code changes


def _notebook_sources(text: str) -> list:
    """(cell type, source) of every cell: the code a notebook holds, without its outputs."""
    try:
        cells = json.loads(text).get("cells", [])
    except ValueError:
        return [("unreadable", text)]
    return [(c.get("cell_type"), "".join(c.get("source", ""))) for c in cells]


def code_changes(root: Path) -> list[tuple[str, str]]:
    """(path, content) of every code change against HEAD: tracked files but results, figures and prose (notebooks by
    cell source only: a notebook whose outputs a run re-wrote is unchanged), and untracked, unignored files of the
    package and notebooks (a new module is code too).  Empty for a clean checkout."""
    out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all", "--", ".", *RUN_OUTPUTS],
                         cwd=root, capture_output=True, text=True, check=True).stdout
    changes = []
    for line in out.splitlines():
        status, path = line[:2], line[3:].split(" -> ")[-1].strip('"')
        if status == "??" and not path.startswith(("workbench/", "notebooks/")):
            continue
        file = root / path
        if not file.exists():
            changes.append((path, "deleted"))
            continue
        if path.endswith(".ipynb"):
            sources = _notebook_sources(file.read_text())
            head = subprocess.run(["git", "show", f"HEAD:{path}"], cwd=root, capture_output=True, text=True)
            if head.returncode == 0 and _notebook_sources(head.stdout) == sources:
                continue
            changes.append((path, json.dumps(sources)))
        elif file.is_file():
            changes.append((path, hashlib.sha256(file.read_bytes()).hexdigest()))
    return sorted(changes)


def code_changed(root: Path) -> bool:
    """Whether the checkout's code differs from HEAD (`code_changes`)."""
    return bool(code_changes(root))


@functools.lru_cache(maxsize=None)
def git_commit(root: Path = ROOT) -> str | None:
    """The git commit of the checkout when it was imported, or None outside git.  A checkout whose code differs from
    HEAD is `<commit>+dirty-<8 hex digits of the changes themselves>`: two different uncommitted edits never share
    a checkpoint or a record's commit."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout
        changes = code_changes(Path(root))
    except (OSError, subprocess.CalledProcessError):
        return None
    if not changes:
        return sha.strip()
    return f"{sha.strip()}+dirty-{hashlib.sha256(json.dumps(changes).encode()).hexdigest()[:8]}"


def is_dirty(commit: str | None) -> bool:
    """Whether a recorded commit is of a checkout with uncommitted code changes."""
    return bool(commit) and "+dirty" in commit


def short_commit(commit: str | None) -> str:
    """A recorded commit shortened for tables: 7 hex digits, '+dirty-<hash>' kept (a dirty run must stay visible)."""
    if not commit:
        return "unknown"
    sha, _, dirty = commit.partition("+")
    return sha[:7] + (f"+{dirty}" if dirty else "")


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
