"""Supervised fine-tuning with TRL's SFTTrainer and a PEFT LoRA adapter, shared by every LLM method.

Prompt-completion data, loss on the completion only; SFTConfig built in code (TRL's argument parser misreads a
notebook kernel's argv); CPU-safe settings on CPU, bf16 on CUDA; checkpoints every SAVE_STEPS and resume from the
last complete one; NaN loss stops the run naming the step.  Methods with extra losses pass a trainer subclass.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
from pathlib import Path

import pandas as pd
from transformers import TrainerCallback

CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


class NanLossError(FloatingPointError):
    """Training produced a non-finite loss."""


class StopOnNanLoss(TrainerCallback):
    """Stop with a message naming the step as soon as a logged loss is NaN or infinite."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            raise NanLossError(f"training loss is {loss} at step {state.global_step}: lower LEARNING_RATE "
                               f"(now {args.learning_rate}) or check the data; checkpoints so far are kept")


def lora_config(cfg: dict):
    """A PEFT LoRA config from LORA_R, LORA_ALPHA, LORA_DROPOUT, LORA_TARGETS."""
    from peft import LoraConfig
    return LoraConfig(r=cfg["LORA_R"], lora_alpha=cfg["LORA_ALPHA"], lora_dropout=cfg["LORA_DROPOUT"],
                      target_modules=list(cfg["LORA_TARGETS"]), task_type="CAUSAL_LM", bias="none")


def sft_config(cfg: dict, output_dir: Path, device: str, max_length: int):
    """SFTConfig built explicitly: completion-only loss, CPU-safe or bf16 settings, checkpoints for resume."""
    from trl import SFTConfig
    on_gpu = str(device).startswith("cuda")
    return SFTConfig(
        output_dir=str(output_dir), num_train_epochs=1, per_device_train_batch_size=cfg["LLM_BATCH_SIZE"],
        gradient_accumulation_steps=cfg["GRAD_ACCUM"], learning_rate=cfg["LLM_LEARNING_RATE"],
        lr_scheduler_type="cosine", warmup_steps=cfg["WARMUP_STEPS"], weight_decay=0.0, max_length=max_length,
        completion_only_loss=True, packing=False, logging_steps=1, save_strategy="steps", save_steps=cfg["SAVE_STEPS"],
        save_total_limit=2, report_to="none", seed=cfg["SEED"], data_seed=cfg["SEED"], bf16=on_gpu, fp16=False,
        use_cpu=not on_gpu, activation_checkpointing=False, dataloader_pin_memory=on_gpu, dataloader_num_workers=0,
        disable_tqdm=False, save_only_model=False, remove_unused_columns=True,
    )


def checkpoint_dir(run: str, cfg: dict) -> Path:
    """Where a run's checkpoints live: $WORKBENCH_CHECKPOINTS (default: the cache) / <run>-<hash of its settings>.

    The same settings and code (git commit) resume or reuse the same training; anything else starts afresh.
    """
    from .assets import cache_dir
    from .runtime import git_commit
    key = hashlib.sha256(json.dumps([cfg, git_commit()], sort_keys=True, default=str).encode()).hexdigest()[:10]
    root = Path(os.environ.get("WORKBENCH_CHECKPOINTS") or cache_dir("checkpoints"))
    return root / f"{run}-{key}"


def last_complete_checkpoint(output_dir: Path) -> str | None:
    """The newest checkpoint whose trainer_state.json (written last) exists; half-written ones are skipped."""
    if not Path(output_dir).is_dir():
        return None
    steps = sorted((int(m.group(1)), p) for p in Path(output_dir).iterdir() if (m := CHECKPOINT.match(p.name))
                   and (p / "trainer_state.json").exists())
    return str(steps[-1][1]) if steps else None


def loss_history(trainer) -> pd.DataFrame:
    """The logged training loss per step (the loss curve)."""
    rows = [{"step": r["step"], "loss": r["loss"], "learning_rate": r.get("learning_rate")}
            for r in trainer.state.log_history if "loss" in r]
    return pd.DataFrame(rows, columns=["step", "loss", "learning_rate"])


def train_sft(model, tokenizer, examples: pd.DataFrame, cfg: dict, output_dir, device: str = "cpu",
              trainer_cls=None, resume: bool = True, callbacks=(), **trainer_kwargs):
    """Fine-tune `model` with LoRA on prompt/completion rows; returns (peft model, loss history DataFrame).

    An earlier interrupted run in `output_dir` is resumed from its last complete checkpoint; the final adapter is
    written to output_dir/adapter atomically.
    """
    from datasets import Dataset
    from trl import SFTTrainer
    if examples.empty:
        raise ValueError("no training examples: raise LLM_TRAIN_SAMPLES or check the training windows")
    output_dir = Path(output_dir)
    max_length = int(cfg["MAX_PROMPT_TOKENS"]) + int(cfg["MAX_COMPLETION_TOKENS"])
    data = Dataset.from_pandas(examples[["prompt", "completion"]].reset_index(drop=True))
    trainer = (trainer_cls or SFTTrainer)(
        model=model, args=sft_config(cfg, output_dir, device, max_length), train_dataset=data,
        processing_class=tokenizer, peft_config=lora_config(cfg), callbacks=[StopOnNanLoss(), *callbacks], **trainer_kwargs)
    checkpoint = last_complete_checkpoint(output_dir) if resume else None
    if checkpoint:
        print(f"resuming from {checkpoint}")
    trainer.train(resume_from_checkpoint=checkpoint)
    adapter = output_dir / "adapter"
    tmp = output_dir / ".adapter.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    trainer.model.save_pretrained(tmp)
    shutil.rmtree(adapter, ignore_errors=True)
    os.replace(tmp, adapter)
    trainer.model.eval()
    return trainer.model, loss_history(trainer)
