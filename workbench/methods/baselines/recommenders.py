"""Conventional baselines on the method contract: Popularity, SASRec, GRU4Rec and MF (networks in models.py).

SASRec and GRU4Rec save their weights with the run (`weights.pt`); `pipeline.load_recommender(run).item_embeddings`
gives the item-embedding table that ID-embedding methods (RSLLM, BDLM) read; BDLM takes the whole fitted model as
its domain model.  Reproduce: `python -m workbench run 02`.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from ... import metrics
from ...data.protocol import load_protocol
from ...recommender import Recommender, implements
from ...results import load_tensors
from . import models

NEURAL_PARAMS = ("EPOCHS", "PATIENCE", "BATCH_SIZE", "LEARNING_RATE", "EMBED_DIM", "NUM_LAYERS", "DROPOUT")


def weights_file(folder: Path, name: str = "weights.pt", notebook: str = "02_baselines") -> Path:
    """folder/name, or an error saying how to re-create it (weights stay out of git)."""
    path = Path(folder) / name
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing (weights are not kept in git: re-run notebook {notebook}, or "
                                f"the run that wrote {Path(folder).name}, to re-create them)")
    return path


class SeqRecMethod(Recommender):
    """Shared steps of the conventional baselines: sampled and full ranking, saving the fitted model."""
    model = None

    def rank(self, view: pd.DataFrame, scorer: str | None = None) -> pd.DataFrame:
        """Sampled ranking of each user's target among its fixed candidates."""
        return models.sampled_ranks(self.model, view, self.device)

    def full_ranks(self, view: pd.DataFrame) -> pd.DataFrame:
        """Rank of each target among all items, the user's earlier items excluded (full ranking)."""
        split = self.protocol.split.set_index("user_id")
        seen = [split.at[u, "train"] + [split.at[u, "valid"]] for u in view["user_id"]]  # the target is exempt
        return models.full_ranks(self.model, view, seen, self.device)

    def report(self, view: pd.DataFrame) -> dict:
        """Full-ranking metrics (all items, the user's earlier items excluded), labelled as such."""
        full = self.full_ranks(view)
        params = sum(p.numel() for p in self.model.parameters()) if isinstance(self.model, torch.nn.Module) else 0
        return {"full_ranking": {k: round(v, 6) for k, v in metrics.summarize(full["rank"]).items()},
                "trainable_parameters": int(params)}

    @property
    def item_embeddings(self) -> torch.Tensor:
        """The (n_items, dim) item-embedding table; row 0 is padding."""
        return self.model.items.weight.detach().cpu()


@implements("popularity")
class Popularity(SeqRecMethod):
    """Scores every item by its number of interactions in the training part."""

    def fit(self, callbacks=()) -> pd.DataFrame:
        """Count the training interactions."""
        self.model = models.Popularity(self.protocol.n_items).fit(self.protocol.split["train"])
        return pd.DataFrame()

    def save(self, folder: Path) -> None:
        """The counts, as weights.pt."""
        torch.save({"counts": torch.as_tensor(self.model.counts)}, folder / "weights.pt")

    @classmethod
    def load(cls, folder: Path, record: dict, device: str = "cpu") -> "Popularity":
        """Popularity with the saved counts."""
        counts = load_tensors(weights_file(folder))["counts"].numpy()
        rec = cls(record["parameters"], load_protocol(record["parameters"]), device)
        rec.model = models.Popularity(len(counts))
        rec.model.counts = counts
        return rec

    @property
    def item_embeddings(self):
        """Popularity has no embeddings."""
        return None


class NeuralMethod(SeqRecMethod):
    """A neural sequential recommender trained with early stopping on validation NDCG@10."""

    def fit(self, callbacks=()) -> pd.DataFrame:
        """Build the model from the parameters and train it on the training windows."""
        models.check_memory(self.name, self.cfg, self.device)
        torch.manual_seed(self.cfg["SEED"])
        n_users = int(self.protocol.data.users["user_id"].max()) + 1
        self.model = models.build_model(self.name, self.protocol.n_items, self.cfg, n_users=n_users)
        return models.fit(self.model, self.protocol.train, self.protocol.valid, self.cfg, self.device)

    def save(self, folder: Path) -> None:
        """The state dict and what rebuilds the architecture, as weights.pt."""
        arch = {"n_items": self.model.items.num_embeddings, **{k: self.cfg[k] for k in self.arch_params}}
        if hasattr(self.model, "n_users"):
            arch["n_users"] = self.model.n_users
        torch.save({"arch": arch, "state_dict": self.model.state_dict()}, folder / "weights.pt")

    @classmethod
    def load(cls, folder: Path, record: dict, device: str = "cpu") -> "NeuralMethod":
        """The trained model rebuilt from weights.pt (eval mode)."""
        saved = load_tensors(weights_file(folder), device)
        arch = dict(saved["arch"])
        rec = cls({**record["parameters"], **arch}, load_protocol(record["parameters"]), device)
        rec.model = models.build_model(cls.name, arch.pop("n_items"), rec.cfg, n_users=arch.pop("n_users", None))
        rec.model.load_state_dict(saved["state_dict"])
        rec.model.to(device).eval()
        return rec


@implements("sasrec")
class SASRec(NeuralMethod):
    """Self-attentive sequential recommendation (Kang & McAuley 2018)."""
    result_params = NEURAL_PARAMS + ("NUM_HEADS",)
    arch_params = ("HISTORY_LEN", "EMBED_DIM", "NUM_LAYERS", "NUM_HEADS", "DROPOUT")


@implements("gru4rec")
class GRU4Rec(NeuralMethod):
    """Session-based recommendation with a GRU (Hidasi et al. 2016)."""
    result_params = NEURAL_PARAMS
    arch_params = ("HISTORY_LEN", "EMBED_DIM", "NUM_LAYERS", "DROPOUT")


@implements("mf")
class MF(NeuralMethod):
    """Matrix factorisation trained with the next-item softmax: the user's vector alone scores items."""
    result_params = NEURAL_PARAMS
    arch_params = ("HISTORY_LEN", "EMBED_DIM", "DROPOUT")
