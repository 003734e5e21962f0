"""RSLLM's recommender: recommendation as a new language; SASRec item ID embeddings as soft tokens in the LLM.

Each item in the prompt is its title and/or a soft token whose input embedding is the item's SASRec ID embedding
through a trainable projector (`llm/projector.py`, `llm/unified.py`).  Two stages: LoRA SFT on text-only
prompts, then on the RSLLM_PROMPT prompts continuing from stage 1, with LM loss + LAMBDA_USER and LAMBDA_ITEM
InfoNCE terms (`contrastive.py`).  The SASRec table is read from the saved baseline run (notebook 02) on the same
candidate set, frozen unless ID_EMBEDDINGS=tuned.  Reproduce: `python -m workbench run 07`.
"""
from __future__ import annotations

import pandas as pd

from ... import config
from ...llm import softtokens, unified
from ...llm.projector import IDEmbedder, table_digest
from ...llm.prompting import is_listed
from ...llm.listwise import with_candidates
from ...llm.recommender import TRAIN_PARAMS, LLMRecommender, prompt_lengths
from ...llm.sft import train_sft
from ...recommender import implements
from ..pipeline import load_recommender, read_upstream
from .contrastive import ContrastiveSFTTrainer

def sasrec_items(rec: "RSLLM"):
    """The item-embedding table of the saved SASRec run (`RSLLM.upstream`) on this candidate set, and that run's id;
    a table whose rows are not this data set's items is refused."""
    protocol = rec.protocol
    run = read_upstream(rec, "id")
    table = load_recommender(run).item_embeddings
    if table.shape[0] != protocol.n_items:
        raise ValueError(f"the SASRec run {run.folder.name} has {table.shape[0]} item rows but the data set has "
                         f"{protocol.n_items} ids: re-run notebook 02 on this data set")
    return table, run.folder.name


@implements("rsllm")
class RSLLM(LLMRecommender):
    """Unified text + ID prompts, two-stage LoRA SFT with two InfoNCE terms; candidates ranked by title likelihood."""
    method_params = ("RSLLM_PROMPT", "RSLLM_STAGES", "LAMBDA_USER", "LAMBDA_ITEM", "NCE_TEMPERATURE", "ID_EMBEDDINGS",
                     "ID_MODEL_SEED", "ALIGN_ITEMS", "USER_NCE_NEGATIVES")

    def __init__(self, cfg: dict, protocol, device: str = "cpu"):
        super().__init__(cfg, protocol, device)
        self.id_table, self.id_run, self.stage_rows = None, None, {}

    def attach(self) -> None:
        """The SASRec item table (saved run of notebook 02) and, for ID prompts, the soft token and the projector."""
        self.id_table, self.id_run = sasrec_items(self)
        if self.mode != "text":
            softtokens.add_soft_token(self.model, self.tokenizer)
            embeddings = self.model.get_input_embeddings().weight
            self.soft_embedder = IDEmbedder(self.id_table, embeddings.shape[1], self.cfg["ID_EMBEDDINGS"] == "tuned",
                                            target_std=float(embeddings.detach().float().std())).to(self.device)

    @classmethod
    def upstream(cls, cfg: dict) -> dict:
        """The SASRec run (training seed ID_MODEL_SEED) whose item table becomes the ID embeddings."""
        return {"id": ("sasrec", config.override(cfg, SEED=cfg["ID_MODEL_SEED"]))}

    @property
    def mode(self) -> str:
        """How items appear in the prompts: text | id | unified."""
        return self.cfg["RSLLM_PROMPT"]

    @property
    def lambdas(self) -> dict:
        """The contrastive weights in effect: none for text-only prompts (no ID embeddings to align)."""
        if self.mode == "text":
            return {"user": 0.0, "item": 0.0}
        return {"user": self.cfg["LAMBDA_USER"], "item": self.cfg["LAMBDA_ITEM"]}

    def corpus(self) -> list[str]:
        """Titles and the prompt's fixed words."""
        return unified.corpus(self.protocol.data.items)

    def prompts(self, view: pd.DataFrame, epoch: int | None = None, mode: str | None = None) -> pd.DataFrame:
        """Prompt rows in this run's mode (or `mode`): the same for evaluation and every training epoch."""
        return unified.build_examples(self.catalog, view, self.tokenizer, self.cfg["MAX_PROMPT_TOKENS"],
                                      mode or self.mode, listed=is_listed(self.cfg["PROMPT_FORM"]))

    def checkpoint_key(self) -> dict:
        """The shared training key plus the ID table's digest (a retrained SASRec retrains this)."""
        return {**super().checkpoint_key(), "id_table": table_digest(self.id_table)}

    def stage1_key(self) -> dict:
        """Stage 1 (text-only prompts) depends on the shared training parameters only: arms share it."""
        return {"method": f"{self.name}-stage1", "data": self.protocol.identity(),
                **{k: self.cfg[k] for k in TRAIN_PARAMS}}

    def stacked(self, view: pd.DataFrame, mode: str) -> pd.DataFrame:
        """LLM_EPOCHS copies of the training rows in a mode, each with its window's candidates and target."""
        rows = with_candidates(self.prompts(view, mode=mode), view)
        return pd.concat([rows] * self.cfg["LLM_EPOCHS"], ignore_index=True)

    def fit(self, callbacks=()) -> pd.DataFrame:
        """Stage 1 (RSLLM_STAGES=2): text-only LoRA SFT; then SFT on this mode's prompts, continuing the adapter, with
        the contrastive terms; zero-shot when LLM_TRAIN_SAMPLES=0.  The log has a `stage` column; steps run on."""
        self.use_threads()
        self.setup()
        if self.cfg["LLM_TRAIN_SAMPLES"] == 0:
            return pd.DataFrame(columns=["step", "loss", "learning_rate", "stage"])
        view, logs = self.training_view(), []
        if self.cfg["RSLLM_STAGES"] == 2:
            text, options = self.objective_options(self.stacked(view, "text"))
            self.stage_rows[1] = len(text)
            self.model, log = train_sft(self.model, self.tokenizer, text, self.cfg,
                                        self.checkpoints(f"{self.name}-stage1", self.stage1_key()), self.device,
                                        callbacks=callbacks, resumed=self.resumed, **options)
            logs.append(log.assign(stage=1))
        rows, options = self.objective_options(self.stacked(view, self.mode))
        self.stage_rows[self.cfg["RSLLM_STAGES"]] = self.sft_rows = len(rows)
        self.train_prompt_tokens = prompt_lengths(self.tokenizer, rows["prompt"])
        out = self.checkpoints(self.name, self.checkpoint_key())
        self.model, log = train_sft(self.model, self.tokenizer, rows, self.cfg, out, self.device, callbacks=callbacks,
                                    resumed=self.resumed, **{**options, **self.trainer_options()})
        offset = int(logs[0]["step"].max()) if logs and len(logs[0]) else 0
        logs.append(log.assign(stage=self.cfg["RSLLM_STAGES"], step=log["step"] + offset))
        self.adapter = out / "adapter"
        return pd.concat(logs, ignore_index=True)

    def trainer_options(self) -> dict:
        """train_sft arguments of the last stage beside LLM_OBJECTIVE's: none for text prompts; the soft-token
        embedder; the contrastive trainer (a RankingSFTTrainer) when a contrastive weight is non-zero."""
        if self.mode == "text":
            return {}
        options = {"soft_embedder": self.soft_embedder}
        lam = self.lambdas
        if lam["user"] or lam["item"]:
            options.update(trainer_cls=ContrastiveSFTTrainer, lambda_user=lam["user"], lambda_item=lam["item"],
                           temperature=self.cfg["NCE_TEMPERATURE"], align_items=self.cfg["ALIGN_ITEMS"],
                           negatives=self.cfg["USER_NCE_NEGATIVES"],
                           titles={int(i): self.catalog.title(i) for i in self.catalog.items})
        return options

    def report(self, view: pd.DataFrame) -> dict:
        """The shared report plus the ID source, the stages' SFT rows and the contrastive weights in effect."""
        out = super().report(view)
        out.update(id_embeddings={"source": self.id_run, "digest": table_digest(self.id_table),
                                  "rows": int(self.id_table.shape[0]), "dim": int(self.id_table.shape[1]),
                                  "trained": self.cfg["ID_EMBEDDINGS"] == "tuned" and self.mode != "text"},
                   prompt_mode=self.mode, stages={str(k): v for k, v in self.stage_rows.items()},
                   lambdas_in_effect=self.lambdas)
        return out

    @classmethod
    def load(cls, folder, record: dict, device: str = "cpu") -> "RSLLM":
        """The base model with the run's adapter and, for ID prompts, its trained soft-token embedder."""
        rec = super().load(folder, record, device)
        if rec.soft_embedder is not None:
            softtokens.load_embedder(rec.soft_embedder, folder / "adapter")
        return rec
