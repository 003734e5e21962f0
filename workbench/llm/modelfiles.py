"""What a model folder holds, checked: the converted folder's marker (size and sha256 of every file), safetensors
headers, the digest of a local folder's files (cached by size and time), and the refusal of pickled weights.

Reproduce: `python -c "from workbench.llm import modelfiles; print(modelfiles.folder_hashes('path/to/model'))"`.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

from .. import assets
from ..assets import sha256_of


class ModelError(ValueError):
    """A model that cannot be loaded, with a message that says what to do."""


MARKER = ".complete"  # JSON: {"source": ..., "files": {relative path: {"size": ..., "sha256": ...}}}


def write_marker(folder: Path, source: str) -> Path:
    """Record the size and sha256 of every file in a converted folder in its JSON marker (written atomically)."""
    folder = Path(folder)
    files = {p.relative_to(folder).as_posix(): {"size": p.stat().st_size, "sha256": sha256_of(p)}
             for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.startswith(".")}
    text = json.dumps({"source": source, "files": files}, indent=1)
    return assets.atomic_write(folder / MARKER, lambda tmp: tmp.write_text(text))


def read_marker(folder: Path) -> dict | None:
    """The marker's recorded files (name -> size, sha256), or None for a missing or old-style (plain text) marker."""
    try:
        files = json.loads((Path(folder) / MARKER).read_text()).get("files")
        ok = all(isinstance(r["size"], int) and isinstance(r["sha256"], str) for r in files.values())
    except (OSError, ValueError, AttributeError, TypeError, KeyError):
        return None
    return files if ok else None


def safetensors_problem(path: Path) -> str | None:
    """What is wrong with a safetensors file judged by its header and length (reads only the header), or None."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        length = struct.unpack("<Q", head)[0] if len(head) == 8 else None
        if length is None or length > size - 8:
            return f"{path.name} truncated"
        try:
            header = json.loads(fh.read(length))
            data = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            data = None
        if not isinstance(data, int):
            return f"{path.name} has an unreadable header"
    if 8 + length + data > size:
        return f"{path.name} truncated"
    if 8 + length + data < size:
        return f"{path.name} is {size - 8 - length - data} bytes longer than its header declares"
    return None


def check_hf_folder(folder: Path, verify: bool = False) -> str | None:
    """The first problem with a converted Hugging Face folder (sizes, safetensors headers; sha256 if verify), or None.

    Cheap by default: sizes against the marker and each safetensors header.  An old-style marker records no files,
    so only the headers (and config.json's presence) are checked.
    """
    folder = Path(folder)
    if not (folder / MARKER).is_file():
        return f"{MARKER} marker missing"
    files = read_marker(folder)
    names = list(files) if files is not None else ["config.json"] + [p.name for p in folder.glob("*.safetensors")]
    for name in names:
        path = folder / name
        if not path.is_file():
            return f"{name} missing"
        size = path.stat().st_size
        expected = files[name]["size"] if files is not None else size
        if size < expected:
            return f"{name} truncated"
        if size != expected:
            return f"{name} has {size} bytes, {expected} recorded"
        if name.endswith(".safetensors") and (problem := safetensors_problem(path)):
            return problem
    if verify and files is not None:
        for name, rec in files.items():
            if sha256_of(folder / name) != rec["sha256"]:
                return f"{name} does not match its recorded sha256"
    return None



def folder_hashes(path: Path) -> dict:
    """sha256 of every file of a model folder (or of one file), hidden files aside; each file is hashed once per
    size and modification time (a small JSON cache in the workbench cache)."""
    path = Path(path).resolve()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()
                                                 and not any(part.startswith(".") for part in p.relative_to(path).parts))
    if not files:
        raise ModelError(f"model folder {path} holds no files: give a folder with a Hugging Face checkpoint")
    cache_file = assets.cache_dir("digests") / "files.json"
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    out, changed = {}, False
    for file in files:
        stat = file.stat()
        key = f"{file}|{stat.st_size}|{stat.st_mtime_ns}"
        if key not in cache:
            cache[key], changed = sha256_of(file), True
        out[file.relative_to(path).as_posix() if file != path else file.name] = cache[key]
    if changed:
        text = json.dumps(cache)
        assets.atomic_write(cache_file, lambda tmp: tmp.write_text(text))
    return out



CONVERT = ("python -c \"from transformers import AutoModelForCausalLM as M, AutoTokenizer as T; "
           "M.from_pretrained('{src}', use_safetensors=False).save_pretrained('{src}-safetensors'); "
           "T.from_pretrained('{src}').save_pretrained('{src}-safetensors')\"")


def check_safetensors(folder: Path) -> None:
    """Refuse a local model folder without safetensors weights: pickled weights (pytorch_model.bin) can run code
    when loaded, so they are never read; the error says how to convert a checkpoint one trusts."""
    if not folder.is_dir() or any(folder.glob("*.safetensors")):
        return
    pickled = sorted(p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
    if pickled:
        raise ModelError(f"model folder {folder} has pickled weights only ({', '.join(pickled)}), which are never "
                         f"loaded (they can run code): if you trust them, convert once with "
                         f"{CONVERT.format(src=folder)} and use {folder}-safetensors")
