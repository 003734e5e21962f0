"""Supervised fine-tuning with TRL's SFTTrainer and a PEFT LoRA adapter, shared by every LLM method.

Prompt-completion data, loss on the completion only; SFTConfig built in code (TRL's argument parser misreads a
notebook kernel's argv); CPU-safe settings on CPU, bf16 on CUDA; checkpoints every SAVE_STEPS and resume from the
last complete one; a NaN loss stops the run naming the step (checked at each step, and TRL's logging filter that
would replace it by 0 is off).  Methods with extra losses pass a trainer subclass.
Soft tokens (`soft_embedder`): rows carry `soft_ids`; SoftTokenSFTTrainer keeps them through TRL's tokenisation and
collation, splices the embedder's vectors into the prompt embeddings and trains the embedder with the adapter.

Longer than 300 lines: the trainer subclasses, checkpoint resume and the final adapter belong together.
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from transformers import TrainerCallback
from trl import SFTTrainer

from .. import compute
from . import softtokens
from .loading import default_dtype

CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


class NanLossError(FloatingPointError):
    """Training produced a non-finite loss."""


class StopOnNanLoss(TrainerCallback):
    """Stop with a message naming the step as soon as a logged loss is NaN or infinite."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        for name in ("loss", "grad_norm"):  # an infinite gradient norm is clipped to zero: nothing would train
            value = (logs or {}).get(name)
            if value is not None and not math.isfinite(value):
                raise NanLossError(f"training {name.replace('_', ' ')} is {value} at step {state.global_step}: "
                                   f"lower LLM_LEARNING_RATE (now {args.learning_rate}) or LORA_ALPHA, or check the "
                                   f"data; checkpoints so far are kept")


class TextProgress(TrainerCallback):
    """One text progress bar per training run (step, loss), closed with a line that says how it ended; it replaces
    the Trainer's notebook table, which stays empty until the run ends and repeats per ablation arm."""

    def __init__(self, desc: str = "LoRA SFT"):
        self.desc, self.bar = desc, None

    def on_train_begin(self, args, state, control, **kwargs):
        from tqdm import tqdm
        if state.is_world_process_zero:
            self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc=self.desc, unit="step",
                            mininterval=10)

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        loss = (logs or {}).get("loss")
        if self.bar is not None and loss is not None:
            self.bar.set_postfix(loss=f"{loss:.3f}", refresh=False)

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is None:
            return
        self.bar.close()
        losses = [r["loss"] for r in state.log_history if "loss" in r]
        told = f", loss {losses[0]:.3f} -> {losses[-1]:.3f}" if losses else ""
        print(f"{self.desc}: {state.global_step} of {state.max_steps} step(s) done{told}", flush=True)
        self.bar = None


def use_text_progress(trainer, desc: str = "LoRA SFT") -> None:
    """Swap the Trainer's own progress display (a notebook table or a tqdm.auto bar) for TextProgress."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from transformers.utils.notebook import NotebookProgressCallback
    for callback in (NotebookProgressCallback, ProgressCallback, PrinterCallback):
        trainer.remove_callback(callback)
    trainer.add_callback(TextProgress(desc))


def count_step(model, inputs: dict) -> None:
    """Count one micro-batch's training work in the active compute Meter: real tokens (padding left out), padded
    cells, examples, FLOPs (forward and backward, the LM head over every position), the kernel, dtype and rows per
    batch."""
    ids, positions = inputs["input_ids"], inputs.get("position_ids")
    real = int(inputs["attention_mask"].sum()) if "attention_mask" in inputs else ids.numel()
    concatenated = positions is not None and ids.shape[0] == 1  # padding-free / packed: examples restart at 0
    examples = int((positions == 0).sum()) if concatenated else int(ids.shape[0])
    compute.count(train_tokens=real, train_padded_tokens=ids.numel(), train_examples=examples,
                  flops=3 * compute.forward_flops(model, real, real))
    compute.chose(attention=getattr(model.config, "_attn_implementation", None) or "eager",
                  dtype=compute.dtype_name(model.dtype), micro_batch_rows=int(ids.shape[0]))


class AdapterSFTTrainer(SFTTrainer):
    """SFTTrainer whose checkpoints hold the LoRA adapter alone, never the (unchanged) embedding matrices, and whose
    every step's loss (every term a subclass adds included) is checked where it is computed: a NaN or infinite loss
    stops the run before the optimiser applies it."""

    def training_step(self, model, inputs, num_items_in_batch=None):
        count_step(self.model, inputs)
        loss = super().training_step(model, inputs, num_items_in_batch)
        if not torch.isfinite(loss).all():
            raise NanLossError(f"training loss is {loss.item()} at step {self.state.global_step + 1}: lower "
                               f"LLM_LEARNING_RATE (now {self.args.learning_rate}) or LORA_ALPHA, or check the data; "
                               f"the weights were not updated and checkpoints so far are kept")
        return loss

    def _save(self, output_dir=None, state_dict=None):
        with without_embedding_layers(self.model):
            super()._save(output_dir, state_dict)


class SoftTokenSFTTrainer(AdapterSFTTrainer):
    """SFTTrainer for rows with per-row columns (`row_columns`) kept through TRL's tokenisation and collation, and
    soft tokens: with a `soft_embedder`, the rows' `soft_ids` vectors replace the prompt's placeholders and the
    embedder is trained with the adapter (a submodule of the PEFT model: optimised, clipped, moved with it) and
    checkpointed beside it; with soft_embedder None the rows are plain text (their `soft_ids` empty).

    `row_columns`: the per-row columns kept (subclasses add their own).
    """
    row_columns: tuple[str, ...] = ("soft_ids",)

    def __init__(self, *args, soft_embedder=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.model.soft_embedder = soft_embedder.to(self.args.device) if soft_embedder is not None else None
        self.data_collator = softtokens.SoftIdsCollator(self.data_collator, extra=self.row_columns[1:])

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        missing = [c for c in self.row_columns if c not in self._signature_columns]
        self._signature_columns = [*self._signature_columns, *missing]  # kept by remove_unused_columns

    def model_inputs(self, inputs: dict) -> dict:
        """The batch as the model takes it: placeholders spliced into `inputs_embeds`, the row columns removed."""
        rest = {k: v for k, v in inputs.items() if k not in self.row_columns}
        if self.model.soft_embedder is None:
            return rest
        vectors = self.model.soft_embedder(softtokens.unpad(inputs["soft_ids"]))
        embeds = softtokens.splice(self.model, inputs["input_ids"], vectors)
        return {**{k: v for k, v in rest.items() if k != "input_ids"}, "inputs_embeds": embeds}

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        return super().compute_loss(model, self.model_inputs(inputs), return_outputs, num_items_in_batch)

    def _save(self, output_dir=None, state_dict=None):
        super()._save(output_dir, state_dict)
        if self.args.should_save and self.model.soft_embedder is not None:
            softtokens.save_embedder(self.model.soft_embedder, output_dir or self.args.output_dir)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        if self.model.soft_embedder is not None:
            softtokens.load_embedder(self.model.soft_embedder, resume_from_checkpoint)


@contextmanager
def without_embedding_layers(model):
    """Save a PEFT model's adapter alone.  PEFT adds the whole embedding matrices when the vocabulary grew (the soft
    token: 230 MB per checkpoint for SmolLM2) or LoRA targets them; LoRA leaves them as loaded, and the soft token's
    row is re-created identically by add_soft_token (and its input always replaced)."""
    if not is_peft(model):
        yield
        return
    model.save_pretrained = functools.partial(model.save_pretrained, save_embedding_layers=False)
    try:
        yield
    finally:
        del model.save_pretrained  # the class's method again


def is_peft(model) -> bool:
    """Whether the model already carries a PEFT adapter."""
    from peft import PeftModel
    return isinstance(model, PeftModel)


def lora_config(cfg: dict):
    """A PEFT LoRA config from LORA_R, LORA_ALPHA, LORA_DROPOUT, LORA_TARGETS."""
    from peft import LoraConfig
    return LoraConfig(r=cfg["LORA_R"], lora_alpha=cfg["LORA_ALPHA"], lora_dropout=cfg["LORA_DROPOUT"],
                      target_modules=list(cfg["LORA_TARGETS"]), task_type="CAUSAL_LM", bias="none")


def packing_options(mode: str) -> dict:
    """SFTConfig settings for SFT_PACKING: padded batches, padding-free (concatenated, position ids restart per
    example, so none attends to another) or packed (best-fit-decreasing bins of max_length, also padding-free)."""
    options = {"padded": {"packing": False, "padding_free": False},
               "padding_free": {"packing": False, "padding_free": True, "max_length": None},  # checked by us
               "packed": {"packing": True, "packing_strategy": "bfd", "padding_free": True}}
    if mode not in options:
        raise ValueError(f"SFT_PACKING must be one of {', '.join(options)}, got {mode!r}")
    return options[mode]


SCHEDULES = {"cosine": ("cosine", {}), "constant": ("constant_with_warmup", {}), "linear": ("linear", {}),
             "cosine_floor": ("cosine_with_min_lr", {"min_lr_rate": 0.1})}  # LR_SCHEDULE -> transformers' name, kwargs


def schedule_options(name: str) -> dict:
    """SFTConfig settings for LR_SCHEDULE (after WARMUP_STEPS): cosine to 0, constant, linear to 0, or cosine_floor
    (cosine down to 10% of LLM_LEARNING_RATE)."""
    if name not in SCHEDULES:
        raise ValueError(f"LR_SCHEDULE must be one of {', '.join(SCHEDULES)}, got {name!r}")
    kind, kwargs = SCHEDULES[name]
    return {"lr_scheduler_type": kind, **({"lr_scheduler_kwargs": kwargs} if kwargs else {})}


def sft_config(cfg: dict, output_dir: Path, device: str, max_length: int):
    """SFTConfig built explicitly: completion-only loss, CPU-safe or bf16 settings, checkpoints for resume."""
    from trl import SFTConfig
    on_gpu = str(device).startswith("cuda")
    half = default_dtype(device, cfg["DTYPE"]) == torch.bfloat16  # bf16 weights train under bf16 autocast (CPU too)
    return SFTConfig(
        output_dir=str(output_dir), num_train_epochs=1, per_device_train_batch_size=cfg["LLM_BATCH_SIZE"],
        gradient_accumulation_steps=cfg["GRAD_ACCUM"], learning_rate=cfg["LLM_LEARNING_RATE"],
        **schedule_options(cfg["LR_SCHEDULE"]), warmup_steps=cfg["WARMUP_STEPS"], weight_decay=0.0,
        completion_only_loss=True, logging_steps=1, logging_nan_inf_filter=False, save_strategy="steps",
        save_steps=cfg["SAVE_STEPS"],
        **{"max_length": max_length, **packing_options(cfg["SFT_PACKING"])},
        save_total_limit=2, report_to="none", seed=cfg["SEED"], data_seed=cfg["SEED"], bf16=half, fp16=False,
        use_cpu=not on_gpu, activation_checkpointing=False, dataloader_pin_memory=on_gpu, dataloader_num_workers=0,
        disable_tqdm=False, save_only_model=False, remove_unused_columns=True, ddp_find_unused_parameters=False,
    )


def checkpoint_dir(run: str, cfg: dict) -> Path:
    """Where a run's checkpoints live: $WORKBENCH_CHECKPOINTS (default: the cache) / <run>-<hash of its settings>.

    The same settings and code (git commit) resume or reuse the same training; anything else starts afresh.
    """
    from ..assets import cache_dir
    from ..process import git_commit
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
    """The logged training loss per step (the loss curve), with any separately logged terms (`loss_*` columns)."""
    rows = [{"step": r["step"], "loss": r["loss"], "learning_rate": r.get("learning_rate"),
             **{k: v for k, v in r.items() if k.startswith("loss_")}} for r in trainer.state.log_history if "loss" in r]
    terms = sorted({k for r in rows for k in r if k.startswith("loss_")})
    return pd.DataFrame(rows, columns=["step", "loss", "learning_rate", *terms])


def _trainer_setup(examples: pd.DataFrame, trainer_cls, soft_embedder) -> tuple:
    """The rows, their dataset columns, the trainer class and its extra arguments: plain rows, or rows with soft
    tokens and/or per-row columns (a SoftTokenSFTTrainer; plain rows get empty `soft_ids`)."""
    if soft_embedder is None and (trainer_cls is None or not issubclass(trainer_cls, SoftTokenSFTTrainer)):
        return examples, ["prompt", "completion"], trainer_cls or AdapterSFTTrainer, {}
    if soft_embedder is not None:
        softtokens.check_soft_ids(examples)
    elif "soft_ids" not in examples:
        examples = examples.assign(soft_ids=[[] for _ in range(len(examples))])
    if "row" not in examples:  # each row's index (a trainer with a ranking term reads its rows' items by it)
        examples = examples.assign(row=range(len(examples)))
    trainer_cls = trainer_cls or SoftTokenSFTTrainer
    if not issubclass(trainer_cls, SoftTokenSFTTrainer):
        raise TypeError(f"{trainer_cls.__name__} cannot train soft tokens: subclass workbench.llm.sft.SoftTokenSFTTrainer instead")
    missing = [c for c in trainer_cls.row_columns if c not in examples]
    if missing:
        raise ValueError(f"{trainer_cls.__name__} needs the column(s) {', '.join(missing)} in the SFT rows")
    return (examples, ["prompt", "completion", *trainer_cls.row_columns], trainer_cls,
            {"soft_embedder": soft_embedder})


def check_lengths(tokenizer, examples: pd.DataFrame, max_length: int) -> None:
    """Refuse rows longer than max_length tokens (prompt + completion + end-of-turn) instead of cutting them silently."""
    prompts = tokenizer(list(examples["prompt"]), add_special_tokens=False)["input_ids"]
    answers = tokenizer(list(examples["completion"]), add_special_tokens=False)["input_ids"]
    lengths = np.array([len(p) + len(c) + 1 for p, c in zip(prompts, answers)])
    if (lengths > max_length).any():
        row = int(np.argmax(lengths > max_length))
        raise ValueError(f"{int((lengths > max_length).sum())} SFT row(s) exceed MAX_PROMPT_TOKENS + "
                         f"MAX_COMPLETION_TOKENS = {max_length} tokens (row {row}: {lengths[row]}): raise them or "
                         f"shorten the prompts")


def check_schedule(n_sequences: int, cfg: dict, processes: int = 1) -> int:
    """The number of optimisation steps; refuses a run whose learning rate never leaves the warm-up (with one step
    and any warm-up, the only step runs at learning rate 0: the model would not change and no error would say so)."""
    steps = math.ceil(n_sequences / (cfg["LLM_BATCH_SIZE"] * cfg["GRAD_ACCUM"] * processes))
    if cfg["WARMUP_STEPS"] and steps <= cfg["WARMUP_STEPS"]:
        raise ValueError(f"{n_sequences} SFT rows make {steps} optimisation step(s), not more than WARMUP_STEPS="
                         f"{cfg['WARMUP_STEPS']}: the learning rate would never reach LLM_LEARNING_RATE (one step "
                         f"trains at 0). Lower WARMUP_STEPS or use more SFT rows")
    return steps


def train_sft(model, tokenizer, examples: pd.DataFrame, cfg: dict, output_dir, device: str = "cpu",
              trainer_cls=None, resume: bool = True, callbacks=(), soft_embedder=None, resumed: list | None = None,
              **trainer_kwargs):
    """Fine-tune `model` with LoRA on prompt/completion rows; returns (peft model, loss history DataFrame).

    An earlier interrupted run in `output_dir` is resumed from its last complete checkpoint; the final adapter is
    written to output_dir/adapter atomically.  A PEFT model goes on training its own adapter (a second stage).  With a `soft_embedder` (ids -> (n, hidden) vectors) the rows' `soft_ids`
    fill their prompts' soft-token placeholders; the embedder is trained in place and saved as adapter/soft_embedder.pt.
    resumed: a list that gets one line naming the checkpoint a resume started from (the run's record shows it).
    """
    from datasets import Dataset
    if examples.empty:
        raise ValueError("no training examples: raise LLM_TRAIN_SAMPLES or check the training windows")
    examples, columns, trainer_cls, soft_kwargs = _trainer_setup(examples, trainer_cls, soft_embedder)
    output_dir = Path(output_dir)
    max_length = int(cfg["MAX_PROMPT_TOKENS"]) + int(cfg["MAX_COMPLETION_TOKENS"])
    check_lengths(tokenizer, examples, max_length)
    check_schedule(len(examples), cfg, int(os.environ.get("WORLD_SIZE", 1)))  # before LoRA touches the model
    data = Dataset.from_pandas(examples[columns].reset_index(drop=True))
    trainer = trainer_cls(
        model=model, args=sft_config(cfg, output_dir, device, max_length), train_dataset=data,
        processing_class=tokenizer, peft_config=None if is_peft(model) else lora_config(cfg),
        callbacks=[StopOnNanLoss(), *callbacks],
        **soft_kwargs, **trainer_kwargs)
    use_text_progress(trainer)
    if cfg["SFT_PACKING"] == "packed":  # packing makes fewer, longer sequences: count them
        check_schedule(len(trainer.train_dataset), cfg, trainer.accelerator.num_processes)
    checkpoint = last_complete_checkpoint(output_dir) if resume else None
    if checkpoint:
        print(f"resuming from {checkpoint}")
        step = int(CHECKPOINT.match(Path(checkpoint).name).group(1))
        done = "all steps reused" if step >= _planned_steps(trainer) else "the rest trained"
        if resumed is not None:
            resumed.append(f"{output_dir.name}: resumed from checkpoint-{step} ({done})")
    before = trainable_state(trainer.model)
    trainer.train(resume_from_checkpoint=checkpoint)
    check_changed(before, trainable_state(trainer.model), trainer.state.global_step)
    save_final_adapter(trainer, output_dir / "adapter", soft_embedder)
    trainer.model.eval()
    return trainer.model, loss_history(trainer)


def trainable_state(model) -> dict:
    """Copies of the parameters training may change (the adapter's, a soft-token embedder's)."""
    return {n: p.detach().float().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def check_changed(before: dict, after: dict, steps: int) -> None:
    """Refuse a training that ran steps but changed no trainable weight (gradients clipped to zero after an overflow,
    a zero learning rate): its model is the untrained one, and its record would say "LoRA SFT"."""
    if steps and before and all(torch.equal(before[n], after[n]) for n in before if n in after):
        raise NanLossError(f"{steps} training step(s) changed no trainable weight (an overflowing gradient clipped "
                           f"to zero, or a zero learning rate): lower LORA_ALPHA or raise LLM_LEARNING_RATE")


def _planned_steps(trainer) -> int:
    """The optimisation steps this training will run (one epoch over the training set)."""
    batches = math.ceil(len(trainer.train_dataset) / (trainer.args.per_device_train_batch_size
                                                      * trainer.accelerator.num_processes))
    return math.ceil(batches / trainer.args.gradient_accumulation_steps)


def save_final_adapter(trainer, adapter: Path, soft_embedder=None) -> None:
    """Write the final adapter atomically from the main process only, while every other process waits for it.

    Under FSDP every process first joins the gathering of the full weights (each holds a shard); under DDP or on
    one process the main process's own copy is complete (gradients were averaged, so every copy is the same).
    """
    acc, fsdp = trainer.accelerator, getattr(trainer, "is_fsdp_enabled", False)
    state = acc.get_state_dict(trainer.model) if fsdp else None  # a collective: every process must call it
    if acc.is_main_process:
        tmp = adapter.parent / ".adapter.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        model = acc.unwrap_model(trainer.model)
        with without_embedding_layers(model):
            model.save_pretrained(tmp, **({"state_dict": state} if state is not None else {}))
        if soft_embedder is not None:
            softtokens.save_embedder(soft_embedder, tmp, _embedder_state(state))
        shutil.rmtree(adapter, ignore_errors=True)
        os.replace(tmp, adapter)
        if acc.num_processes > 1:
            print(f"adapter saved to {adapter} by the main process of {acc.num_processes}")
    acc.wait_for_everyone()


def _embedder_state(state: dict | None) -> dict | None:
    """Under FSDP the soft-token embedder's weights taken from the gathered full state dict; else None (its own)."""
    if state is None:
        return None
    prefix = "soft_embedder."
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
