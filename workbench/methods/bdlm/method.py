"""BDLM's recommender: an information-sharing module between an LLM and a domain model, trained mutually.

Round 0: the domain model is the saved DOMAIN_MODEL run (MF by default: real user rows) on shared user/item tables
(`bridge.py`); the LLM learns LoRA SFT on the LLM_TRAIN_SAMPLES windows every LLM method trains on, with BDLM_PROMPT
prompts whose soft tokens (a user token, every listed item) read those tables through the projector (tables frozen:
the domain model stays as saved).  Rounds 1..BDLM_ROUNDS, on BDLM_ROUND_SAMPLES of those windows: the LLM phase (LM +
KL_LLM * KL toward the domain model's candidate distribution, `mutual.MutualSFTTrainer`), then the domain phase
(cross-entropy + KL_DOMAIN * KL toward the LLM's recorded distribution, `mutual.domain_phase`); BDLM_SHARING decides
what flows.  The schedule: each model is evaluated at the state it last trained with.  The domain phase changes the
shared tables after the LLM phase, so the LLM is scored with the tables as its own phase left them (kept as
`llm_embedder`), and it meets the domain model's changes in its next phase; the domain model is scored as its phase
left it, and the ensemble joins the two.  After each round both models and their ensemble are scored on validation
users; each round's state is saved, a re-run resumes after the last complete round, and a non-finite loss stops the
rounds and restores the best round.  Evaluation: the LLM alone (the run's ranks), the domain model alone and their
score-level ensemble, before (round 0) and after (`variants`).  Reproduce: `python -m workbench run 08`.

Longer than 300 lines: the rounds, their saved state and the before/after evaluation are one method.
"""
from __future__ import annotations

import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ... import config, metrics, process
from ...assets import atomic_write
from ...llm import softtokens, unified
from ...llm.projector import IDEmbedder, table_digest, user_key
from ...llm.prompting import is_listed
from ...llm.listwise import RankingSFTTrainer, ranking_rows, with_candidates
from ...llm.recommender import TRAIN_PARAMS, LLMRecommender, eval_subset, prompt_lengths
from ...llm.scoring import view_ranks
from ...llm.sft import lora_config, train_sft, without_embedding_layers
from ...recommender import get_spec, implements
from ...results import ResultError, load_tensors, short_hash
from ..baselines.recommenders import weights_file
from ..pipeline import load_recommender, read_upstream, run_method
from . import VARIANTS, bridge
from .mutual import MutualSFTTrainer, domain_phase, log_probs, score_rows

ROUND_FILE = "state.pt"
ROUND0_FILE = "round0.pt"  # in the run folder: round 0's state, the "before" of every variant
SCHEDULE = "own-state"  # each model evaluated at the state it last trained with (module docstring); keys the rounds


def domain_run(rec: "BDLM"):
    """The saved DOMAIN_MODEL run (`BDLM.upstream`) on this candidate set; MF is trained on first use, and again
    where its saved run has no weights here (weights stay out of git: a fresh clone has the record alone)."""
    try:
        run = read_upstream(rec, "domain")
        if rec.cfg["DOMAIN_MODEL"] != "mf" or (run.folder / "weights.pt").exists():
            return run
        print(f"the saved MF domain model {run.folder.name} has no weights here (they stay out of git): training it")
    except FileNotFoundError:
        if rec.cfg["DOMAIN_MODEL"] != "mf":
            raise
        print("training the MF domain model (saved with the baselines' runs)")
    run_method("mf", BDLM.upstream(rec.cfg)["domain"][1], rec.protocol, rec.device)
    return read_upstream(rec, "domain")


def variant_ranks(view: pd.DataFrame, llm: pd.DataFrame, domain: np.ndarray, cfg: dict) -> dict:
    """Ranks of the LLM alone, the domain model alone and their ensemble (ENSEMBLE_WEIGHT * log p_dom +
    (1 - ENSEMBLE_WEIGHT) * log p_llm at KL_TEMPERATURE), from each model's candidate scores on `view`."""
    if list(llm["user_id"]) != list(view["user_id"]) or domain.shape != (len(view), len(view["candidates"].iat[0])):
        raise ValueError("the LLM's and the domain model's scores are not for the same users and candidates")
    t, w = cfg["KL_TEMPERATURE"], cfg["ENSEMBLE_WEIGHT"]
    blend = (w * log_probs(domain, t) + (1 - w) * log_probs(np.stack(llm["scores"]), t)).numpy()
    plain = lambda scores: view_ranks(view, pd.DataFrame({"user_id": llm["user_id"], "scores": list(scores),
                                                          "listed": list(scores)}))["rank"].to_numpy()
    return {"llm": view_ranks(view, llm)["rank"].to_numpy(), "domain": plain(domain), "ensemble": plain(blend)}


def _copy(state: dict) -> dict:
    """A detached CPU copy of a state dict."""
    return {k: v.detach().cpu().clone() for k, v in state.items()}


@implements("bdlm")
class BDLM(LLMRecommender):
    """LLM + domain model bridged by shared user/item tables, trained in alternating rounds with KL terms."""
    caps = {"LLM_EVAL_USERS": "BDLM_EVAL_USERS", "LLM_TRAIN_SAMPLES": "BDLM_TRAIN_SAMPLES"}
    method_params = ("BDLM_ROUND_SAMPLES", "DOMAIN_MODEL", "ID_MODEL_SEED", "BDLM_PROMPT", "BDLM_ROUNDS",
                     "BDLM_SHARING", "KL_LLM", "KL_DOMAIN", "KL_TEMPERATURE", "DOMAIN_STEPS")

    def __init__(self, cfg: dict, protocol, device: str = "cpu"):
        super().__init__(cfg, protocol, device)
        self.domain, self.domain_id, self.digest, self.round0_dir = None, None, None, None
        self.states, self.rounds, self.diverged, self.variants = {}, [], None, None
        self.llm_embedder, self.round_rows = None, 0  # the embedder as the LLM last trained with it; rows per round

    def attach(self) -> None:
        """The domain model (the saved DOMAIN_MODEL run; MF trained on first use) on shared tables, the soft token and
        the projector that reads those tables (seeded by SEED whatever was loaded or trained before)."""
        cfg, device = self.cfg, self.device
        run = domain_run(self)
        self.domain_id = run.folder.name
        self.domain = bridge.from_recommender(load_recommender(run).model,
                                              int(self.protocol.data.users["user_id"].max()) + 1)
        self.domain.to(device).eval()
        process.seed_everything(cfg["SEED"])  # the projector's init does not depend on what was loaded or trained
        softtokens.add_soft_token(self.model, self.tokenizer)
        embeddings = self.model.get_input_embeddings().weight
        tables = self.domain.tables
        self.soft_embedder = IDEmbedder(tables.items, embeddings.shape[1], users=tables.users,
                                        target_std=float(embeddings.detach().float().std())).to(device)
        if cfg["BDLM_SHARING"] == "none":  # the LLM keeps the original tables, the domain model a copy
            self.domain = bridge.unshared(self.domain)
        self.digest = table_digest(tables.items.weight)

    @classmethod
    def upstream(cls, cfg: dict) -> dict:
        """The DOMAIN_MODEL run (training seed ID_MODEL_SEED) that becomes the domain model."""
        return {"domain": (cfg["DOMAIN_MODEL"], config.override(cfg, SEED=cfg["ID_MODEL_SEED"]))}

    @classmethod
    def run_key(cls, cfg: dict, protocol) -> dict:
        """The shared LLM key plus the evaluation settings that change the report's numbers."""
        key = super().run_key(cfg, protocol)
        key["params"].update({k: cfg[k] for k in ("BDLM_VALID_USERS", "ENSEMBLE_WEIGHT")})
        return key

    def corpus(self) -> list[str]:
        """Titles and the prompt's fixed words."""
        return unified.corpus(self.protocol.data.items)

    def prompts(self, view: pd.DataFrame, epoch: int | None = None) -> pd.DataFrame:
        """BDLM_PROMPT prompts led by a user token: the same for evaluation and every round."""
        keys = [user_key(u, self.protocol.n_items) for u in view["user_id"]]
        return unified.build_examples(self.catalog, view, self.tokenizer, self.cfg["MAX_PROMPT_TOKENS"],
                                      self.cfg["BDLM_PROMPT"], users=keys, listed=is_listed(self.cfg["PROMPT_FORM"]))

    def checkpoint_key(self) -> dict:
        """The shared training key plus the domain run, its table's digest and SCORE_REDUCE (the rounds' KL terms and
        recorded distributions score titles with it)."""
        return {**super().checkpoint_key(), "domain": self.domain_id, "tables": self.digest,
                "score_reduce": self.cfg["SCORE_REDUCE"], "schedule": SCHEDULE}

    def valid_key(self) -> dict:
        """What a round's validation row depends on beyond its state: the validation users and the scoring and
        ensemble settings (a reloaded round validated otherwise is validated again)."""
        return {"users": [int(u) for u in self.valid_view["user_id"]],
                **{k: self.cfg[k] for k in ("SCORE_ORDERS", "SCORE_REDUCE", "KL_TEMPERATURE", "ENSEMBLE_WEIGHT",
                                            "CANDIDATE_SEED")}}

    def round0_key(self) -> dict:
        """Round 0 (the LLM's own SFT) depends on the training parameters and the domain model only: arms share it."""
        return {"method": f"{self.name}-round0", "data": self.protocol.identity(), "domain": self.domain_id,
                "tables": self.digest, "prompt": self.cfg["BDLM_PROMPT"], **{k: self.cfg[k] for k in TRAIN_PARAMS}}

    # --- which model trains the shared tables, and which KL terms are on ---------------------------------------
    @property
    def sharing(self) -> str:
        """BDLM_SHARING: none | frozen | one_way | mutual."""
        return self.cfg["BDLM_SHARING"]

    def kl_weights(self) -> dict:
        """The KL weights in effect: none without sharing, the LLM's alone one way."""
        on = {"none": (0, 0), "frozen": (1, 1), "one_way": (1, 0), "mutual": (1, 1)}[self.sharing]
        return {"llm": self.cfg["KL_LLM"] * on[0], "domain": self.cfg["KL_DOMAIN"] * on[1]}

    def train_tables(self, phase: str) -> None:
        """Let the tables learn in this phase (llm | domain) or freeze them (round0 | eval)."""
        llm_tables = self.soft_embedder.items, self.soft_embedder.users
        domain_tables = self.domain.tables.items, self.domain.tables.users
        for table in (*llm_tables, *domain_tables):
            table.requires_grad_(False)
        if phase == "llm" and self.sharing in ("mutual", "none"):
            for table in llm_tables:
                table.requires_grad_(True)
        if phase == "domain" and self.sharing != "frozen":
            for table in domain_tables:
                table.requires_grad_(True)

    # --- state: what a round leaves behind ----------------------------------------------------------------------
    def state(self) -> dict:
        """Copies of the adapter, embedder (tables, projector) and domain model weights, and the embedder as the LLM
        last trained with it (`llm_embedder`)."""
        from peft import get_peft_model_state_dict
        adapter = get_peft_model_state_dict(self.model, save_embedding_layers=False)  # LoRA alone, no 230 MB matrices
        embedder = _copy(self.soft_embedder.state_dict())
        return {"adapter": _copy(adapter), "embedder": embedder, "domain": _copy(self.domain.state_dict()),
                "llm_embedder": _copy(self.llm_embedder) if self.llm_embedder is not None else embedder}

    def load_state(self, state: dict) -> None:
        """Put a `state` back into the models."""
        from peft import set_peft_model_state_dict
        set_peft_model_state_dict(self.model, state["adapter"])
        self.soft_embedder.load_state_dict(state["embedder"])
        self.domain.load_state_dict(state["domain"])
        self.llm_embedder = _copy(state["llm_embedder"])

    def llm_trained(self) -> None:
        """Mark the embedder as it is now as the one the LLM last trained with (the end of an LLM phase)."""
        self.llm_embedder = _copy(self.soft_embedder.state_dict())

    @contextmanager
    def llm_tables(self):
        """The embedder (tables, projector) as the LLM last trained with it inside the block, as it was after it: the
        LLM is scored with the tables its own phase left, not with the domain phase's changes it never trained on."""
        if self.llm_embedder is None:
            yield
            return
        now = _copy(self.soft_embedder.state_dict())
        self.soft_embedder.load_state_dict(self.llm_embedder)
        try:
            yield
        finally:
            self.soft_embedder.load_state_dict(now)

    @contextmanager
    def at_state(self, state: dict):
        """The models as in `state` inside the block, as they were after it."""
        now = self.state()
        self.load_state(state)
        try:
            yield
        finally:
            self.load_state(now)

    # --- training ------------------------------------------------------------------------------------------------
    def fit(self, callbacks=()) -> pd.DataFrame:
        """Round 0, then BDLM_ROUNDS collaborative rounds (resumed after the last complete one); returns the SFT loss
        log with a `round` column.  Per-round validation metrics: `self.rounds`.  LLM_TRAIN_SAMPLES=0: the untrained
        reference (`untrained`)."""
        self.use_threads()
        self.setup()
        self.valid_view = eval_subset(self.protocol.valid, self.cfg["BDLM_VALID_USERS"], self.cfg["CANDIDATE_SEED"])
        if self.cfg["LLM_TRAIN_SAMPLES"] == 0:
            return self.untrained()
        windows = self.training_view()  # round 0: the windows every LLM method trains on
        first = with_candidates(self.prompts(windows), windows)
        self.sft_rows = len(first) * self.cfg["LLM_EPOCHS"]
        self.train_prompt_tokens = prompt_lengths(self.tokenizer, first["prompt"])
        view = self.round_view()
        rows, self.ranking = ranking_rows(self.tokenizer, with_candidates(self.prompts(view), view), self.catalog,
                                          self.cfg["LLM_OBJECTIVE"], self.cfg["SCORE_REDUCE"],
                                          temperature=self.cfg["LISTWISE_TEMPERATURE"])
        self.round_rows = len(rows) * self.cfg["LLM_EPOCHS"]
        stacked = pd.concat([rows] * self.cfg["LLM_EPOCHS"], ignore_index=True)
        self.round0_dir = self.checkpoints(f"{self.name}-round0", self.round0_key())
        self.train_tables("round0")
        first, options = self.objective_options(pd.concat([first] * self.cfg["LLM_EPOCHS"], ignore_index=True))
        self.model, log = train_sft(self.model, self.tokenizer, first, self.cfg, self.round0_dir, self.device,
                                    callbacks=callbacks, resumed=self.resumed, soft_embedder=self.soft_embedder,
                                    **options)
        self.llm_trained()
        logs = [log.assign(round=0)]
        self.states[0] = self.state()
        self.rounds = [{"round": 0, **self.validate(before=True)}]
        root = self.checkpoints(self.name, self.checkpoint_key())
        for r in range(1, self.cfg["BDLM_ROUNDS"] + 1):
            try:
                logs.append(self.one_round(r, view, stacked, root, callbacks))
            except FloatingPointError as err:  # a NaN/inf loss in either phase (NanLossError included)
                self.diverged = {"round": r, "error": str(err).splitlines()[0]}
                best = max(self.rounds, key=lambda row: row["llm_valid_ndcg10"] + row["domain_valid_ndcg10"])
                print(f"round {r} diverged ({self.diverged['error']}); restoring round {best['round']}, the best on "
                      f"validation")
                self.load_state(self.states[best["round"]])
                break
        self.train_tables("eval")
        offsets = np.cumsum([0] + [int(x["step"].max()) if len(x) else 0 for x in logs[:-1]])
        return pd.concat([x.assign(step=x["step"] + o) for x, o in zip(logs, offsets)], ignore_index=True)

    def untrained(self) -> pd.DataFrame:
        """The zero-shot reference: no round at all, the LLM as loaded under a LoRA adapter that has not trained (its
        B matrices are zero: the base model's outputs), the projector as initialised, the domain model as read; before
        and after are the same state."""
        from peft import get_peft_model
        self.model = get_peft_model(self.model, lora_config(self.cfg))
        self.llm_trained()
        self.states[0] = self.state()
        self.rounds = [{"round": 0, **self.validate(before=True)}]
        return pd.DataFrame(columns=["step", "loss", "learning_rate", "round"])

    def one_round(self, r: int, view: pd.DataFrame, stacked: pd.DataFrame, root: Path, callbacks) -> pd.DataFrame:
        """Round r: LLM phase, then domain phase, then validation; saved to root/round-r (reloaded if there)."""
        folder = root / f"round-{r}"
        if (folder / ROUND_FILE).exists():
            saved = load_tensors(folder / ROUND_FILE, remedy=f"delete {folder} (that round is trained again)")
            if saved.get("round", {}).get("round") != r:
                raise ResultError(f"{folder / ROUND_FILE} holds round {saved.get('round', {}).get('round')}, "
                                  f"not round {r}: delete {folder} (that round is trained again)")
            self.load_state(saved["state"])
            self.states[r] = saved["state"]
            row, note = dict(saved["round"]), f"round {r} reloaded from its saved state"
            if saved.get("valid") != self.valid_key():  # validated on other users or settings: validate again
                row.update(self.validate())
                note += " and validated again (other BDLM_VALID_USERS or validation settings)"
            self.rounds.append(row)
            self.resumed.append(note)
            print(f"{note} ({folder})")
            return pd.DataFrame(saved["log"])
        start, kl = time.time(), self.kl_weights()
        teacher = log_probs(self.domain_scores(view), self.cfg["KL_TEMPERATURE"])
        record = {}
        options = {"trainer_cls": RankingSFTTrainer, "ranking": self.ranking} if self.ranking.objective != "sft" else {}
        if kl["llm"] or kl["domain"]:
            options = dict(trainer_cls=MutualSFTTrainer, ranking=self.ranking, teacher=teacher if kl["llm"] else None,
                           kl_weight=kl["llm"], temperature=self.cfg["KL_TEMPERATURE"], record=record)
        self.train_tables("llm")
        sft_dir = root / f"sft-round-{r}"
        self.model, log = train_sft(self.model, self.tokenizer, stacked, self.cfg, sft_dir, self.device,
                                    callbacks=callbacks, resumed=self.resumed, soft_embedder=self.soft_embedder,
                                    **options)
        self.llm_trained()
        self.train_tables("domain")
        llm_teacher = self.llm_teacher(record, sft_dir / "llm_logp.pt", stacked) if kl["domain"] else None
        dlog = domain_phase(self.domain, self.protocol.train, self.cfg["DOMAIN_STEPS"], self.cfg,
                            seed=self.cfg["SEED"] * 1000 + r, device=self.device, kl_view=view, teacher=llm_teacher,
                            kl_weight=kl["domain"])
        self.train_tables("eval")
        row = {"round": r, **self.validate(), "llm_loss": float(log["loss"].mean()),
               "llm_loss_kl": float(log["loss_kl"].mean()) if "loss_kl" in log else None,
               "domain_loss_ce": float(dlog["loss_ce"].mean()),
               "domain_loss_kl": float(dlog["loss_kl"].mean()) if kl["domain"] else None,
               "seconds": round(time.time() - start, 1)}
        self.states[r], log = self.state(), log.assign(round=r)
        self.rounds.append(row)
        tmp = root / f".round-{r}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        torch.save({"state": self.states[r], "round": row, "log": log.astype(object).where(log.notna(), None)
                    .to_dict("records"), "valid": self.valid_key()}, tmp / ROUND_FILE)
        os.replace(tmp, folder)
        return log

    def llm_teacher(self, record: dict, path: Path, stacked: pd.DataFrame) -> torch.Tensor:
        """The LLM's log-probs per training window as its KL pass computed them (kept at `path`, so a resumed phase
        has them); windows a mid-phase resume left unrecorded are scored by the LLM as it is now (said so)."""
        saved = load_tensors(path, remedy=f"delete {path.parent} (the round is trained again)") if path.exists() else {}
        record = {**saved, **record}
        n = len(self.ranking.items)
        missing = sorted(set(range(n)) - set(record))
        if missing:
            note = f"round LLM phase: {len(missing)} window(s) had no recorded LLM distribution, scored after the phase"
            self.resumed.append(note)
            print(note)
            first = stacked.drop_duplicates("row").set_index("row").loc[missing]
            fresh = score_rows(self.model, self.tokenizer, self.soft_embedder, [self.ranking.items[i] for i in missing],
                               first["soft_ids"], self.cfg["SCORE_REDUCE"], self.cfg["KL_TEMPERATURE"])
            record.update(dict(zip(missing, fresh)))
        atomic_write(path, lambda tmp: torch.save(record, tmp))
        return torch.stack([record[i] for i in range(n)])

    # --- evaluation ----------------------------------------------------------------------------------------------
    def domain_scores(self, view: pd.DataFrame) -> np.ndarray:
        """The domain model's logits of each row's candidates, (rows, candidates)."""
        with torch.no_grad():
            return bridge.candidate_logits(self.domain, view, self.device).cpu().numpy()

    def round_view(self) -> pd.DataFrame:
        """The windows of every collaborative round: the first BDLM_ROUND_SAMPLES of round 0's (a nested seeded
        subset, each window with its own candidates); None = all of them."""
        n, total = self.cfg["BDLM_ROUND_SAMPLES"], self.cfg["LLM_TRAIN_SAMPLES"]
        return self.training_view(total if n is None else n if total is None else min(n, total))

    def scores(self, view: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
        """Both models' candidate scores on a view, each at the state it last trained with: the LLM's log-likelihoods
        (`llm_tables`) and the domain model's logits."""
        with self.llm_tables():
            llm = self.view_scores(view)
        return llm, self.domain_scores(view)

    def cached_scores(self, view: pd.DataFrame, what: str) -> tuple[pd.DataFrame, np.ndarray]:
        """Round 0's scores on a view; the LLM's are cached per user beside round 0's checkpoints (the arms and
        nested user subsets share round 0), the domain model's recomputed (cheap)."""
        scorer = short_hash([self.cfg["SCORE_ORDERS"], self.cfg["SCORE_REDUCE"]])
        path = self.round0_dir / f"scores-{what}-{scorer}.pt" if self.round0_dir else None  # None: a loaded run
        # user -> (candidates, scores, listed), plain lists (read back without unpickling)
        saved = load_tensors(path, remedy=f"delete {path}") if path and path.exists() else {}
        fresh = [u not in saved or list(saved[u][0]) != list(c) for u, c in zip(view["user_id"], view["candidates"])]
        if any(fresh):
            todo = view[fresh].reset_index(drop=True)
            with self.llm_tables():
                scored = self.view_scores(todo)
            saved.update({int(u): ([int(i) for i in c], np.asarray(s, dtype=float).tolist(),
                                   np.asarray(l, dtype=float).tolist()) for u, c, s, l in
                          zip(todo["user_id"], todo["candidates"], scored["scores"], scored["listed"])})
            if path is not None:
                atomic_write(path, lambda tmp: torch.save(saved, tmp))
        llm = pd.DataFrame({"user_id": view["user_id"].astype(int).to_numpy(),
                            "scores": [np.asarray(saved[int(u)][1]) for u in view["user_id"]],
                            "listed": [np.asarray(saved[int(u)][2]) for u in view["user_id"]]})
        return llm, self.domain_scores(view)

    def validate(self, before: bool = False) -> dict:
        """NDCG@10 of the LLM, the domain model and the ensemble on the validation users."""
        view = self.valid_view
        llm, domain = self.cached_scores(view, "valid") if before else self.scores(view)
        ranks = variant_ranks(view, llm, domain, self.cfg)
        return {f"{v}_valid_ndcg10": float(metrics.per_user_metrics(ranks[v])["NDCG@10"].mean()) for v in VARIANTS}

    def rank(self, view: pd.DataFrame, scorer: str | None = None) -> pd.DataFrame:
        """The LLM alone after training; `variants` holds every model's ranks before and after, on the same users."""
        if scorer == "generate":
            with self.llm_tables():
                return super().rank(view, scorer)
        if 0 not in self.states:
            raise ValueError("BDLM ranks before and after its rounds: call fit() first, or load a saved run")
        with self.at_state(self.states[0]):
            before = variant_ranks(view, *self.cached_scores(view, "test"), self.cfg)
        llm, domain = self.scores(view)
        after = variant_ranks(view, llm, domain, self.cfg)
        self.variants = pd.DataFrame({"user_id": view["user_id"].astype(int).to_numpy(),
                                      **{f"{v}_before": before[v] for v in VARIANTS},
                                      **{f"{v}_after": after[v] for v in VARIANTS}})
        self.last_ranks = view_ranks(view, llm)
        return self.last_ranks

    def trainable_parameters(self) -> int:
        """LoRA and the projector, the shared tables (two copies without sharing; none when frozen) and the domain
        model's own network; none for the untrained reference."""
        if not self.sft_rows:
            return 0
        lora = sum(p.numel() for n, p in self.model.named_parameters() if "lora_" in n)
        projector = sum(p.numel() for p in self.soft_embedder.projector.parameters())
        tables = sum(t.weight.numel() for t in (self.domain.tables.items, self.domain.tables.users))
        tables *= {"frozen": 0, "none": 2}.get(self.sharing, 1)
        encoder = self.domain.encoder
        network = sum(p.numel() for n, p in encoder.named_parameters() if not n.startswith("items.")) if encoder else 0
        return int(lora + projector + tables + network)

    def round_table(self) -> pd.DataFrame:
        """One row per completed round: validation NDCG@10 of each model and the ensemble, mean losses, seconds."""
        return pd.DataFrame(self.rounds).round(6)

    def report(self, view: pd.DataFrame) -> dict:
        """The shared report plus each variant's metrics, the per-round validation table, the domain run, the KL
        weights in effect and any divergence."""
        out = super().report(view)
        means = {c: {k: round(v, 6) for k, v in metrics.summarize(self.variants[c]).items()}
                 for c in self.variants.columns if c != "user_id"}
        rounds = self.round_table().astype(object)
        out.update(variants=means, rounds=rounds.where(rounds.notna(), None).to_dict("records"),
                   round_sft_samples=self.round_rows, schedule=SCHEDULE,
                   domain_model={"kind": self.cfg["DOMAIN_MODEL"], "run": self.domain_id, "digest": self.digest},
                   sharing=self.sharing, kl_in_effect=self.kl_weights(), diverged=self.diverged)
        return out

    def save(self, folder: Path) -> None:
        """The final adapter with the embedder (tables, projector), the domain model, round 0's state (what `rank`
        scores as "before") and the variants' ranks."""
        with without_embedding_layers(self.model):
            self.model.save_pretrained(folder / "adapter")
        softtokens.save_embedder(self.soft_embedder, folder / "adapter", state=self.llm_embedder)  # the LLM's own
        torch.save(self.domain.state_dict(), folder / "domain.pt")
        torch.save(self.states[0], folder / ROUND0_FILE)
        self.variants.to_parquet(folder / "variants.parquet")

    @classmethod
    def load(cls, folder, record: dict, device: str = "cpu") -> "BDLM":
        """The base model with the run's adapter and embedder, its domain model and round 0's state (so it ranks
        again exactly as it did)."""
        rec = super().load(folder, record, device)
        softtokens.load_embedder(rec.soft_embedder, folder / "adapter")
        rec.llm_trained()  # before the domain model's tables (the same tensors when shared) are loaded over them
        notebook = get_spec(cls.name).notebook
        weights = weights_file(folder, "domain.pt", notebook)
        rec.domain.load_state_dict(load_tensors(weights, device))
        rec.states[0] = load_tensors(weights_file(folder, ROUND0_FILE, notebook))
        return rec
