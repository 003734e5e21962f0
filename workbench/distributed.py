"""Training on several processes: `python -m workbench train` under `accelerate launch` (DDP, FSDP, CPU gloo).

accelerate launch (torchrun underneath) gives each process RANK, LOCAL_RANK and WORLD_SIZE; the Trainer reads them
itself and shards the batches, so this module only picks each process's device, tells the main process apart, and,
when $WORKBENCH_TRAIN_REPORT names a folder, records what each rank trained on (its batches, steps, adapter weights)
as rank<R>.json, which is how tests check that the ranks shared the data and agreed on the weights.
Reproduce: `accelerate launch --config_file configs/accelerate/cpu2.yaml -m workbench train mkv --profile smoke
-p DEVICE cpu` (docs/distributed.md).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import torch
from transformers import TrainerCallback

REPORT_ENV = "WORKBENCH_TRAIN_REPORT"
TRUE = ("1", "true", "yes")


def global_rank() -> int:
    """This process's global rank (0 outside a launcher)."""
    return int(os.environ.get("RANK", 0))


def local_process() -> int:
    """This process's rank on its machine (0 outside a launcher)."""
    return int(os.environ.get("LOCAL_RANK", 0))


def world_size() -> int:
    """How many processes train together (1 outside a launcher)."""
    return int(os.environ.get("WORLD_SIZE", 1))


def is_main_process() -> bool:
    """Whether this process is the global rank 0 (the one that writes and prints)."""
    return global_rank() == 0


def fsdp_launched() -> bool:
    """Whether accelerate launch started this process with an FSDP config (parameters are sharded)."""
    return os.environ.get("ACCELERATE_USE_FSDP", "").lower() in TRUE


def local_device(device: str | None) -> str:
    """This process's device: cpu stays cpu; cuda (or None with a GPU) becomes cuda:<LOCAL_RANK> under a launcher."""
    from .process import pick_device
    if device is None and os.environ.get("ACCELERATE_USE_CPU", "").lower() in TRUE:
        device = "cpu"  # accelerate launch --cpu
    device = pick_device(device)
    if not device.startswith("cuda") or "LOCAL_RANK" not in os.environ:
        return device
    if device != "cuda" and world_size() > 1:
        raise ValueError(f"DEVICE={device} would put every process on one GPU: use DEVICE=cuda (or None) under "
                         f"accelerate launch, and each process takes cuda:<LOCAL_RANK>")
    if local_process() >= torch.cuda.device_count():
        raise ValueError(f"process {local_process()} has no GPU of its own ({torch.cuda.device_count()} visible): "
                         f"launch at most that many processes per machine (num_processes)")
    return f"cuda:{local_process()}"


def tensor_digest(tensor: torch.Tensor) -> str:
    """sha256 of a tensor's shape and values (float32 for floating tensors, so bf16 and fp32 copies agree)."""
    t = tensor.detach().to("cpu")
    t = t.to(torch.float32) if t.is_floating_point() else t
    return hashlib.sha256(str(tuple(t.shape)).encode() + t.contiguous().numpy().tobytes()).hexdigest()


def state_digest(tensors: dict) -> str:
    """sha256 over name-sorted tensors: equal digests mean the same names with the same values."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(name.encode() + tensor_digest(tensors[name]).encode())
    return digest.hexdigest()


def adapter_digest(model) -> str:
    """state_digest of a PEFT model's adapter weights, named as in its saved adapter_model.safetensors."""
    from peft import get_peft_model_state_dict
    return state_digest(get_peft_model_state_dict(model))


class BatchRecorder(TrainerCallback):
    """Records what this process trained on: a digest of each training micro-batch's input ids, the optimizer steps,
    and the adapter weights when training began and ended (not under FSDP, where each rank holds only a shard)."""

    def __init__(self):
        self.batches, self.steps, self.adapter_begin, self.adapter_end, self._hook = [], 0, None, None, None

    def _record(self, module, args, kwargs) -> None:
        """Forward pre-hook: the digest of a training forward's input ids (soft-token rows pass embeddings: none)."""
        ids = kwargs.get("input_ids", args[0] if args else None)
        if module.training and isinstance(ids, torch.Tensor):
            self.batches.append(tensor_digest(ids))

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        """Digest the starting adapter and start recording forwards."""
        self.adapter_begin = None if fsdp_launched() else adapter_digest(model)
        self._hook = model.register_forward_pre_hook(self._record, with_kwargs=True)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        """Stop recording; keep the optimizer steps and the final adapter's digest."""
        self._hook.remove()
        self.steps = state.global_step
        self.adapter_end = None if fsdp_launched() else adapter_digest(model)


def report(recorder: BatchRecorder, adapter: Path, log) -> dict:
    """This rank's training record: rank, world size, batches seen, steps, losses, adapter digests, adapter ready."""
    losses = [float(x) for x in log["loss"]]
    return {"rank": global_rank(), "local_rank": local_process(), "world_size": world_size(), "steps": recorder.steps,
            "batches": recorder.batches, "losses": losses, "losses_finite": all(math.isfinite(x) for x in losses),
            "adapter_begin": recorder.adapter_begin, "adapter_end": recorder.adapter_end, "adapter": str(adapter),
            "adapter_ready": (Path(adapter) / "adapter_model.safetensors").is_file()}


def write_report(folder, record: dict) -> Path:
    """Write a rank's record as <folder>/rank<R>.json atomically."""
    from .assets import atomic_write
    path = Path(folder) / f"rank{record['rank']}.json"
    return atomic_write(path, lambda tmp: tmp.write_text(json.dumps(record, indent=1)))


def llm_method(name: str) -> type:
    """The registered LLM method called `name`; any other method is a one-line error."""
    from .llm.recommender import LLMRecommender, llm_methods
    from .recommender import get_method
    cls = get_method(name)
    if not issubclass(cls, LLMRecommender):
        llms = sorted(llm_methods())
        raise ValueError(f"{name} is not an LLM method: `train` fine-tunes {', '.join(llms)}; "
                         f"train {name} with `python -m workbench run` or run_method")
    return cls


def train_method(name: str, cfg: dict):
    """Protocol, seed, method on this process's device, fit() only; returns (recommender, training log)."""
    from . import process
    from .data.protocol import load_protocol
    cls = llm_method(name)
    if cfg["LLM_TRAIN_SAMPLES"] == 0:
        raise ValueError("LLM_TRAIN_SAMPLES=0 is the zero-shot variant: there is nothing to train")
    device = local_device(cfg["DEVICE"])
    protocol = load_protocol(cfg)
    process.seed_everything(cfg["SEED"])
    rec = cls(cfg, protocol, device)
    folder = os.environ.get(REPORT_ENV)
    recorder = BatchRecorder() if folder else None
    log = rec.fit(callbacks=[recorder] if recorder else ())
    if folder:
        write_report(folder, report(recorder, rec.adapter, log))
    return rec, log
