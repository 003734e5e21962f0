"""RSLLM: unified prompts, the ID projector, InfoNCE, the contrastive trainer, two stages, the method end to end."""
import json

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors import safe_open

from workbench import config, results
from workbench.methods.rsllm import contrastive
from workbench.llm import scoring, softtokens, sft
from workbench.data.protocol import load_protocol
from workbench.recommender import get_method
from workbench.methods.pipeline import load_recommender, run_method
from workbench.methods.rsllm import ARMS, arm_changes
from workbench.llm.loading import load_llm
from workbench.llm.projector import IDEmbedder, Projector, user_key
from workbench.methods.mkv import prompts
from workbench.llm import unified

HIDDEN = 64  # the tiny model's width
VIEW = pd.DataFrame({"user_id": [1, 2, 3, 4], "history": [[7, 8, 9], [10, 11], [12], [9, 10, 11, 12]],
                     "target": [5, 6, 2, 5], "candidates": [[5, 1, 2], [6, 3, 4], [2, 1, 6], [5, 3, 4]]})


def _tiny(catalog):
    texts = [catalog.title(i) for i in catalog.items] + [prompts.SYSTEM, unified.QUESTION, "User: Watched Candidates"] * 3
    torch.set_num_threads(1)
    model, tok = load_llm("tiny", tiny_texts=texts, seed=0)
    softtokens.add_soft_token(model, tok)
    return model, tok


@pytest.fixture(scope="module")
def tiny(catalog):
    return _tiny(catalog)


def _embedder(n_items=30, users=None, seed=0):
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    return IDEmbedder(torch.randn(n_items, 16, generator=gen), HIDDEN, users=users, target_std=0.02)


def test_each_mode_shows_titles_and_or_placeholders_with_one_soft_id_each_in_order(catalog, tiny):
    _, tok = tiny
    text, ids, both = (unified.build_examples(catalog, VIEW, tok, 2048, m) for m in unified.MODES)
    assert all(softtokens.SOFT_TOKEN not in p for p in text["prompt"]) and all(len(s) == 0 for s in text["soft_ids"])
    for frame in (ids, both):
        for prompt, soft, hist, cands in zip(frame["prompt"], frame["soft_ids"], VIEW["history"], VIEW["candidates"]):
            assert soft == list(hist) + list(cands) and prompt.count(softtokens.SOFT_TOKEN) == len(soft)
    first = both["prompt"][0]
    assert f"- {catalog.title(7)} {softtokens.SOFT_TOKEN}\n" in first and f"- {catalog.title(5)} {softtokens.SOFT_TOKEN}\n" in first
    assert catalog.title(7) not in ids["prompt"][0] and catalog.title(7) in text["prompt"][0]
    assert list(both["completion"]) == [catalog.title(t) for t in VIEW["target"]]
    assert list(both["target_id"]) == list(VIEW["target"])
    keyed = unified.build_examples(catalog, VIEW, tok, 2048, "unified", users=[user_key(u, 30) for u in VIEW["user_id"]])
    assert [s[0] for s in keyed["soft_ids"]] == [31, 32, 33, 34] and "User: " + softtokens.SOFT_TOKEN in keyed["prompt"][0]


def test_an_overlong_prompt_loses_its_oldest_history_and_their_soft_ids_never_candidates(catalog, tiny):
    _, tok = tiny
    view = VIEW.tail(1)
    full = unified.build_examples(catalog, view, tok, 4096, "unified")
    n = len(tok(full["prompt"].iloc[0], add_special_tokens=False)["input_ids"])
    cut = unified.build_examples(catalog, view, tok, n - 3, "unified").iloc[0]
    assert cut["history_cut"] >= 1 and cut["soft_ids"] == [9, 10, 11, 12, 5, 3, 4][cut["history_cut"]:]
    assert cut["prompt"].count(softtokens.SOFT_TOKEN) == len(cut["soft_ids"])
    with pytest.raises(prompts.PromptError, match="MAX_PROMPT_TOKENS"):
        unified.build_examples(catalog, view, tok, 20, "unified")
    with pytest.raises(ValueError, match="unknown prompt mode"):
        unified.build_examples(catalog, view, tok, 4096, "both")


def test_projector_is_two_linears_with_a_gelu_and_starts_at_the_llm_embedding_scale():
    proj = Projector(16, HIDDEN)
    assert [type(m).__name__ for m in proj.net] == ["Linear", "GELU", "Linear"]
    x = torch.randn(200, 16)
    proj.calibrate(x, 0.02)
    assert abs(float(proj(x).detach().std()) - 0.02) < 1e-4


def test_the_embedder_maps_items_and_user_keys_and_refuses_foreign_ids():
    emb = _embedder(users=torch.randn(5, 16))
    item, user = emb(torch.tensor([3])), emb(torch.tensor([user_key(2, 30)]))
    assert torch.allclose(item, emb.projector(emb.items.weight[3:4]))
    assert torch.allclose(user, emb.projector(emb.users.weight[2:3]))
    assert torch.allclose(emb(torch.tensor([3, user_key(2, 30)])), torch.cat([item, user]))
    with pytest.raises(ValueError, match="the ID table does not match these items"):
        emb(torch.tensor([35]))
    with pytest.raises(ValueError, match="has no user table"):
        _embedder().id_vectors(torch.tensor([31]))
    assert not _embedder().items.weight.requires_grad


def test_info_nce_is_the_symmetric_formula_and_leaves_out_same_id_pairs():
    gen = torch.Generator().manual_seed(0)
    q, k = torch.randn(4, 8, generator=gen), torch.randn(4, 8, generator=gen)
    s = torch.nn.functional.normalize(q, dim=-1) @ torch.nn.functional.normalize(k, dim=-1).T / 0.5
    expected = -(s.log_softmax(1).diag().mean() + s.log_softmax(0).diag().mean()) / 2
    assert torch.allclose(contrastive.info_nce(q, k, 0.5), expected)
    assert contrastive.info_nce(k, k, 0.05) < 0.01  # aligned pairs: near zero
    ids = torch.tensor([1, 2, 1, 3])
    masked = s.clone()
    masked[0, 2] = masked[2, 0] = float("-inf")
    expected = -(masked.log_softmax(1).diag().mean() + masked.log_softmax(0).diag().mean()) / 2
    assert torch.allclose(contrastive.info_nce(q, k, 0.5, ids), expected)


def test_the_prompt_end_is_the_position_before_the_first_answer_token():
    labels = torch.tensor([[-100, -100, -100, 7, 8, -100], [-100, 4, 5, 6, -100, -100]])
    assert contrastive.last_prompt_index(labels).tolist() == [2, 0]
    with pytest.raises(ValueError, match="no completion tokens"):
        contrastive.last_prompt_index(torch.full((1, 3), -100))


def test_ranking_unified_prompts_batched_equals_the_naive_reference_with_user_tokens(catalog, tiny):
    model, tok = tiny
    emb = _embedder(users=torch.randn(10, 16)).eval()
    keys = [user_key(u, 30) for u in VIEW["user_id"]]
    rows = unified.build_examples(catalog, VIEW, tok, 2048, "unified", users=keys)
    scores = {}
    for scorer in ("batched", "naive"):
        model.eval()
        soft = [emb(torch.tensor(s)) for s in rows["soft_ids"]]
        with torch.no_grad():
            scores[scorer] = scoring._score_rows(model, tok, rows.assign(candidates=VIEW["candidates"]), catalog,
                                              scorer, "sum", soft, 8, False)
    assert max(np.abs(a - b).max() for a, b in zip(scores["batched"], scores["naive"])) < 1e-4
    plain = scoring.rank_examples(model, tok, rows, VIEW, catalog, progress=False, soft_embedder=emb)
    assert plain["rank"].between(1, 3).all()


def _rows(catalog, tok, n=8):
    view = pd.concat([VIEW] * (n // len(VIEW)), ignore_index=True)
    return unified.build_examples(catalog, view, tok, 2048, "unified")


def _cfg(**kw):
    return config.resolve("smoke", **{"LLM_BATCH_SIZE": 4, "GRAD_ACCUM": 1, "LLM_LEARNING_RATE": 5e-3, "SAVE_STEPS": 2,
                                      "WARMUP_STEPS": 0, **kw})


def _trainer_args(catalog, lambda_user=0.5, lambda_item=0.5):
    return {"trainer_cls": contrastive.ContrastiveSFTTrainer, "lambda_user": lambda_user, "lambda_item": lambda_item,
            "temperature": 0.1, "align_items": 6, "titles": {i: catalog.title(i) for i in catalog.items}}


def test_contrastive_sft_logs_each_term_sums_them_and_trains_adapter_projector_and_heads(catalog, tmp_path):
    model, tok = _tiny(catalog)
    emb = _embedder()
    before = {k: v.detach().clone() for k, v in emb.state_dict().items()}
    tuned, log = sft.train_sft(model, tok, _rows(catalog, tok), _cfg(), tmp_path / "run", soft_embedder=emb,
                                 **_trainer_args(catalog))
    assert {"loss_lm", "loss_user_nce", "loss_item_nce"} <= set(log.columns) and len(log) == 2
    assert np.isfinite(log[["loss", "loss_lm", "loss_user_nce", "loss_item_nce"]].to_numpy()).all()
    total = log["loss_lm"] + 0.5 * log["loss_user_nce"] + 0.5 * log["loss_item_nce"]
    assert np.allclose(log["loss"], total, rtol=1e-3)
    after = emb.state_dict()
    for name in ("projector.net.0.weight", "projector.net.2.weight", "heads.user.weight", "heads.text.weight"):
        assert not torch.equal(after[name], before[name]), name
    assert torch.equal(after["items.weight"], before["items.weight"])  # frozen by default
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in tuned.named_parameters())
    with safe_open(str(tmp_path / "run" / "checkpoint-2" / "adapter_model.safetensors"), "pt") as f:
        assert not [k for k in f.keys() if "embed_tokens" in k or "lm_head" in k]  # the adapter alone


def test_without_contrastive_weights_the_terms_are_not_computed_and_tuned_tables_learn(catalog, tmp_path):
    model, tok = _tiny(catalog)
    emb = IDEmbedder(torch.randn(30, 16), HIDDEN, trainable=True)
    before = emb.items.weight.detach().clone()
    _, log = sft.train_sft(model, tok, _rows(catalog, tok), _cfg(), tmp_path / "run", soft_embedder=emb,
                             **_trainer_args(catalog, lambda_user=0.0, lambda_item=0.0))
    assert "loss_user_nce" not in log and "loss_item_nce" not in log and "loss_lm" in log
    assert not torch.equal(emb.items.weight.detach(), before)
    with pytest.raises(ValueError, match="SFT_PACKING=padded"):
        sft.train_sft(*_tiny(catalog), _rows(catalog, tok), _cfg(SFT_PACKING="padding_free"), tmp_path / "x",
                        soft_embedder=emb, **_trainer_args(catalog))


def test_a_second_stage_continues_the_first_stages_adapter(catalog, tmp_path):
    model, tok = _tiny(catalog)
    text = unified.build_examples(catalog, pd.concat([VIEW] * 2, ignore_index=True), tok, 2048, "text")
    stage1, _ = sft.train_sft(model, tok, text, _cfg(), tmp_path / "one")
    first = {k: v.detach().clone() for k, v in stage1.named_parameters() if "lora_B" in k}
    assert any(v.abs().sum() > 0 for v in first.values())
    stage2, _ = sft.train_sft(stage1, tok, _rows(catalog, tok), _cfg(LLM_LEARNING_RATE=1e-6), tmp_path / "two",
                                soft_embedder=_embedder())
    for k, v in stage2.named_parameters():  # a tiny learning rate: stage 2 stays next to stage 1's non-zero weights
        if "lora_B" in k:                   # (a fresh adapter would start from zero)
            assert torch.allclose(v.detach(), first[k], atol=1e-4), k


@pytest.fixture(scope="module")
def smoke():
    cfg = config.resolve("smoke", LLM_TRAIN_SAMPLES=8, LLM_EVAL_USERS=4, GEN_EVAL_USERS=2, LLM_BATCH_SIZE=4)
    return cfg, load_protocol(cfg)


@pytest.fixture(autouse=True)
def _isolated(run_folders):
    """Every test here writes its runs and checkpoints to its own temporary folders."""


def test_rsllm_is_built_without_other_runs_and_needs_the_saved_sasrec_run_to_fit(smoke):
    """The constructor builds parts only (it read the SASRec run before); fit names the notebook to run."""
    cfg, protocol = smoke
    rec = get_method("rsllm")(cfg, protocol)  # no SASRec run saved in this test's folders
    assert rec.id_table is None and rec.soft_embedder is None
    with pytest.raises(FileNotFoundError, match="run notebook 02_baselines"):
        rec.fit()


def test_every_arm_trains_and_ranks_and_the_two_stage_arms_share_stage_one(smoke, tmp_path):
    cfg, protocol = smoke
    run_method("sasrec", cfg, protocol)
    runs = {arm: run_method("rsllm", config.override(cfg, **arm_changes(arm)), protocol, run_name=f"rsllm-{arm}")
            for arm in ARMS}
    stage1 = [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith("rsllm-stage1-")]
    assert len(stage1) == 1  # one text-only stage 1 for the three two-stage arms
    for arm, run in runs.items():
        assert run.ranks["rank"].between(1, 20).all() and len(run.ranks) == 4, arm
        assert np.isfinite(run.log["loss"]).all(), arm
        assert sorted(run.log["stage"].unique()) == ([1, 2] if ARMS[arm]["RSLLM_STAGES"] == 2 else [1]), arm
        assert run.log["step"].is_monotonic_increasing, arm
    assert "loss_user_nce" not in runs["no_user_nce"].log and "loss_item_nce" in runs["no_user_nce"].log
    assert "loss_item_nce" not in runs["no_item_nce"].log and "loss_user_nce" in runs["no_item_nce"].log
    assert runs["text"].extra["lambdas_in_effect"] == {"user": 0.0, "item": 0.0}
    record = json.loads(runs["unified_2stage"].record_path.read_text())
    assert record["id_embeddings"]["source"].startswith("sasrec-") and record["stages"] == {"1": 8, "2": 8}
    with pytest.raises(ValueError, match="unknown RSLLM arm"):
        arm_changes("both")


def test_a_saved_run_loads_with_its_embedder_and_ranks_the_same(smoke):
    cfg, protocol = smoke
    run_method("sasrec", cfg, protocol)
    run = run_method("rsllm", config.override(cfg, RSLLM_STAGES=1, GEN_EVAL_USERS=0), protocol)
    loaded = load_recommender(results.load_run(run.record_path.parent))
    weight = run.recommender.soft_embedder.projector.net[0].weight
    assert torch.equal(loaded.soft_embedder.projector.net[0].weight, weight)
    again = loaded.rank(loaded.eval_view()).set_index("user_id")["rank"]
    assert again.sort_index().tolist() == run.ranks.set_index("user_id")["rank"].sort_index().tolist()


class _Table(torch.nn.Module):
    """A stand-in soft embedder: fixed random item vectors, an identity user head."""

    def __init__(self, n_items=200, dim=576, seed=0):
        super().__init__()
        self.weight = torch.randn(n_items, dim, generator=torch.Generator().manual_seed(seed))
        self.heads = {"user": torch.nn.Identity()}

    def forward(self, ids):
        return self.weight[ids]


def _presence_batch(table, n_rows=16, n_cands=20, seed=1):
    """Rows whose prompt end is the sum of the vectors the prompt shows (its candidates): a model that recognises
    which items are present, and knows nothing of the user's preference."""
    gen = torch.Generator().manual_seed(seed)
    cands = torch.stack([torch.randperm(199, generator=gen)[:n_cands] + 1 for _ in range(n_rows)])
    target = cands[torch.arange(n_rows), torch.randint(n_cands, (n_rows,), generator=gen)]
    hidden = torch.zeros(n_rows, 5, table.weight.shape[1])
    hidden[:, 2] = table(cands).sum(1)
    labels = torch.full((n_rows, 5), -100)
    labels[:, 3:] = 1
    return hidden, {"labels": labels, "target_id": target, "candidate_ids": cands}


def _user_term(table, negatives="candidates"):
    from types import SimpleNamespace
    fake = SimpleNamespace(model=SimpleNamespace(soft_embedder=table), temperature=0.05, negatives=negatives)
    return lambda hidden, inputs: contrastive.ContrastiveSFTTrainer.user_term(fake, hidden, inputs)


def test_the_user_term_cannot_be_lowered_by_recognising_which_items_the_prompt_shows():
    """Issue 21: the user term's negatives were other rows' targets, mostly absent from the prompt, so a prompt state
    that only says which items are present scored far below chance; its negatives are now the row's own other
    candidates, all present, so such a state does no better than chance, log(20)."""
    table = _Table()
    hidden, inputs = _presence_batch(table)
    loss = float(_user_term(table)(hidden, inputs))
    assert loss > 0.9 * np.log(20), loss
    shortcut = float(_user_term(table, "batch")(hidden, inputs))  # the first reading, kept as an option
    assert shortcut < 0.5 * np.log(16), shortcut
    # a state that points at the target does lower it: the term still trains preference
    hidden[:, 2] = table(inputs["target_id"])
    assert float(_user_term(table)(hidden, inputs)) < 0.1


def test_candidate_nce_is_cross_entropy_over_the_rows_own_keys():
    gen = torch.Generator().manual_seed(0)
    q, k, t = torch.randn(3, 8, generator=gen), torch.randn(3, 5, 8, generator=gen), torch.tensor([0, 4, 2])
    s = torch.einsum("bd,bnd->bn", torch.nn.functional.normalize(q, dim=-1),
                     torch.nn.functional.normalize(k, dim=-1)) / 0.5
    assert torch.allclose(contrastive.candidate_nce(q, k, t, 0.5), -s.log_softmax(1)[torch.arange(3), t].mean())
    with pytest.raises(ValueError, match="do not pair"):
        contrastive.candidate_nce(q, k[:2], t, 0.5)


def test_the_collator_pads_list_columns_beside_integer_ones():
    collate = softtokens.SoftIdsCollator(lambda rows: {"n": len(rows)}, extra=("target_id", "candidate_ids"))
    batch = collate([{"soft_ids": [1, 2], "target_id": 5, "candidate_ids": [5, 6, 7]},
                     {"soft_ids": [3], "target_id": 6, "candidate_ids": [6, 5]}])
    assert batch["target_id"].tolist() == [5, 6]
    assert batch["candidate_ids"].tolist() == [[5, 6, 7], [6, 5, softtokens.PAD_ID]]
