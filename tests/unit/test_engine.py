"""The batched ranking engine equals the per-candidate reference (tiny and real model, fp32 CPU); order averaging."""

import numpy as np
import pandas as pd
import pytest
import torch

from workbench.llm import likelihood, scoring, softtokens
from workbench.llm.loading import ModelError, load_llm, set_attention
from workbench.methods.mkv import prompts

HISTORIES = {1: [1, 2, 3, 4, 5, 6, 7], 2: [8], 3: [9, 10, 11, 12]}  # prompts of different lengths in one batch
CANDIDATES = {1: [1, 5, 9, 12, 3], 2: [2, 4, 6, 8, 10], 3: [11, 7, 5, 3, 1]}


def _texts(catalog):
    return [catalog.title(i) for i in catalog.items] + [prompts.SYSTEM, "User: Watched Candidates age gender zip"] * 3


@pytest.fixture(scope="module")
def tiny(catalog):
    torch.set_num_threads(1)
    return load_llm("tiny", tiny_texts=_texts(catalog), seed=0)


def _prompts(tok, catalog, candidates=CANDIDATES):
    return [prompts.prompt_text(tok, prompts.render(catalog, u, HISTORIES[u], candidates[u])) for u in HISTORIES]


def _reference(model, tok, catalog, reduce="sum", soft=None, candidates=CANDIDATES):
    soft = soft or [None] * len(HISTORIES)
    return [scoring.score_naive(model, tok, p, [catalog.title(i) for i in candidates[u]], reduce, s)
            for p, u, s in zip(_prompts(tok, catalog, candidates), HISTORIES, soft)]


def _batched(model, tok, catalog, reduce="sum", batch_size=None, soft=None, candidates=CANDIDATES):
    items = likelihood.make_items(tok, _prompts(tok, catalog, candidates),
                              [[catalog.title(i) for i in candidates[u]] for u in HISTORIES], soft)
    return likelihood.score_items(model, items, tok.pad_token_id, reduce, batch_size, progress=False)


def _max_delta(a, b):
    return max(np.abs(x - y).max() for x, y in zip(a, b))


@pytest.mark.parametrize("batch_size", [1, 2, 3])
def test_batched_scores_equal_the_per_candidate_reference_on_the_tiny_model(tiny, catalog, batch_size):
    model, tok = tiny
    for reduce in ("sum", "mean"):
        assert _max_delta(_batched(model, tok, catalog, reduce, batch_size), _reference(model, tok, catalog, reduce)) < 1e-4


def test_a_candidate_never_sees_another_candidate(tiny, catalog):
    model, tok = tiny
    prompts, titles = _prompts(tok, catalog), [[catalog.title(i) for i in CANDIDATES[u]] for u in HISTORIES]
    changed = [t[:] for t in titles]
    changed[1][2] = "Something Else Entirely (1999)"  # user 2's middle candidate: the others' scores must stay
    a, b = (likelihood.score_items(model, likelihood.make_items(tok, prompts, t), tok.pad_token_id, batch_size=3,
                               progress=False) for t in (titles, changed))
    assert np.abs(np.delete(a[1], 2) - np.delete(b[1], 2)).max() < 1e-5 and abs(a[1][2] - b[1][2]) > 1e-3
    assert _max_delta([a[0], a[2]], [b[0], b[2]]) < 1e-5  # other users in the same batch are untouched


@pytest.mark.parametrize("batch_size", [1, 2, 3])
def test_two_way_scores_equal_the_softmax_over_the_answer_and_versus_logits(tiny, catalog, batch_size):
    """Issue 21: pointwise yes/no is scored log P(yes) / (P(yes) + P(no)) at the answer position, as the authors."""
    model, tok = tiny
    yes, no = 7, 11  # any two token ids: the engine weighs the scored token against `versus`
    prefixes = [likelihood.token_ids(tok, p) for p in _prompts(tok, catalog)]
    questions = [[likelihood.token_ids(tok, f"Candidate: {catalog.title(i)}\n") + [yes] for i in CANDIDATES[u]]
                 for u in HISTORIES]
    reference, vocab = [], []
    with torch.no_grad():
        for p, qs in zip(prefixes, questions):
            last = [model(torch.tensor([p + q[:-1]])).logits[0, -1].float() for q in qs]
            reference.append(np.array([(x[yes] - x[[yes, no]].logsumexp(-1)).item() for x in last]))
            vocab.append(np.array([x.log_softmax(-1)[yes].item() for x in last]))
    items = [likelihood.Item(p, qs, scored=1, versus=no) for p, qs in zip(prefixes, questions)]
    got = likelihood.score_items(model, items, tok.pad_token_id, batch_size=batch_size, progress=False)
    assert _max_delta(got, reference) < 1e-4
    assert all((v < g - 1e-3).all() for v, g in zip(vocab, got))  # not log P(yes) over the vocabulary
    mixed = likelihood.batch_logp(model, [items[0], likelihood.Item(prefixes[1], questions[1], scored=1)],
                                  tok.pad_token_id)  # an item without versus keeps the vocabulary-wide score
    assert _max_delta([m.detach().numpy() for m in mixed], [reference[0], vocab[1]]) < 1e-4
    with pytest.raises(ValueError, match="scored=1"):
        likelihood.check_items([likelihood.Item([1, 2], [[3, 4]], scored=2, versus=5)])


def test_block_mask_lets_candidates_see_the_prompt_and_themselves_only():
    seg = torch.tensor([[-1, 0, 0, 1, 1, 2, -1]])
    m = likelihood.block_mask(seg)[0, 0]
    assert m[4].tolist() == [False, True, True, True, True, False, False]  # 2nd token of candidate 1
    assert m[5].tolist() == [False, True, True, False, False, True, False]  # candidate 2 skips candidate 1
    assert m[0].tolist() == [True] + [False] * 6 and m[6, 6]  # pads see only themselves: no fully masked row


def test_eager_takes_the_mask_as_an_additive_one_and_unmasked_kernels_score_through_sdpa(tiny, catalog):
    model, tok = tiny
    sdpa = _batched(model, tok, catalog, batch_size=3)
    try:
        set_attention(model, "eager")
        assert _max_delta(_batched(model, tok, catalog, batch_size=3), sdpa) < 1e-4
        set_attention(model, "flex_attention")  # trains with flex; ranking switches to sdpa and back
        assert _max_delta(_batched(model, tok, catalog, batch_size=3), sdpa) < 1e-6
        assert model.config._attn_implementation == "flex_attention"
        with pytest.raises(ValueError, match="engine.masked_attention"):
            likelihood.batch_logp(model, likelihood.make_items(tok, _prompts(tok, catalog)[:1], [["A"]]), tok.pad_token_id)
        with pytest.raises(ModelError, match="'flash_attention_2' is not available here.*ATTENTION sdpa"):
            set_attention(model, "flash_attention_2")
    finally:
        set_attention(model, "sdpa")


def test_soft_tokens_go_through_the_batched_path_and_gradients_reach_them(catalog):
    model, tok = load_llm("tiny", tiny_texts=_texts(catalog), seed=0)
    softtokens.add_soft_token(model, tok)
    prompts = [p.replace("Watched", f"Watched {softtokens.SOFT_TOKEN}{softtokens.SOFT_TOKEN}") for p in _prompts(tok, catalog)]
    torch.manual_seed(0)
    vectors = [torch.randn(2, model.config.hidden_size, requires_grad=True) for _ in prompts]
    titles = [[catalog.title(i) for i in CANDIDATES[u]] for u in HISTORIES]
    with torch.no_grad():
        ref = [scoring.score_naive(model, tok, p, t, soft=v) for p, t, v in zip(prompts, titles, vectors)]
    items = likelihood.make_items(tok, prompts, titles, vectors)
    logp = likelihood.batch_logp(model, items, tok.pad_token_id)
    assert _max_delta([x.detach().numpy() for x in logp], ref) < 1e-4
    torch.stack([x[0] for x in logp]).sum().backward()
    assert all(v.grad is not None and v.grad.abs().sum() > 0 for v in vectors)
    with pytest.raises(ValueError, match="either every item or none"):
        likelihood.batch_logp(model, [items[0], likelihood.Item(items[1].prompt, items[1].candidates)], tok.pad_token_id)


def test_batches_group_similar_lengths_within_the_limits():
    lengths = [5, 50, 7, 48, 6, 49]
    batches = likelihood.plan_batches(lengths, batch_size=2)
    assert batches == [[1, 5], [3, 2], [4, 0]]
    assert sorted(sum(batches, [])) == list(range(6))
    assert likelihood.plan_batches(lengths, batch_size=10, max_tokens=150) == [[1, 5, 3], [2, 4, 0]]  # 3 x 50 cells
    with pytest.raises(ValueError, match="non-empty candidates"):
        likelihood.check_items([likelihood.Item([1, 2], [])])


def test_listed_orders_start_with_the_stored_order_and_its_reverse():
    orders = scoring.listed_orders(4, 3, seed=0)
    assert orders[0].tolist() == [0, 1, 2, 3] and orders[1].tolist() == [3, 2, 1, 0]
    assert sorted(orders[2].tolist()) == [0, 1, 2, 3]
    assert [o.tolist() for o in scoring.listed_orders(4, 3, seed=0)] == [o.tolist() for o in orders]
    with pytest.raises(ValueError, match="SCORE_ORDERS"):
        scoring.listed_orders(4, 0)


def test_order_averaged_ranks_average_the_scores_of_each_listed_order(tiny, catalog):
    model, tok = tiny
    view = pd.DataFrame({"user_id": list(HISTORIES), "history": list(HISTORIES.values()),
                         "candidates": list(CANDIDATES.values()), "target": [5, 8, 1]})
    views = scoring.order_views(view, 2)
    assert views[1]["candidates"].tolist() == [c[::-1] for c in CANDIDATES.values()]
    rows = pd.concat([prompts.build_examples(catalog, v, tok, 2048).assign(candidates=v["candidates"].to_numpy())
                      for v in views], ignore_index=True)
    ranks = scoring.rank_examples(model, tok, rows, view, catalog, progress=False)
    scores = [_reference(model, tok, catalog, candidates=dict(zip(v["user_id"], v["candidates"]))) for v in views]
    for k, (user, cands, target) in enumerate(zip(view["user_id"], view["candidates"], view["target"])):
        back = dict(zip(views[1]["candidates"][k], scores[1][k]))
        mean = [(s + back[c]) / 2 for c, s in zip(cands, scores[0][k])]
        row = ranks.set_index("user_id").loc[user]
        at = cands.index(target)
        assert row["rank"] == sum(m >= mean[at] for m in mean)  # ties count against the target
        assert row["rank_listed"] == sum(s >= scores[0][k][at] for s in scores[0][k])
        assert row["target_position"] == at + 1
    prefix = scoring.rank_examples(model, tok, rows, view, catalog, scorer="prefix", progress=False)
    assert prefix.equals(ranks)
    wrong = rows.assign(candidates=[c[:-1] + [99] for c in rows["candidates"]])
    with pytest.raises(ValueError, match="not that user's fixed candidates"):
        scoring.rank_examples(model, tok, wrong, view, catalog, progress=False)


def test_batched_scores_equal_the_reference_on_smollm2(catalog):
    model, tok = load_llm("smollm2-135m")
    assert model.dtype == torch.float32 and model.config._attn_implementation == "sdpa"
    users = list(HISTORIES)[:2]
    prompts = _prompts(tok, catalog)[:2]
    titles = [[catalog.title(i) for i in CANDIDATES[u]] for u in users]
    with torch.no_grad():
        ref = [scoring.score_naive(model, tok, p, t) for p, t in zip(prompts, titles)]
    got = likelihood.score_items(model, likelihood.make_items(tok, prompts, titles), tok.pad_token_id, batch_size=2,
                             progress=False)
    assert _max_delta(got, ref) < 1e-4


def test_batch_size_follows_free_gpu_memory(tiny, monkeypatch):
    model, _ = tiny
    assert likelihood.auto_batch_size(model, 700, 250, "cpu") == 8
    sizes = {}
    for free in (2 ** 20, 2 ** 30, 2 ** 40):
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None, free=free: (free, 2 ** 41))
        sizes[free] = likelihood.auto_batch_size(model, 700, 250, "cuda:0")
    assert sizes[2 ** 20] == 1 and 1 < sizes[2 ** 30] < sizes[2 ** 40] == 512  # at least one row, at most 512
