"""BDLM: shared tables, the KL terms on both sides, the rounds (resume, divergence), each model alone, the arms."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

from workbench import config, metrics, results
from workbench.llm import scoring, softtokens, sft
from workbench.data.protocol import load_protocol
from workbench.methods import bdlm
from workbench.methods.bdlm import method as bdlm_method
from workbench.methods.pipeline import load_recommender, run_method
from workbench.methods.bdlm import bridge
from workbench.methods.baselines import models
from workbench.llm.loading import load_llm
from workbench.llm.projector import IDEmbedder, user_key
from workbench.llm.listwise import ranking_rows
from workbench.methods.bdlm.mutual import MutualSFTTrainer, distill_kl, domain_phase, log_probs
from workbench.llm import unified

N_ITEMS, N_USERS, DIM = 13, 10, 8  # the ml-100k fixture has 12 items
VIEW = pd.DataFrame({"user_id": [1, 2, 3, 4], "history": [[7, 8, 9], [10, 11], [12], [9, 10, 11, 12]],
                     "target": [5, 6, 2, 5], "candidates": [[5, 1, 2], [6, 3, 4], [2, 1, 6], [5, 3, 4]]})


def _domain(seed=0):
    torch.manual_seed(seed)
    net = models.SASRec(N_ITEMS, 5, dim=DIM, layers=1, heads=1, dropout=0.0)
    return bridge.from_recommender(net, N_USERS)


def _cfg(**kw):
    return config.resolve("smoke", LLM_BATCH_SIZE=4, GRAD_ACCUM=1, BATCH_SIZE=4, LEARNING_RATE=0.05, KL_TEMPERATURE=1.0,
                          **kw)


def _llm(catalog):
    torch.set_num_threads(1)
    titles = pd.DataFrame({"title": [catalog.title(i) for i in catalog.items]})
    model, tok = load_llm("tiny", tiny_texts=unified.corpus(titles) * 3, seed=0)
    softtokens.add_soft_token(model, tok)
    return model, tok


def _rows(catalog, tok):
    keys = [user_key(u, N_ITEMS) for u in VIEW["user_id"]]
    rows = unified.build_examples(catalog, VIEW, tok, 2048, "unified", users=keys)
    return rows.assign(row=range(len(rows)), candidates=VIEW["candidates"].to_numpy(), target=VIEW["target"].to_numpy())


def _ranking(tok, rows, catalog, objective="sft"):
    return ranking_rows(tok, rows, catalog, objective)[1]


def _llm_logp(model, tok, catalog, rows, embedder, temperature):
    scored = scoring.score_examples(model, tok, rows, VIEW, catalog, soft_embedder=embedder, progress=False)
    return log_probs(np.stack(scored["scores"]), temperature)


def test_distill_kl_is_t_squared_times_kl_teacher_to_student_and_refuses_other_candidates():
    student, teacher = torch.tensor([[4.0, 0.0, -3.0]]), torch.log(torch.tensor([[0.5, 0.3, 0.2]]))
    p_s = torch.softmax(student / 2, -1)
    expected = 4 * (teacher.exp() * (teacher - p_s.log())).sum()
    assert float(expected) > 0.1 and torch.allclose(distill_kl(student, teacher, 2.0), expected, atol=1e-6)
    assert distill_kl(teacher * 2, teacher, 2.0).abs() < 1e-6  # the same distribution: no pull
    with pytest.raises(ValueError, match="same candidates"):
        distill_kl(student, teacher[:, :2], 1.0)


def test_the_domain_model_and_the_llm_read_the_same_tables_and_sasrec_starts_unchanged():
    net = models.SASRec(N_ITEMS, 5, dim=DIM, layers=1, heads=1, dropout=0.0).eval()
    domain = bridge.from_recommender(net, N_USERS).eval()
    embedder = IDEmbedder(domain.tables.items, 16, users=domain.tables.users)
    assert embedder.items is domain.tables.items is domain.encoder.items and embedder.users is domain.tables.users
    seq = models.pad_histories(VIEW["history"], 5)
    users = torch.tensor(VIEW["user_id"].tolist())
    assert torch.allclose(domain(seq, users), net(seq), atol=1e-6)  # user rows start at zero
    with torch.no_grad():
        domain.tables.items.weight[3] += 1.0
    assert torch.equal(embedder.id_vectors(torch.tensor([3])), domain.tables.items.weight[3:4])


def test_a_domain_model_of_another_width_is_refused_with_what_to_do():
    tables = bridge.SharedTables(torch.zeros(N_USERS, 4), torch.zeros(N_ITEMS, 4))
    net = models.SASRec(N_ITEMS, 5, dim=DIM, layers=1, heads=1)
    with pytest.raises(ValueError, match="build the tables from this domain model"):
        bridge.DomainModel(tables, net)
    with pytest.raises(ValueError, match="one width"):
        bridge.SharedTables(torch.zeros(N_USERS, 4), torch.zeros(N_ITEMS, 8))
    with pytest.raises(ValueError, match="no embeddings to share"):
        bridge.from_recommender(torch.nn.Linear(2, 2), N_USERS)


def test_gradients_from_both_objectives_reach_the_shared_tables(catalog, tmp_path):
    model, tok = _llm(catalog)
    domain = _domain()
    embedder = IDEmbedder(domain.tables.items, 64, users=domain.tables.users, target_std=0.02)
    rows = _rows(catalog, tok)
    items0, users0 = domain.tables.items.weight.detach().clone(), domain.tables.users.weight.detach().clone()
    teacher = log_probs(torch.randn(len(VIEW), 3), 1.0)
    sft.train_sft(model, tok, rows, _cfg(), tmp_path / "llm", soft_embedder=embedder, trainer_cls=MutualSFTTrainer,
                    ranking=_ranking(tok, rows, catalog), teacher=teacher, kl_weight=1.0, temperature=1.0,
                    record={})
    items1, users1 = domain.tables.items.weight.detach().clone(), domain.tables.users.weight.detach().clone()
    listed = sorted({i for h, c in zip(VIEW["history"], VIEW["candidates"]) for i in [*h, *c]})
    assert not torch.equal(items1[listed], items0[listed]) and not torch.equal(users1[1:5], users0[1:5])
    windows = pd.DataFrame({"user_id": [1, 2, 3, 4] * 4, "history": list(VIEW["history"]) * 4,
                            "target": [5, 6, 2, 5] * 4})
    domain_phase(domain, windows, 3, _cfg(), seed=0, kl_view=VIEW, teacher=teacher, kl_weight=1.0, progress=False)
    assert not torch.equal(domain.tables.items.weight, items1) and not torch.equal(domain.tables.users.weight, users1)


def test_the_domain_kl_term_moves_the_domain_model_toward_the_llm(catalog):
    teacher = log_probs(torch.tensor([[0.0, 0.0, 6.0]] * len(VIEW)), 1.0)  # the LLM favours the third candidate
    windows = pd.DataFrame({"user_id": [1, 2, 3, 4], "history": list(VIEW["history"]), "target": [5, 6, 2, 5]})
    gaps = {}
    for weight in (0.0, 5.0):
        domain = _domain()
        with torch.no_grad():
            before = distill_kl(bridge.candidate_logits(domain, VIEW), teacher, 1.0)
        domain_phase(domain, windows, 20, _cfg(), seed=0, kl_view=VIEW, teacher=teacher, kl_weight=weight,
                     progress=False)
        with torch.no_grad():
            gaps[weight] = float(distill_kl(bridge.candidate_logits(domain, VIEW), teacher, 1.0) - before)
    assert gaps[5.0] < 0 and gaps[5.0] < gaps[0.0] - 0.1, gaps


def test_the_llm_kl_term_moves_the_llm_toward_the_domain_model(catalog, tmp_path):
    gaps = {}
    for weight in (0.0, 5.0):
        model, tok = _llm(catalog)
        tables = _domain().tables
        embedder = IDEmbedder(tables.items, 64, users=tables.users, target_std=0.02)
        rows = pd.concat([_rows(catalog, tok)] * 4, ignore_index=True)
        first = rows.head(len(VIEW))
        before = _llm_logp(model, tok, catalog, first, embedder, 1.0)
        teacher = log_probs(-before.numpy(), 1.0)  # the domain model prefers what the LLM likes least
        start = distill_kl(before, teacher, 1.0)
        model, _ = sft.train_sft(model, tok, rows, _cfg(), tmp_path / f"w{weight}", soft_embedder=embedder,
                                   trainer_cls=MutualSFTTrainer, ranking=_ranking(tok, first, catalog),
                                   teacher=teacher, kl_weight=weight, temperature=1.0, record={})
        gaps[weight] = float(distill_kl(_llm_logp(model, tok, catalog, first, embedder, 1.0), teacher, 1.0) - start)
    assert gaps[5.0] < 0 and gaps[5.0] < gaps[0.0], gaps


@pytest.fixture(scope="module")
def smoke():
    cfg = config.resolve("smoke", LLM_TRAIN_SAMPLES=8, LLM_EVAL_USERS=4, GEN_EVAL_USERS=0, LLM_BATCH_SIZE=4,
                         DOMAIN_MODEL="sasrec")  # the SASRec option (the default, MF: test_mf_is_the_default_...)
    return cfg, load_protocol(cfg)


@pytest.fixture(autouse=True)
def _isolated(run_folders):
    """Every test here writes its runs and checkpoints to its own temporary folders."""


def _tables(rec):
    return rec.domain.tables.items.weight.detach().clone(), rec.soft_embedder.items.weight.detach().clone()


def test_bdlm_runs_evaluates_each_model_alone_and_reloads(smoke):
    cfg, protocol = smoke
    sasrec = run_method("sasrec", cfg, protocol)
    run = run_method("bdlm", cfg, protocol)
    variants = run.recommender.variants.set_index("user_id")
    users = sorted(run.ranks["user_id"])
    # before the rounds the domain model is the saved SASRec: the same ranks on the same users
    assert variants.loc[users, "domain_before"].tolist() == sasrec.ranks.set_index("user_id").loc[users, "rank"].tolist()
    assert variants.loc[users, "llm_after"].tolist() == run.ranks.set_index("user_id").loc[users, "rank"].tolist()
    record = json.loads(run.record_path.read_text())
    assert [r["round"] for r in record["rounds"]] == [0, 1, 2] and record["diverged"] is None
    assert set(record["variants"]) == {f"{v}_{w}" for v in bdlm.VARIANTS for w in ("before", "after")}
    assert sorted(run.log["round"].unique()) == [0, 1, 2] and "loss_kl" in run.log and run.log["step"].is_monotonic_increasing
    loaded = load_recommender(results.load_run(run.record_path.parent))
    view = loaded.eval_view()
    alone = scoring.view_ranks(view, loaded.view_scores(view)).set_index("user_id")["rank"]  # the LLM, no domain model
    assert alone.loc[users].tolist() == variants.loc[users, "llm_after"].tolist()
    domain = models.sampled_ranks(loaded.domain, view).set_index("user_id")["rank"]  # the domain model, no LLM
    assert domain.loc[users].tolist() == variants.loc[users, "domain_after"].tolist()
    (run.record_path.parent / "domain.pt").unlink()  # weights stay out of git: a clone has none
    with pytest.raises(FileNotFoundError, match="re-run notebook 08_bdlm_information_sharing"):
        load_recommender(results.load_run(run.record_path.parent))


def test_an_interrupted_run_resumes_after_its_last_complete_round(smoke, tmp_path, capsys):
    cfg, protocol = smoke
    run_method("sasrec", cfg, protocol)
    first = run_method("bdlm", cfg, protocol)
    (root,) = [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith("bdlm-") and "round0" not in p.name]
    import shutil
    shutil.rmtree(root / "round-2")  # as if killed after round 2's LLM phase (its checkpoints are complete)
    capsys.readouterr()
    again = run_method("bdlm", cfg, protocol)
    out = capsys.readouterr().out
    assert "round 1 reloaded" in out and "round 2 reloaded" not in out
    assert again.ranks["rank"].tolist() == first.ranks["rank"].tolist()
    assert again.recommender.variants.equals(first.recommender.variants)
    # bit-identical, not only the same ranks (issue 20: the domain phase drew dropout from an unseeded generator and
    # the resumed LLM phase's distributions were re-scored), and the record says what was resumed
    for part in ("adapter", "embedder", "domain"):
        a, b = first.recommender.states[2][part], again.recommender.states[2][part]
        assert all(torch.equal(a[k], b[k]) for k in a), part
    assert again.recommender.round_table().drop(columns="seconds").equals(
        first.recommender.round_table().drop(columns="seconds"))
    assert "round 1 reloaded from its saved state" in again.extra["resumed"]
    assert any("sft-round-2: resumed from checkpoint" in line for line in again.extra["resumed"])
    assert not any("round" in line for line in first.extra["resumed"] if "round0" not in line)


def test_a_reloaded_round_is_validated_again_on_other_validation_users(smoke):
    """Issue 20: rounds saved after validating on 6 users were reloaded with their rows for 3."""
    cfg, protocol = smoke
    run_method("sasrec", cfg, protocol)
    first = run_method("bdlm", cfg, protocol)
    fewer = config.override(cfg, BDLM_VALID_USERS=3)
    again = run_method("bdlm", fewer, protocol)
    assert any("validated again" in line for line in again.extra["resumed"])
    fresh_rows = again.recommender.round_table()
    assert fresh_rows["round"].tolist() == first.recommender.round_table()["round"].tolist()
    for r in (1, 2):
        with again.recommender.at_state(again.recommender.states[r]):
            assert fresh_rows.loc[r, "llm_valid_ndcg10"] == round(again.recommender.validate()["llm_valid_ndcg10"], 6)


def test_a_diverging_round_stops_and_keeps_the_best_round(smoke, monkeypatch):
    cfg, protocol = smoke
    run_method("sasrec", cfg, protocol)
    real = bdlm_method.domain_phase

    def explode(domain, windows, steps, cfg, seed, **kw):
        if seed % 1000 == 2:
            raise FloatingPointError("DomainModel: loss is nan at domain step 1: lower LEARNING_RATE")
        return real(domain, windows, steps, cfg, seed, **kw)

    monkeypatch.setattr(bdlm_method, "domain_phase", explode)
    run = run_method("bdlm", cfg, protocol)
    rec = run.recommender
    assert run.extra["diverged"]["round"] == 2 and "loss is nan" in run.extra["diverged"]["error"]
    best = max(rec.rounds, key=lambda r: r["llm_valid_ndcg10"] + r["domain_valid_ndcg10"])["round"]
    now = rec.state()
    for part in ("adapter", "embedder", "domain"):
        assert all(torch.equal(now[part][k], rec.states[best][part][k]) for k in now[part]), part
    assert [r["round"] for r in rec.rounds] == [0, 1]


@pytest.mark.parametrize("sharing", ["none", "frozen", "one_way"])
def test_each_arm_trains_the_tables_it_should(smoke, sharing):
    cfg, protocol = smoke
    run_method("sasrec", cfg, protocol)
    run = run_method("bdlm", config.override(cfg, **bdlm.arm_changes(sharing), BDLM_ROUNDS=1), protocol,
                     run_name=f"bdlm-{sharing}")
    rec = run.recommender
    start = rec.states[0]["embedder"]["items.weight"]
    domain_items, llm_items = _tables(rec)
    assert torch.equal(start, rec.states[0]["domain"]["tables.items.weight"])  # round 0 leaves the tables alone
    assert torch.equal(domain_items, start) == (sharing == "frozen")  # one way: the domain model trains them
    assert torch.equal(llm_items, start) == (sharing == "frozen")  # none: the LLM trains its own copy
    assert (rec.domain.tables.items is rec.soft_embedder.items) == (sharing != "none")
    rec.train_tables("llm")
    assert rec.soft_embedder.items.weight.requires_grad == (sharing == "none")  # frozen, one way: the LLM only reads
    rec.train_tables("domain")
    assert rec.domain.tables.items.weight.requires_grad == (sharing != "frozen")
    assert run.extra["kl_in_effect"] == {"none": {"llm": 0, "domain": 0}, "frozen": {"llm": 1.0, "domain": 1.0},
                                         "one_way": {"llm": 1.0, "domain": 0}}[sharing]
    with pytest.raises(ValueError, match="unknown BDLM arm"):
        bdlm.arm_changes("both")


def test_mf_is_a_domain_model_trained_on_first_use(smoke):
    cfg, protocol = smoke
    run = run_method("bdlm", config.override(cfg, DOMAIN_MODEL="mf", BDLM_ROUNDS=1), protocol)
    assert run.extra["domain_model"]["run"].startswith("mf-") and run.recommender.domain.encoder is None
    assert np.isfinite(run.log["loss"]).all()
    assert metrics.summarize(run.recommender.variants["domain_after"])["HR@10"] >= 0


def test_a_saved_mf_run_without_its_weights_is_trained_again_not_a_dead_end(smoke, capsys):
    """A fresh clone holds the committed MF record without weights.pt (weights stay out of git); BDLM, MF's only
    reader, used to stop there with 're-run notebook 02', which does not make MF."""
    cfg, protocol = smoke
    cfg = config.override(cfg, DOMAIN_MODEL="mf", BDLM_ROUNDS=1)
    mf = run_method("mf", config.override(cfg, SEED=cfg["ID_MODEL_SEED"]), protocol)
    (mf.record_path.parent / "weights.pt").unlink()
    run = run_method("bdlm", cfg, protocol)
    assert "has no weights here" in capsys.readouterr().out
    assert (mf.record_path.parent / "weights.pt").exists() and run.extra["domain_model"]["run"] == mf.run_id


def test_bdlm_refuses_a_missing_sasrec_run_and_its_zero_shot_trains_nothing(smoke):
    cfg, protocol = smoke
    with pytest.raises(FileNotFoundError, match="run notebook 02_baselines"):
        run_method("bdlm", cfg, protocol)
    # the untrained reference (the report pairs BDLM LLM with it) no longer refuses: test_objectives runs it


def test_a_resumed_phase_scores_unrecorded_windows_as_ranking_scores_them(catalog):
    model, tok = _llm(catalog)
    tables = _domain().tables
    embedder = IDEmbedder(tables.items, 64, users=tables.users, target_std=0.02)
    rows = _rows(catalog, tok)
    from workbench.methods.bdlm.mutual import score_rows
    fresh = score_rows(model, tok, embedder, _ranking(tok, rows, catalog).items, rows["soft_ids"], "sum", 2.0)
    ranked = scoring.score_examples(model, tok, rows, VIEW, catalog, soft_embedder=embedder, progress=False)
    assert fresh.shape == (len(VIEW), 3)
    assert torch.allclose(fresh, log_probs(np.stack(ranked["listed"]), 2.0), atol=1e-5)


def test_a_round_file_that_holds_another_round_is_refused(smoke, tmp_path):
    """Second battery: round 1's state copied over round 2's was reloaded as round 2."""
    import shutil
    cfg, protocol = smoke
    run_method("sasrec", cfg, protocol)
    run_method("bdlm", cfg, protocol)
    (root,) = [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith("bdlm-") and "round0" not in p.name]
    shutil.copy(root / "round-1" / "state.pt", root / "round-2" / "state.pt")
    with pytest.raises(results.ResultError, match="holds round 1, not round 2"):
        run_method("bdlm", cfg, protocol)


@pytest.mark.parametrize("sharing", ["mutual", "one_way"])
def test_the_llm_is_scored_with_the_tables_it_trained_with_not_those_the_domain_phase_changed(smoke, monkeypatch,
                                                                                               sharing):
    """Issue 21: the domain phase changes the shared tables after the LLM phase; the LLM's validation and "after"
    scores read them through a projector and adapter that never saw them.  Each model is now scored at the state it
    last trained with: the LLM with the tables as its own phase left them, the domain model with its own."""
    cfg, protocol = smoke
    run_method("sasrec", cfg, protocol)
    real, seen = bdlm_method.domain_phase, {}

    def spy(domain, *args, **kw):
        seen["before"] = {k: v.detach().clone() for k, v in spy.rec.soft_embedder.state_dict().items()}
        return real(domain, *args, **kw)

    original_fit = bdlm_method.BDLM.fit
    monkeypatch.setattr(bdlm_method.BDLM, "fit", lambda self, *a, **k: (setattr(spy, "rec", self),
                                                                            original_fit(self, *a, **k))[1])
    monkeypatch.setattr(bdlm_method, "domain_phase", spy)
    rec = run_method("bdlm", config.override(cfg, **bdlm.arm_changes(sharing), BDLM_ROUNDS=1), protocol,
                     run_name=f"bdlm-{sharing}").recommender
    view = rec.eval_view()
    domain_items = rec.domain.tables.items.weight.detach().clone()
    assert not torch.equal(domain_items, seen["before"]["items.weight"])  # the domain phase did change the tables
    reported = rec.variants.set_index("user_id")["llm_after"]
    scored = rec.scores(view)[0]
    now = {k: v.detach().clone() for k, v in rec.soft_embedder.state_dict().items()}
    rec.soft_embedder.load_state_dict(seen["before"])  # the tables as the LLM phase left them
    direct = rec.view_scores(view)
    rec.soft_embedder.load_state_dict(now)
    assert max(np.abs(a - b).max() for a, b in zip(scored["scores"], direct["scores"])) < 1e-6
    assert reported.loc[view["user_id"]].tolist() == scoring.view_ranks(view, direct)["rank"].tolist()
    assert torch.equal(rec.domain.tables.items.weight, domain_items)  # the domain model keeps its own tables
    assert np.allclose(rec.domain_scores(view), bridge.candidate_logits(rec.domain, view).detach().numpy())


def test_mf_is_the_default_domain_model_and_its_user_rows_reach_the_llm(smoke):
    """Issue 21: the default domain model was SASRec with user rows at zero, so every user's soft token was the
    projector's bias; MF's user rows differ by user, and so do the user tokens."""
    cfg, protocol = smoke
    assert config.resolve("cpu")["DOMAIN_MODEL"] == config.resolve("smoke")["DOMAIN_MODEL"] == "mf"
    rec = bdlm_method.BDLM(config.override(cfg, DOMAIN_MODEL="mf"), protocol)
    rec.setup()
    users = torch.tensor([user_key(u, protocol.n_items) for u in (1, 2, 3)])
    tokens = rec.soft_embedder(users).detach()
    assert not torch.allclose(tokens[0], tokens[1]) and not torch.allclose(tokens[1], tokens[2])
    assert rec.domain.tables.users.weight[1:4].abs().sum() > 0


def test_every_profile_runs_several_rounds_and_round_0_trains_on_the_llm_methods_windows(smoke):
    """Issue 21: BDLM's LLM trained on 8 windows (cpu) against 32 for the other LLM methods, in one round."""
    for profile in ("smoke", "cpu", "gpu"):
        assert config.resolve(profile)["BDLM_ROUNDS"] >= 2, profile
    cfg, protocol = smoke
    run_method("sasrec", cfg, protocol)
    cfg = config.override(cfg, BDLM_ROUND_SAMPLES=4, BDLM_ROUNDS=2)
    run = run_method("bdlm", cfg, protocol)
    rec = run.recommender
    assert run.extra["sft_samples"] == cfg["LLM_TRAIN_SAMPLES"] * cfg["LLM_EPOCHS"] == 8
    assert run.extra["round_sft_samples"] == 4
    whole, rounds = rec.training_view(), rec.round_view()
    key = lambda v: {(int(u), int(p)): list(c) for u, p, c in zip(v["user_id"], v["position"], v["candidates"])}
    assert len(rounds) == 4 and key(rounds).items() <= key(whole).items()  # nested: round 0's windows, candidates
    every = bdlm_method.BDLM(config.override(cfg, BDLM_ROUND_SAMPLES=None), protocol)
    assert key(every.round_view()) == key(whole)  # None: all of round 0's windows


def test_the_frozen_arm_with_mf_skips_a_domain_phase_that_has_nothing_to_train(smoke, capsys):
    """MF has no network beside the tables: with the tables frozen its phase had an empty optimizer (a crash)."""
    cfg, protocol = smoke
    run = run_method("bdlm", config.override(cfg, DOMAIN_MODEL="mf", BDLM_SHARING="frozen", BDLM_ROUNDS=1), protocol,
                     run_name="bdlm-frozen")
    rec = run.recommender
    assert "domain phase skipped" in capsys.readouterr().out
    assert all(torch.equal(v, rec.states[0]["domain"][k]) for k, v in rec.domain.state_dict().items())
    assert run.extra["rounds"][1]["domain_loss_ce"] is None
