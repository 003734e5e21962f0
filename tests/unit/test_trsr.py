"""LLM-TRSR: summary prompts (listwise and pointwise), the yes/no scorer, the method on the smoke profile."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from workbench import config, results
from workbench.llm import likelihood, scoring
from workbench.methods.trsr import summarize
from workbench.data import load_dataset
from workbench.data.protocol import load_protocol
from workbench.recommender import get_method
from workbench.methods.pipeline import run_method
from workbench.methods.trsr.method import weights_digest
from workbench.llm.loading import load_llm
from workbench.methods.trsr import prompts

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
VIEW = pd.DataFrame({"user_id": [1, 2, 3], "target": [5, 8, 12], "candidates": [[1, 5, 9], [8, 2, 4], [3, 12, 6]]})
LISTED = [[1, 2, 3, 4], [6], []]
SUMMARIES = ["Likes comedies.", "", "Prefers old dramas and westerns."]


@pytest.fixture(scope="module")
def tiny(catalog):
    torch.set_num_threads(1)
    texts = [catalog.title(i) for i in catalog.items] + [prompts.POINTWISE_SYSTEM, prompts.POINTWISE_QUESTION, "yes no"] * 3
    return load_llm("tiny", tiny_texts=texts, seed=0)


def test_items_are_described_by_title_year_genres_or_by_their_text(catalog):
    row = catalog.items[1]
    assert prompts.describe_item(catalog)(1) == f"{row['title']} ({row['year']}; {', '.join(row['genres'])})"
    rich = prompts.Catalog(pd.DataFrame({"user_id": [1]}), pd.DataFrame(
        {"item_id": [1, 2], "title": ["News A", "News B"], "text": ["News A. " + "x" * 400, "News B"]}))
    describe = prompts.describe_item(rich, text_chars=50)
    assert describe(1) == "News A: " + "x" * 50 + "..." and describe(2) == "News B"


def test_listwise_prompts_hold_the_summary_only_when_there_is_one(catalog, tiny):
    _, tok = tiny
    out = prompts.build_examples(VIEW, LISTED, SUMMARIES, catalog, tok, 1024)
    assert "Preference summary: Likes comedies." in out["prompt"][0] and "Preference summary" not in out["prompt"][1]
    assert "(nothing yet)" in out["prompt"][2]
    assert list(out["completion"]) == [catalog.title(t) for t in VIEW["target"]]
    for prompt, cands in zip(out["prompt"], VIEW["candidates"]):
        assert all(f"- {catalog.title(c)}\n" in prompt for c in cands)


def test_an_overlong_prompt_loses_the_fewest_oldest_items_and_never_the_summary(catalog, tiny):
    _, tok = tiny
    view, listed = VIEW.head(1), [list(range(1, 13))]
    full = prompts.build_examples(view, listed, SUMMARIES[:1], catalog, tok, 4096)
    n = len(tok(full["prompt"][0], add_special_tokens=False)["input_ids"])
    out = prompts.build_examples(view, listed, SUMMARIES[:1], catalog, tok, n - 20)
    cut = int(out["history_cut"][0])
    assert cut > 0 and "Likes comedies." in out["prompt"][0]
    assert catalog.title(12) in out["prompt"][0] and f"- {prompts.describe_item(catalog)(1)}" not in out["prompt"][0]
    one_less = prompts.listwise_prompt(tok, SUMMARIES[0], listed[0][cut - 1:], view["candidates"][0],
                                  prompts.describe_item(catalog), catalog.title)
    assert len(tok(one_less, add_special_tokens=False)["input_ids"]) > n - 20  # the cut is the smallest that fits
    with pytest.raises(prompts.PromptError, match="MAX_PROMPT_TOKENS"):
        prompts.build_examples(view, listed, SUMMARIES[:1], catalog, tok, 20)


def test_pointwise_prefix_plus_question_is_the_whole_prompt_about_that_candidate(catalog, tiny):
    _, tok = tiny
    out = prompts.build_examples(VIEW, LISTED, SUMMARIES, catalog, tok, 1024, pointwise=True)
    for prefix, questions, cands, listed, summary in zip(out["prompt"], out["questions"], VIEW["candidates"],
                                                         LISTED, SUMMARIES):
        assert len(questions) == len(cands)
        for q, c in zip(questions, cands):
            lines = prompts.context(summary, listed, prompts.describe_item(catalog)) + [
                f"Candidate: {catalog.title(c)}", prompts.POINTWISE_QUESTION]
            whole = prompts.prompt_text(tok, [{"role": "system", "content": prompts.POINTWISE_SYSTEM},
                                         {"role": "user", "content": "\n".join(lines)}])
            assert prefix + q == whole


def test_pointwise_training_rows_are_one_positive_and_one_seeded_negative(catalog, tiny):
    _, tok = tiny
    draw = lambda seed, epoch: prompts.build_examples(VIEW, LISTED, SUMMARIES, catalog, tok, 1024,  # noqa: E731
                                                 pointwise=True, train=True, seed=seed, epoch=epoch)
    out = draw(0, 0)
    assert len(out) == 2 * len(VIEW) and list(out["completion"]) == ["yes", "no"] * len(VIEW)
    for k, target in enumerate(VIEW["target"]):
        assert f"Candidate: {catalog.title(target)}\n" in out["prompt"][2 * k]
        assert f"Candidate: {catalog.title(target)}\n" not in out["prompt"][2 * k + 1]
    assert draw(0, 0).equals(out)
    assert any(not draw(s, e).equals(out) for s, e in ((1, 0), (0, 1), (2, 3)))


def test_pointwise_scores_are_log_p_yes_after_each_whole_prompt(catalog, tiny):
    model, tok = tiny
    out = prompts.build_examples(VIEW, LISTED, SUMMARIES, catalog, tok, 1024, pointwise=True)
    yes = tok("yes", add_special_tokens=False)["input_ids"]
    reference = []
    for prefix, questions in zip(out["prompt"], out["questions"]):
        row = []
        for q in questions:
            ids = tok(prefix + q + "yes", add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                logp = model(torch.tensor([ids])).logits[0].float().log_softmax(-1)
            row.append(sum(logp[len(ids) - len(yes) - 1 + j, t].item() for j, t in enumerate(yes)))
        reference.append(np.asarray(row))
    for batch_size in (1, 2, 3):
        items = likelihood.pointwise_items(tok, out["prompt"], out["questions"])
        got = likelihood.score_items(model, items, tok.pad_token_id, batch_size=batch_size, progress=False)
        assert max(np.abs(g - r).max() for g, r in zip(got, reference)) < 1e-4
    whole = likelihood.score_items(model, [likelihood.Item(it.prompt, it.candidates) for it in items], tok.pad_token_id,
                               progress=False)
    assert all(np.abs(w - g).min() > 1e-3 for w, g in zip(whole, got))  # only the answer token was scored


def test_pointwise_ranks_go_through_rank_examples_and_refuse_other_scorers(catalog, tiny):
    model, tok = tiny
    out = prompts.build_examples(VIEW, LISTED, SUMMARIES, catalog, tok, 1024, pointwise=True)
    examples = out.assign(candidates=VIEW["candidates"])
    ranks = scoring.rank_examples(model, tok, examples, VIEW, catalog, progress=False)
    scores = likelihood.score_items(model, likelihood.pointwise_items(tok, out["prompt"], out["questions"]),
                                tok.pad_token_id, progress=False)
    from workbench import metrics as M
    expected = M.ranks_from_scores(scores, [c.index(t) for c, t in zip(VIEW["candidates"], VIEW["target"])])
    assert list(ranks["rank"]) == list(expected)
    with pytest.raises(ValueError, match="batched scorer"):
        scoring.rank_examples(model, tok, examples, VIEW, catalog, scorer="prefix", progress=False)


def test_an_item_scoring_more_tail_tokens_than_a_candidate_has_is_refused():
    with pytest.raises(ValueError, match="scored"):
        likelihood.check_items([likelihood.Item([1, 2], [[3, 4], [5]], scored=2)])


@pytest.fixture(scope="module")
def smoke():
    torch.set_num_threads(1)
    cfg = config.resolve("smoke")
    return cfg, load_protocol(cfg)


@pytest.fixture(autouse=True)
def tmp_results(tmp_path, monkeypatch):
    monkeypatch.setenv(results.RESULTS_ENV, str(tmp_path / "results"))
    monkeypatch.setenv("WORKBENCH_CHECKPOINTS", str(tmp_path / "checkpoints"))
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))


def test_every_row_is_summarised_from_the_items_before_its_own_target(smoke, monkeypatch):
    cfg, protocol = smoke
    rec = get_method("trsr")(config.override(cfg, RECENT_ITEMS=2, BLOCK_SIZE=2, MAX_BLOCKS=2), protocol)
    seen = {}
    real = summarize.summarize_users

    def spy(model, tok, histories, *args, **kwargs):
        seen.update(histories)
        return real(model, tok, histories, *args, **kwargs)
    monkeypatch.setattr(summarize, "summarize_users", spy)
    for view in (rec.training_view(), rec.eval_view("valid"), rec.eval_view("test")):
        prompts = rec.prompts(view)
        assert len(prompts) == len(view)
        for u, pos, target in zip(view["user_id"], view["position"], view["target"]):
            history = seen[f"{u}-{pos}"]
            assert list(history) == rec.sequences[u][:pos] and rec.sequences[u][pos] == target
    bad = rec.eval_view("test").assign(position=lambda v: v["position"] - 1)
    with pytest.raises(ValueError, match="not the target"):
        rec.prompts(bad)


def test_the_summary_cache_is_keyed_by_the_weights(smoke):
    cfg, protocol = smoke
    a = get_method("trsr")(cfg, protocol)
    b = get_method("trsr")(config.override(cfg, SEED=1), protocol)  # the tiny model's initialisation changes
    assert weights_digest(a.model) == weights_digest(get_method("trsr")(cfg, protocol).model)
    assert a.summarizer_name != b.summarizer_name


@pytest.mark.parametrize("changes", [{}, {"TRSR_SCORING": "pointwise"}, {"TRSR_HISTORY": "recurrent"},
                                     {"TRSR_HISTORY": "full"}, {"TRSR_HISTORY": "recent", "RECENT_ITEMS": 0}])
def test_the_method_trains_and_ranks_every_variant_on_the_smoke_profile(smoke, changes):
    cfg, protocol = smoke
    cfg = config.override(cfg, LLM_TRAIN_SAMPLES=8, GEN_EVAL_USERS=2, LLM_EVAL_USERS=4, **changes)
    run = run_method("trsr", cfg, protocol)
    assert len(run.ranks) == 4 and run.ranks["rank"].between(1, 20).all()
    assert np.isfinite(run.log["loss"]).all() and len(run.log)
    summarised = cfg["TRSR_HISTORY"] in summarize.METHODS
    assert ("summaries" in run.extra) == summarised
    assert run.extra["sft_samples"] == 8 * (2 if cfg["TRSR_SCORING"] == "pointwise" else 1)
    assert ("generate_then_match" in run.extra) == (cfg["TRSR_SCORING"] == "listwise")


def test_text_rich_items_are_described_by_title_and_text():
    data = load_dataset("mind", FIXTURES / "mind")
    catalog = prompts.Catalog(data.users, data.items)
    row = data.items.iloc[0]
    line = prompts.describe_item(catalog)(int(row["item_id"]))
    assert line.startswith(str(row["title"]) + ": ") and len(line) <= len(str(row["title"])) + 2 + prompts.TEXT_CHARS + 3
    assert line[len(str(row["title"])) + 2:].rstrip(".") in str(row["text"]) and line.count(str(row["title"])) == 1


def test_the_method_runs_on_text_rich_data():
    cfg = config.resolve("smoke", DATASET="mind", DATA_PATH=str(FIXTURES / "mind"), N_NEGATIVES=2,
                         LLM_TRAIN_SAMPLES=4, GEN_EVAL_USERS=0, BLOCK_SIZE=2, RECENT_ITEMS=1)
    protocol = load_protocol(cfg)
    run = run_method("trsr", cfg, protocol)
    assert len(run.ranks) == len(protocol.test) > 0 and run.ranks["rank"].between(1, 3).all()
    assert run.extra["summaries"]["generated"] > 0 and np.isfinite(run.log["loss"]).all()
