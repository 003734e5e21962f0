"""LLM-TRSR summarisers on the tiny model: blocks, batched greedy generation, both methods, the per-user cache."""
import json

import pytest
import torch

from workbench.llm import scoring
from workbench.methods.trsr import summarize
from workbench.llm.loading import load_llm
from workbench.methods.mkv import prompts

HISTORIES = {1: list(range(1, 13)), 2: [3, 4, 5], 3: [], 4: [2, 7, 9, 11, 1, 5, 6], 5: [8, 12, 10, 1, 2, 3, 4, 6, 9]}
OPTS = dict(block_size=3, max_blocks=3, max_new_tokens=6, model_name="tiny-noised", progress=False)


@pytest.fixture(scope="module")
def describe(catalog):
    return lambda i: prompts.record(catalog.items[i], ("title", "genres"))


@pytest.fixture(scope="module")
def tiny(catalog):
    """The tiny model with noise added to its weights: untouched, it greedily repeats one blank token."""
    torch.set_num_threads(1)
    texts = [catalog.title(i) for i in catalog.items] + [summarize.SYSTEM, summarize.BLOCK, summarize.MERGE, summarize.UPDATE] * 3
    model, tok = load_llm("tiny", tiny_texts=texts, seed=0)
    noise = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" not in name:
                p.add_(torch.randn(p.shape, generator=noise) * 0.3)
    return model, tok


@pytest.fixture
def calls(monkeypatch):
    """Counts generate_batch calls and prompts (the real generation still runs)."""
    log = []
    real = summarize.generate_batch

    def counted(model, tokenizer, prompts, *args, **kw):
        log.append(list(prompts))
        return real(model, tokenizer, prompts, *args, **kw)

    monkeypatch.setattr(summarize, "generate_batch", counted)
    return log


def n_blocks(user, **kw):
    return len(summarize.blocks(HISTORIES[user], OPTS["block_size"], OPTS["max_blocks"], **kw))


def test_blocks_start_at_the_oldest_item_and_without_a_cap_cover_the_whole_history():
    h = list(range(1, 13))  # as the authors: prev_items[n * size:(n + 1) * size], n < ceil(len / size)
    assert summarize.blocks(h, 5) == [[1, 2, 3, 4, 5], [6, 7, 8, 9, 10], [11, 12]]
    assert summarize.blocks(h, 5, None) == summarize.blocks(h, 5, 99) == summarize.blocks(h, 5)
    assert summarize.blocks(h, 5, 2) == [[6, 7, 8, 9, 10], [11, 12]]  # a cap keeps the most recent blocks
    assert summarize.blocks(h, 5, 4, recent=2) == [[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]]  # optional: leave the last out
    assert summarize.blocks(h, 4, 4, recent=1) == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11]]
    assert summarize.blocks([4, 5], 5, 4) == [[4, 5]]
    assert summarize.blocks([], 5, 4) == [] and summarize.blocks([1, 2], 5, 4, recent=2) == [] and summarize.blocks([1], 5, 4, recent=3) == []
    long = list(range(100, 247))  # a MovieLens-long history: no cap summarises every item, oldest first
    assert [i for b in summarize.blocks(long, 5) for i in b] == long and len(summarize.blocks(long, 5)) == 30
    for size, most, recent in [(1, 3, 0), (3, 2, 1), (5, 9, 4), (2, 1, 0), (5, None, 0), (4, None, 3)]:
        got = summarize.blocks(h, size, most, recent)
        flat = [i for b in got for i in b]
        kept = h[:len(h) - recent]
        assert flat == kept[len(kept) - len(flat):]  # the most recent items, in order
        assert got == summarize.blocks(h, size, None, recent)[-len(got):]  # a cap keeps blocks of the same partition
        whole = -(-len(kept) // size)  # ceil: the blocks of the whole history
        assert (flat == kept) if most is None or whole <= most else len(got) == most
        assert all(len(b) == size for b in got[:-1]) and 0 < len(got[-1]) <= size
    with pytest.raises(ValueError):
        summarize.blocks(h, 0, 4)
    with pytest.raises(ValueError, match="max_blocks"):
        summarize.blocks(h, 5, 0)


def test_a_prompt_beyond_the_summariser_s_context_is_an_error_that_names_max_blocks(tiny, describe):
    model, tok = tiny
    many = [summarize.block_text(range(1, 13), describe)] * 60
    merge = summarize.merge_prompt(tok, many)
    assert len(tok(merge, add_special_tokens=False)["input_ids"]) > model.config.max_position_embeddings
    with pytest.raises(ValueError, match="MAX_BLOCKS"):
        summarize.generate_batch(model, tok, [merge], max_new_tokens=4)


def test_batched_generation_equals_one_at_a_time(tiny, describe):
    model, tok = tiny
    prompts = [summarize.block_prompt(tok, summarize.block_text(range(1, 1 + k), describe)) for k in range(1, 9)]
    lengths = {len(tok(p, add_special_tokens=False)["input_ids"]) for p in prompts}
    assert len(lengths) == len(prompts)  # every batch is left-padded
    batched = summarize.generate_batch(model, tok, prompts, max_new_tokens=12, batch_size=3)
    single = [scoring.generate_answer(model, tok, p, max_new_tokens=12) for p in prompts]
    assert batched == single
    assert all(batched) and len(set(batched)) == len(batched)  # a meaningful comparison: varied, non-empty text
    # and a sensitive one: the same left-padded batch with the pads left unmasked answers the short prompt otherwise
    ids = [tok(p, add_special_tokens=False)["input_ids"] for p in (prompts[0], prompts[-1])]
    width = len(ids[1])
    batch = torch.tensor([[tok.pad_token_id] * (width - len(ids[0])) + ids[0], ids[1]])
    out = model.generate(input_ids=batch, attention_mask=torch.ones_like(batch), max_new_tokens=12, do_sample=False,
                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    assert summarize._new_text(tok, out[0, width:]) != single[0]


@pytest.mark.parametrize("method", summarize.METHODS)
def test_summarisers_are_deterministic_and_batch_across_users(tiny, describe, calls, method):
    model, tok = tiny
    first = summarize.summarize_users(model, tok, HISTORIES, describe, method, use_cache=False, **OPTS)
    per_user = {u: n_blocks(u) + (method == "hierarchical" and n_blocks(u) > 1) for u in HISTORIES if HISTORIES[u]}
    assert first.report["prompts"] == sum(len(c) for c in calls) == sum(per_user.values())
    # one generate_batch call per phase, all users together: 2 (blocks, merges) or one per block index
    assert len(calls) == (2 if method == "hierarchical" else max(map(n_blocks, HISTORIES)))
    calls.clear()
    again = summarize.summarize_users(model, tok, HISTORIES, describe, method, use_cache=False, **OPTS)
    assert again == first and first[3] == summarize.EMPTY_SUMMARY and first.report["no_history"] == 1
    assert all(first[u] for u in HISTORIES if u != 3)


def test_a_user_s_summary_does_not_depend_on_the_others(tiny, describe):
    model, tok = tiny
    alone = summarize.summarize_users(model, tok, {4: HISTORIES[4]}, describe, "recurrent", use_cache=False, **OPTS)
    together = summarize.summarize_users(model, tok, HISTORIES, describe, "recurrent", use_cache=False, batch_size=2,
                                 **OPTS)
    assert alone[4] == together[4]


def test_cache_resumes_recomputes_stale_or_corrupt_entries_and_is_keyed(tiny, describe, calls, tmp_path):
    model, tok = tiny
    run = dict(cache_dir=tmp_path, batch_size=1, **OPTS)  # chunks of one user
    users = [u for u in HISTORIES if HISTORIES[u]]

    class Stop(Exception):
        pass

    real = summarize.generate_batch

    def interrupted(*args, **kw):
        if len(calls) >= 4:  # two users done (2 calls each), the third interrupted
            raise Stop
        return real(*args, **kw)  # the counting wrapper

    summarize.generate_batch, saved = interrupted, summarize.generate_batch
    try:
        with pytest.raises(Stop):
            summarize.summarize_users(model, tok, HISTORIES, describe, "hierarchical", **run)
    finally:
        summarize.generate_batch = saved
    folder = next(tmp_path.iterdir())
    assert json.loads((folder / "key.json").read_text())["model"] == "tiny-noised"
    assert sorted(p.name for p in folder.glob("user-*.json")) == ["user-1.json", "user-2.json"]
    calls.clear()
    full = summarize.summarize_users(model, tok, HISTORIES, describe, "hierarchical", **run)
    assert full.report["cached"] == 2 and full.report["generated"] == 2
    assert sum(map(len, calls)) == sum(n_blocks(u) + (n_blocks(u) > 1) for u in users[2:])
    entry = json.loads((folder / "user-4.json").read_text())
    assert entry["blocks"] == summarize.blocks(HISTORIES[4], 3, 3) and len(entry["intermediate"]) == n_blocks(4)

    calls.clear()  # resumed: nothing left to generate, the same text
    assert summarize.summarize_users(model, tok, HISTORIES, describe, "hierarchical", **run) == full and not calls

    (folder / "user-1.json").write_text('{"user": 1, "summ')  # half-written entry: recomputed, never read
    (folder / ".user-2.json.x1y2.partial").write_text("{}")  # a temp file left behind: ignored
    changed = {**HISTORIES, 4: HISTORIES[4] + [12]}  # a changed history: recomputed, not served stale
    again = summarize.summarize_users(model, tok, changed, describe, "hierarchical", **run)
    assert again.report["cached"] == 2 and again.report["generated"] == 2 and again[1] == full[1]
    assert json.loads((folder / "user-4.json").read_text())["blocks"] == summarize.blocks(changed[4], 3, 3)

    calls.clear()  # another model (or method) never reads this cache
    other = summarize.summarize_users(model, tok, HISTORIES, describe, "hierarchical", **{**run, "model_name": "other"})
    assert other.report["cached"] == 0 and sum(map(len, calls)) == sum(n_blocks(u) + (n_blocks(u) > 1) for u in users)
    assert len(list(tmp_path.iterdir())) == 2

    (folder / "key.json").write_text(json.dumps({"model": "something else"}))
    with pytest.raises(summarize.SummaryCacheError, match="delete"):
        summarize.summarize_users(model, tok, HISTORIES, describe, "hierarchical", **run)


def test_empty_generations_fall_back_to_the_last_block_and_are_counted(tiny, describe, monkeypatch, tmp_path,
                                                                       capsys):
    model, tok = tiny
    monkeypatch.setattr(summarize, "generate_batch", lambda m, t, prompts, *a, **k: [" "] * len(prompts))
    for method in summarize.METHODS:
        out = summarize.summarize_users(model, tok, HISTORIES, describe, method, cache_dir=tmp_path, **OPTS)
        for user, history in HISTORIES.items():
            last = summarize.blocks(history, 3, 3)[-1:] or None
            assert out[user] == (summarize.fallback_text(last[0], describe) if last else summarize.EMPTY_SUMMARY)
        assert out.report["fallback_summaries"] == 4 and out.report["empty_outputs"] == out.report["prompts"] > 0
        assert "note: summaries" in capsys.readouterr().out
        cached = summarize.summarize_users(model, tok, HISTORIES, describe, method, cache_dir=tmp_path, **OPTS)
        assert cached == out and cached.report["cached"] == 4 and cached.report["fallback_summaries"] == 4


def test_the_cache_needs_a_model_name(tiny, describe, tmp_path):
    model, tok = tiny
    opts = {**OPTS, "model_name": None}
    with pytest.raises(ValueError, match="model_name"):
        summarize.summarize_users(model, tok, HISTORIES, describe, "recurrent", cache_dir=tmp_path, **opts)
    with pytest.raises(ValueError, match="method"):
        summarize.summarize_users(model, tok, HISTORIES, describe, "flat", cache_dir=tmp_path, **OPTS)


def test_a_single_block_is_its_own_summary_without_a_merge(tiny, describe, calls):
    model, tok = tiny
    out = summarize.summarize_users(model, tok, {2: HISTORIES[2]}, describe, "hierarchical", use_cache=False, **OPTS)
    assert out.report["prompts"] == 1 and len(calls) == 1
    prompt = summarize.block_prompt(tok, summarize.block_text(HISTORIES[2], describe))
    assert out[2] == summarize.generate_batch(model, tok, [prompt], OPTS["max_new_tokens"])[0] != ""
