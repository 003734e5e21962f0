"""Prompt forms (PROMPT_FORM), the ranking objective (LLM_OBJECTIVE) and the learning-rate schedule (LR_SCHEDULE):
prompts that name no candidate, the listwise cross-entropy through one trainer for every LLM method, schedules that
do not decay to zero.  Reproduce: `python -m pytest tests/unit/test_objectives.py`.
"""
import math

import numpy as np
import pandas as pd
import pytest
import torch

from workbench import config, results
from workbench.llm import likelihood, listwise, scoring, sft
from workbench.llm.loading import load_llm
from workbench.llm.prompting import FREE_QUESTION
from workbench.methods.mkv import prompts
from workbench.methods.pipeline import run_method
from workbench.recommender import get_method
from small_llm import smoke_setting

FREE = {"mkv": dict(MKV_OUTPUT="title", AUGMENT=["shuffle_keys"]), "trsr": dict(TRSR_SCORING="listwise"),
        "rsllm": {}, "bdlm": {}}  # what each method needs beside PROMPT_FORM=free (candidates are not listed)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The smoke setting, its protocol and a saved SASRec run (RSLLM's ID table), in this module's own folders."""
    yield from smoke_setting(tmp_path_factory, "objectives")


def _titles(rec, view):
    return [[rec.catalog.title(c) for c in cands] for cands in view["candidates"]]


@pytest.mark.parametrize("name", list(FREE))
def test_a_free_prompt_names_no_candidate_and_is_scored_in_one_order(smoke, name):
    cfg, protocol = smoke
    rec = get_method(name)(config.override(cfg, PROMPT_FORM="free", SCORE_ORDERS=2, **FREE[name]), protocol)
    rec.setup()
    view = rec.eval_view()
    rows = rec.prompts(view)
    for prompt, titles in zip(rows["prompt"], _titles(rec, view)):  # candidates are unseen items: never in history
        lines = set(prompt.split("\n"))
        assert "Candidates:" not in lines and FREE_QUESTION in prompt and not lines & {f"- {t}" for t in titles}
    if "soft_ids" in rows:  # nor a candidate's ID token: the history's (and the user key) only
        for ids, cands in zip(rows["soft_ids"], view["candidates"]):
            assert not set(map(int, ids)) & set(map(int, cands))
    assert rec.n_orders("batched") == 1
    listed = get_method(name)(config.override(cfg, PROMPT_FORM="listed", SCORE_ORDERS=2, **FREE[name]), protocol)
    assert listed.n_orders("batched") == 2 and "Candidates:" in listed.prompts(view)["prompt"][0]


def test_mkv_refuses_a_free_prompt_with_a_list_answer_or_a_candidate_shuffle(smoke):
    cfg, protocol = smoke
    assert (cfg["PROMPT_FORM"], cfg["MKV_OUTPUT"], cfg["AUGMENT"]) == ("free", "title", ["none"])  # the defaults
    get_method("mkv")(cfg, protocol)
    with pytest.raises(ValueError, match="set MKV_OUTPUT=title"):
        get_method("mkv")(config.override(cfg, PROMPT_FORM="free", MKV_OUTPUT="list"), protocol)
    with pytest.raises(ValueError, match="shuffle_candidates reorders listed candidates"):
        get_method("mkv")(config.override(cfg, PROMPT_FORM="free", MKV_OUTPUT="title",
                                          AUGMENT=["shuffle_candidates"]), protocol)


def test_free_prompts_score_in_the_batched_engine_as_the_per_candidate_reference(catalog):
    torch.set_num_threads(1)
    texts = [catalog.title(i) for i in catalog.items] + [prompts.SYSTEM, FREE_QUESTION, "User: Watched"] * 3
    model, tok = load_llm("tiny", tiny_texts=texts, seed=0)
    fmt = prompts.Format("title", listed=False)
    cands = [[1, 5, 9, 12], [2, 4, 6, 8]]
    texts = [prompts.prompt_text(tok, prompts.render(catalog, u, h, c, fmt=fmt))
             for u, h, c in ((1, [3, 4, 7], cands[0]), (2, [10], cands[1]))]
    titles = [[catalog.title(i) for i in c] for c in cands]
    batched = likelihood.score_items(model, likelihood.make_items(tok, texts, titles), tok.pad_token_id,
                                     batch_size=2, progress=False)
    naive = [scoring.score_naive(model, tok, p, t) for p, t in zip(texts, titles)]
    assert max(np.abs(a - b).max() for a, b in zip(batched, naive)) < 1e-4


def test_the_listwise_loss_is_the_cross_entropy_of_the_target_among_the_candidates():
    scores = torch.tensor([[0.0, 1.0, 2.0], [3.0, 0.0, 0.0]])
    loss = listwise.listwise_loss(scores, torch.tensor([2, 0]))
    expected = -(torch.log_softmax(scores, -1)[0, 2] + torch.log_softmax(scores, -1)[1, 0]) / 2
    assert torch.isclose(loss, expected)
    with pytest.raises(ValueError, match="LLM_OBJECTIVE must be one of"):
        listwise.Ranking([], [], "pairwise")
    item = likelihood.Item([1, 2], [[3], [4]])
    with pytest.raises(ValueError, match="outside its 2 candidates"):
        listwise.Ranking([item], [2])


def test_the_listwise_temperature_divides_the_scores_before_the_softmax_and_must_be_positive(catalog):
    """Summed title log-likelihoods lie tens of nats apart: the softmax is one-hot unless a temperature softens it."""
    scores, target = torch.tensor([[-20.0, -35.0, -50.0]]), torch.tensor([1])
    assert torch.isclose(listwise.listwise_loss(scores, target, 10.0), listwise.listwise_loss(scores / 10, target))
    assert listwise.listwise_loss(scores, target, 10.0) < listwise.listwise_loss(scores, target)
    with pytest.raises(ValueError, match="LISTWISE_TEMPERATURE must be > 0"):
        listwise.Ranking([], [], "listwise", temperature=0.0)
    tok = load_llm("tiny", tiny_texts=[catalog.title(i) for i in catalog.items], seed=0)[1]
    rows = pd.DataFrame({"prompt": ["a prompt"], "completion": [catalog.title(2)], "candidates": [[1, 2, 3]],
                         "target": [2]})
    assert listwise.ranking_rows(tok, rows, catalog, "listwise", temperature=5.0)[1].temperature == 5.0
    with pytest.raises(config.ConfigError, match="LISTWISE_TEMPERATURE must be"):
        config.resolve("smoke", LISTWISE_TEMPERATURE=0.0)


def test_ranking_rows_need_the_target_among_the_candidates_once(catalog):
    tok = load_llm("tiny", tiny_texts=[catalog.title(i) for i in catalog.items], seed=0)[1]
    rows = pd.DataFrame({"prompt": ["a prompt"], "completion": [catalog.title(5)], "candidates": [[1, 2, 3]],
                         "target": [5]})
    with pytest.raises(ValueError, match="not among its row's candidates once"):
        listwise.ranking_rows(tok, rows, catalog, "listwise")
    rows, ranking = listwise.ranking_rows(tok, rows.assign(target=2), catalog, "both")
    assert list(rows["row"]) == [0] and ranking.targets == [1] and len(ranking.items[0].candidates) == 3


@pytest.mark.parametrize("objective", ["listwise", "both"])
def test_the_listwise_objective_raises_the_targets_score_among_its_candidates(smoke, objective, tmp_path):
    """Eight steps of the ranking objective on four windows lower their cross-entropy (the target's share of the
    softmax over its candidates' ranking scores rises): the term reaches the weights through the very scores ranking
    sorts by.  `listwise` alone runs no LM pass (no loss_lm logged); `both` logs both terms."""
    cfg, protocol = smoke
    cfg = config.override(cfg, LLM_OBJECTIVE=objective, LLM_BATCH_SIZE=4, GRAD_ACCUM=1, LLM_EPOCHS=8,
                          LLM_LEARNING_RATE=1e-2, LR_SCHEDULE="constant", MKV_OUTPUT="title", AUGMENT=["none"])
    rec = get_method("mkv")(cfg, protocol)
    rec.setup()
    view = rec.training_view(4)
    rows, ranking = listwise.ranking_rows(rec.tokenizer, rec.prompts(view).assign(
        candidates=view["candidates"].to_numpy(), target=view["target"].to_numpy()), rec.catalog, objective)

    def cross_entropy(model):
        scores = likelihood.score_items(model, ranking.items, rec.tokenizer.pad_token_id, progress=False)
        return float(listwise.listwise_loss(torch.tensor(np.stack(scores)), torch.tensor(ranking.targets)))

    before = cross_entropy(rec.model)
    stacked = pd.concat([rows] * 8, ignore_index=True)
    model, log = sft.train_sft(rec.model, rec.tokenizer, stacked, rec.sft_settings(), tmp_path / objective,
                               trainer_cls=listwise.RankingSFTTrainer, ranking=ranking)
    assert len(log) == 8 and log["loss"].map(math.isfinite).all()
    assert ("loss_lm" in log) == (objective == "both") and log["loss_listwise"].notna().all()
    assert cross_entropy(model) < before - 0.05, (before, cross_entropy(model))


@pytest.mark.parametrize("name", list(FREE))
def test_every_llm_method_trains_on_the_ranking_objective_in_a_free_prompt(smoke, name):
    cfg, protocol = smoke
    run = run_method(name, config.override(cfg, PROMPT_FORM="free", LLM_OBJECTIVE="both", **FREE[name]), protocol)
    log = run.log
    assert log["loss"].map(math.isfinite).all() and "loss_listwise" in log and log["loss_listwise"].notna().any()
    assert run.extra["trainable_parameters"] > 0 and len(run.ranks) == cfg["LLM_EVAL_USERS"]


def test_trsr_pointwise_rows_refuse_the_ranking_objective_with_what_to_do(smoke):
    cfg, protocol = smoke
    rec = get_method("trsr")(config.override(cfg, LLM_OBJECTIVE="listwise"), protocol)
    with pytest.raises(ValueError, match="use TRSR_SCORING=listwise"):
        rec.fit()


@pytest.mark.parametrize("schedule, last", [("cosine", 0.0), ("constant", 1.0), ("cosine_floor", 0.1)])
def test_the_learning_rate_schedule_after_the_warm_up(schedule, last, tmp_path):
    """cosine (the old only schedule) reaches ~0 within a handful of steps; constant and cosine_floor do not."""
    from transformers import get_scheduler
    options = sft.schedule_options(schedule)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = get_scheduler(options["lr_scheduler_type"], opt, num_warmup_steps=0, num_training_steps=4,
                          scheduler_specific_kwargs=options.get("lr_scheduler_kwargs"))
    rates = []
    for _ in range(4):
        rates.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert rates[0] == 1.0 and abs(sched.get_last_lr()[0] - last) < 1e-6
    with pytest.raises(ValueError, match="LR_SCHEDULE must be one of"):
        sft.schedule_options("step")


@pytest.mark.parametrize("name", list(FREE))
def test_every_llm_method_has_an_untrained_reference_on_the_same_users_paired_in_the_report(smoke, name):
    """Each LLM method declares `<label> zero-shot` (run `<name>-zeroshot`: the same prompts, no training) and the
    report pairs the trained entry with it; BDLM's reference has no round, its before and after states equal."""
    from workbench.evaluation import comparison, report
    from workbench.methods.pipeline import against_zero_shot
    from workbench.recommender import get_spec
    cfg, protocol = smoke
    tuned = run_method(name, cfg, protocol)
    zero, learned = against_zero_shot(name, tuned, cfg, protocol)
    assert zero.extra["sft_samples"] == 0 and zero.extra["trainable_parameters"] == 0
    assert set(zero.ranks["user_id"]) == set(tuned.ranks["user_id"]) and "NDCG@10" in learned.index
    spec = get_spec(name)
    trained = next(e for e in spec.entries if e.paired_with)
    assert any(e.label == trained.paired_with and e.run_name == f"{name}-zeroshot" for e in spec.entries)
    if name == "bdlm":
        variants = zero.recommender.variants
        assert (variants["llm_before"] == variants["llm_after"]).all()
    found = comparison.collect(cfg, protocol, rows=tuple(e for e in spec.entries if e.run_name or e.paired_with))
    table = report.zero_shot_table(found)
    assert list(table.index) == [f"{trained.label} - {trained.paired_with}"]


def test_a_capped_method_evaluates_the_first_of_the_llm_users_and_is_paired_on_its_own(smoke):
    """TRSR_EVAL_USERS / BDLM_EVAL_USERS cap a costly scorer's users to a nested subset of LLM_EVAL_USERS: its
    users are among every LLM method's, its runs are other runs, and its zero-shot pair uses all of its own users
    (more than the comparison's common users when a row ranks fewer)."""
    from workbench.evaluation import comparison, report
    from workbench.methods.pipeline import against_zero_shot
    from workbench.recommender import get_spec
    cfg, protocol = smoke
    capped = config.override(cfg, TRSR_EVAL_USERS=2, **FREE["trsr"])
    trsr, mkv = get_method("trsr"), get_method("mkv")
    assert trsr.n_eval_users(capped) == 2 and mkv.n_eval_users(capped) == cfg["LLM_EVAL_USERS"] == 4
    assert trsr.n_eval_users(config.override(capped, LLM_EVAL_USERS=1)) == 1  # an ablation's fewer users win
    assert trsr.run_key(capped, protocol) != trsr.run_key(config.override(capped, TRSR_EVAL_USERS=None), protocol)
    run = run_method("trsr", capped, protocol)
    users, tuned = set(run.ranks["user_id"]), run_method("mkv", cfg, protocol)
    assert len(users) == 2 and users < set(tuned.ranks["user_id"])
    against_zero_shot("trsr", run, capped, protocol)
    against_zero_shot("mkv", tuned, cfg, protocol)
    rows = tuple(e for e in get_spec("trsr").entries + get_spec("mkv").entries if e.run_name or e.paired_with)
    found = comparison.collect(capped, protocol, rows=rows)
    assert len(found.users) == 2  # the common users: the capped method's
    table = report.zero_shot_table(found)
    assert table.loc["MKV LoRA - MKV zero-shot", "users"] == 4
    assert table.filter(like="LLM-TRSR", axis=0)["users"].tolist() == [2]


def test_a_capped_method_trains_on_its_own_share_of_the_windows_and_records_it(smoke):
    """TRSR_TRAIN_SAMPLES / BDLM_TRAIN_SAMPLES cap a costly method's training windows: it trains on that many, its
    record says so (the report's training budget reads it), and the capped run is the uncapped run of that size."""
    cfg, protocol = smoke
    capped = config.override(cfg, TRSR_TRAIN_SAMPLES=4, **FREE["trsr"])
    trsr = get_method("trsr")
    assert trsr.capped(capped)["LLM_TRAIN_SAMPLES"] == 4 and get_method("mkv").capped(capped) is capped
    assert trsr.capped(config.override(capped, LLM_TRAIN_SAMPLES=0))["LLM_TRAIN_SAMPLES"] == 0  # zero-shot stays
    same = config.override(cfg, LLM_TRAIN_SAMPLES=4, **FREE["trsr"])
    assert trsr.run_key(capped, protocol) == trsr.run_key(same, protocol)
    run = run_method("trsr", capped, protocol)
    assert run.extra["sft_samples"] == 4 * cfg["LLM_EPOCHS"] and results.load_run(run.run_id).record["parameters"]["LLM_TRAIN_SAMPLES"] == 4
