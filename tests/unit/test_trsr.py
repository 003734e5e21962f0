"""LLM-TRSR: summary prompts (pointwise and listwise), the two-way yes/no scorer, the summariser, the method."""
import json
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
from workbench.recommender import get_method, get_spec
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
    texts = [catalog.title(i) for i in catalog.items] + [prompts.POINTWISE_SYSTEM, prompts.POINTWISE_QUESTION] * 3
    return load_llm("tiny", tiny_texts=texts + ["yes", "no"] * 50, seed=0)  # yes and no: one token each


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
    describe = prompts.describe_item(catalog)
    for prefix, questions, cands, listed, summary in zip(out["prompt"], out["questions"], VIEW["candidates"],
                                                         LISTED, SUMMARIES):
        assert len(questions) == len(cands)
        for q, c in zip(questions, cands):
            lines = prompts.context(summary, listed, describe) + [f"Candidate: {describe(c)}",
                                                                  prompts.POINTWISE_QUESTION]
            whole = prompts.prompt_text(tok, [{"role": "system", "content": prompts.POINTWISE_SYSTEM},
                                         {"role": "user", "content": "\n".join(lines)}])
            assert prefix + q == whole


def test_the_default_is_pointwise_with_each_candidate_described_by_its_item_text(smoke):
    """Issue 21: the authors' recommender asks yes/no about one candidate, shown by its item text (MovieLens:
    title, year, genres); the default here was listwise, and the pointwise question showed the title only."""
    cfg, protocol = smoke
    assert config.resolve("cpu")["TRSR_SCORING"] == config.resolve("gpu")["TRSR_SCORING"] == "pointwise"
    rec = get_method("trsr")(cfg, protocol)
    view = rec.eval_view("test")
    out = rec.prompts(view)
    assert rec.pointwise and "questions" in out and len(out) == len(view)
    for questions, cands in zip(out["questions"], view["candidates"]):
        for q, c in zip(questions, cands):
            row = rec.catalog.items[int(c)]
            assert q.startswith(f"Candidate: {rec.describe(c)}\n") and f"{row['year']}; {row['genres'][0]}" in q
    train = rec.prompts(rec.training_view(), epoch=0)
    assert list(train["completion"][:2]) == ["yes", "no"] and len(train) == 2 * len(rec.training_view())


def test_the_ablation_s_history_arms_score_pointwise_and_listwise_is_an_arm_of_its_own():
    from workbench.methods import trsr
    assert config.resolve("gpu")["TRSR_ARMS"] == ["hierarchical", "recurrent", "full", "recent", "listwise"]
    assert config.resolve("cpu")["TRSR_ARMS"] == ["hierarchical", "recent"]  # the paper's claim only: the budget
    for arm in trsr.HISTORIES:
        assert trsr.arm_changes(arm) == {"TRSR_HISTORY": arm, "TRSR_SCORING": "pointwise"}
    assert trsr.arm_changes("listwise") == {"TRSR_HISTORY": "hierarchical", "TRSR_SCORING": "listwise"}
    assert get_spec("trsr").ablation.reference == "recent"
    with pytest.raises(ValueError, match="listwise"):
        trsr.arm_changes("pointwise")


def test_pointwise_text_rich_candidates_are_described_by_their_text(tiny):
    _, tok = tiny
    rich = prompts.Catalog(pd.DataFrame({"user_id": [1]}), pd.DataFrame(
        {"item_id": [1, 2], "title": ["News A", "News B"], "text": ["News A. Markets fall on rates.", "News B"]}))
    view = pd.DataFrame({"user_id": [1], "target": [1], "candidates": [[1, 2]]})
    out = prompts.build_examples(view, [[2]], [""], rich, tok, 1024, pointwise=True)
    assert out["questions"][0][0].startswith("Candidate: News A: Markets fall on rates.\n")


def test_pointwise_training_rows_are_one_positive_and_one_seeded_negative(catalog, tiny):
    _, tok = tiny
    draw = lambda seed, epoch: prompts.build_examples(VIEW, LISTED, SUMMARIES, catalog, tok, 1024,  # noqa: E731
                                                 pointwise=True, train=True, seed=seed, epoch=epoch)
    out = draw(0, 0)
    assert len(out) == 2 * len(VIEW) and list(out["completion"]) == ["yes", "no"] * len(VIEW)
    describe = prompts.describe_item(catalog)
    for k, target in enumerate(VIEW["target"]):
        assert f"Candidate: {describe(target)}\n" in out["prompt"][2 * k]
        assert f"Candidate: {describe(target)}\n" not in out["prompt"][2 * k + 1]
    assert draw(0, 0).equals(out)
    assert any(not draw(s, e).equals(out) for s, e in ((1, 0), (0, 1), (2, 3)))


def test_pointwise_scores_are_the_softmax_over_the_yes_and_no_logits_after_each_whole_prompt(catalog, tiny):
    """Issue 21: the authors score softmax([logit_yes, logit_no])[yes] at the answer position, not log P(yes) over
    the whole vocabulary."""
    model, tok = tiny
    out = prompts.build_examples(VIEW, LISTED, SUMMARIES, catalog, tok, 1024, pointwise=True)
    [yes], [no] = (tok(w, add_special_tokens=False)["input_ids"] for w in ("yes", "no"))
    two_way, vocab = [], []
    for prefix, questions in zip(out["prompt"], out["questions"]):
        ids = [tok(prefix + q, add_special_tokens=False)["input_ids"] for q in questions]
        with torch.no_grad():
            last = [model(torch.tensor([i])).logits[0, -1].float() for i in ids]
        two_way.append(np.array([torch.log_softmax(x[[yes, no]], -1)[0].item() for x in last]))
        vocab.append(np.array([torch.log_softmax(x, -1)[yes].item() for x in last]))
    for batch_size in (1, 2, 3):
        items = likelihood.pointwise_items(tok, out["prompt"], out["questions"], versus="no")
        got = likelihood.score_items(model, items, tok.pad_token_id, batch_size=batch_size, progress=False)
        assert max(np.abs(g - r).max() for g, r in zip(got, two_way)) < 1e-4
    ranks = scoring.rank_examples(model, tok, out.assign(candidates=VIEW["candidates"]), VIEW, catalog,
                                  progress=False)  # the engine's pointwise branch scores two-way
    from workbench import metrics as M
    at = [c.index(t) for c, t in zip(VIEW["candidates"], VIEW["target"])]
    assert list(ranks["rank"]) == list(M.ranks_from_scores(two_way, at))
    old = likelihood.score_items(model, likelihood.pointwise_items(tok, out["prompt"], out["questions"]),
                                 tok.pad_token_id, progress=False)
    assert max(np.abs(o - r).max() for o, r in zip(old, vocab)) < 1e-4  # without versus: over the vocabulary
    assert all((v < g - 1e-3).all() for v, g in zip(vocab, got))  # another score: P(yes) < P(yes | yes or no)
    with pytest.raises(ValueError, match="one token each"):
        likelihood.pointwise_items(tok, out["prompt"], out["questions"], answer="yes no", versus="no")


def test_pointwise_ranks_go_through_rank_examples_and_refuse_other_scorers(catalog, tiny):
    model, tok = tiny
    out = prompts.build_examples(VIEW, LISTED, SUMMARIES, catalog, tok, 1024, pointwise=True)
    examples = out.assign(candidates=VIEW["candidates"])
    ranks = scoring.rank_examples(model, tok, examples, VIEW, catalog, progress=False)
    scores = likelihood.score_items(model, likelihood.pointwise_items(tok, out["prompt"], out["questions"],
                                                                      versus="no"), tok.pad_token_id, progress=False)
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


def _entries(root: Path) -> dict:
    """The summary cache's entries under `root`: '<user>-<position>' -> entry."""
    return {f.name[len("user-"):-len(".json")]: json.loads(f.read_text()) for f in root.glob("*/user-*.json")}


def test_without_a_cap_the_whole_history_is_summarised_in_blocks_from_the_oldest_item(smoke, tmp_path, monkeypatch):
    """Issue 21: the authors summarise every item before the target (the recent ones too), in blocks from the
    oldest item; here the recent items were removed first and blocks aligned on the newest, the last MAX_BLOCKS kept."""
    cfg, protocol = smoke
    gpu = config.resolve("gpu")["MAX_BLOCKS"]
    assert gpu is None or gpu * 5 >= 25  # no cap for the paper's histories (<= 25 items)
    rec = get_method("trsr")(config.override(cfg, MAX_BLOCKS=None, BLOCK_SIZE=4, RECENT_ITEMS=3), protocol)
    view = protocol.test[protocol.test["position"] <= 30].head(2).reset_index(drop=True)
    assert len(view) == 2
    rec.prompts(view)
    entries = _entries(tmp_path / "cache" / "summaries")
    for u, pos in zip(view["user_id"], view["position"]):
        history, bl = rec.sequences[int(u)][:int(pos)], entries[f"{u}-{pos}"]["blocks"]
        assert [i for b in bl for i in b] == history  # every item, the RECENT_ITEMS listed ones included
        assert bl[0] == history[:4] and all(len(b) == 4 for b in bl[:-1]) and len(bl) == -(-len(history) // 4)
    capped = get_method("trsr")(config.override(cfg, MAX_BLOCKS=2, BLOCK_SIZE=4, RECENT_ITEMS=3), protocol)
    capped.prompts(view)  # a cap keeps the most recent blocks of the same partition
    for key, entry in _entries(tmp_path / "cache" / "summaries").items():
        if len(entry["blocks"]) == 2 and key in entries:
            assert entry["blocks"] == entries[key]["blocks"][-2:]


def test_summary_model_names_the_summariser_whose_summaries_are_used_and_keyed(smoke, tmp_path, monkeypatch):
    """Issue 21: the authors summarise with a separate, frozen, larger model; SUMMARY_MODEL names one."""
    cfg, protocol = smoke
    base = get_method("trsr")(cfg, protocol)
    other, tok = load_llm("tiny", tiny_texts=base.corpus(), seed=7)  # another model: a saved folder
    noise = torch.Generator().manual_seed(0)
    with torch.no_grad():  # untouched, a tiny model generates nothing (every summary would be the fallback)
        for n, w in other.named_parameters():
            w.add_(torch.randn(w.shape, generator=noise) * 0.3 * ("norm" not in n))
    folder = tmp_path / "summariser"
    other.save_pretrained(folder)
    tok.save_pretrained(folder)
    named = config.override(cfg, SUMMARY_MODEL=str(folder))
    rec = get_method("trsr")(named, protocol)
    seen = []
    real = summarize.summarize_users

    def spy(model, tokenizer, histories, *args, **kwargs):
        seen.append((model, kwargs["model_name"]))
        return real(model, tokenizer, histories, *args, **kwargs)
    monkeypatch.setattr(summarize, "summarize_users", spy)
    view = rec.eval_view("test").head(2)
    got = rec.summaries(view, rec.histories(view))
    model, name = seen[0]
    assert model is not rec.model and not any(p.requires_grad for p in model.parameters())
    assert weights_digest(model) == weights_digest(other) != weights_digest(rec.model)
    assert name == rec.summarizer_name == f"{folder}@{weights_digest(other)}" != base.summarizer_name
    direct = real(other, tok, dict(zip([f"{u}-{p}" for u, p in zip(view["user_id"], view["position"])],
                                       rec.histories(view))), rec.describe, "hierarchical", cfg["BLOCK_SIZE"],
                  cfg["MAX_BLOCKS"], 0, cfg["SUMMARY_TOKENS"], use_cache=False, progress=False)
    assert got == list(direct.values()) != base.summaries(view, base.histories(view))
    assert direct.report["fallback_summaries"] == 0
    keys = [json.loads(f.read_text())["model"] for f in (tmp_path / "cache" / "summaries").glob("*/key.json")]
    assert sorted(keys) == sorted([name, base.summarizer_name])
    run_a, run_b = (type(rec).run_key(c, protocol) for c in (cfg, named))
    assert run_a != run_b and run_b["params"]["SUMMARY_MODEL"] == str(folder) and "summary_weights" in run_b
    assert rec.checkpoint_key() != base.checkpoint_key() and rec.base_key()["summary_weights"].startswith("local@")


@pytest.mark.parametrize("changes", [{}, {"TRSR_SCORING": "listwise"}, {"TRSR_HISTORY": "recurrent"},
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
