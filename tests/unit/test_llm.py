"""LLM machinery on the tiny model: loading, prompts and augmentation, prefix-shared scoring, TRL + LoRA training."""
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import TrainerCallback

from workbench import config
from workbench.llm import scoring, sft
from workbench.data import load_dataset
from workbench.llm.loading import ModelError, ensure_chat_template, load_llm
from workbench.methods.mkv import prompts

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


@pytest.fixture(scope="module")
def data():
    return load_dataset("ml-100k", FIXTURES / "ml-100k")


@pytest.fixture(scope="module")
def catalog(data):
    return prompts.Catalog(data.users, data.items)


@pytest.fixture(scope="module")
def tiny(data):
    texts = list(data.items["title"]) + [prompts.SYSTEM, "User: Watched Candidates age gender occupation zip"] * 3
    torch.set_num_threads(1)
    return load_llm("tiny", tiny_texts=texts, seed=0)


def _cfg(**kw):
    return config.resolve("smoke", **kw)


def test_tiny_model_is_small_and_has_a_chat_template(tiny):
    model, tok = tiny
    assert sum(p.numel() for p in model.parameters()) < 2_000_000
    text = prompts.prompt_text(tok, prompts.render(prompts.Catalog(*_users_items()), 1, [2, 3], [4, 5]))
    assert text.startswith("<|im_start|>system") and text.endswith("<|im_start|>assistant\n")


def _users_items():
    d = load_dataset("ml-100k", FIXTURES / "ml-100k")
    return d.users, d.items


def test_unknown_model_and_missing_path_list_the_accepted_names():
    with pytest.raises(ModelError, match="smollm2-135m, tiny"):
        load_llm("/no/such/model")
    with pytest.raises(ModelError, match="cannot load model 'no-such-model-xyz'.*smollm2-135m, tiny"):
        load_llm("no-such-model-xyz")  # HF_HUB_OFFLINE=1 in tests: fails fast
    with pytest.raises(ModelError, match="tiny_texts"):
        load_llm("tiny")


def test_tokenizer_without_chat_template_falls_back(tiny, capsys):
    _, tok = tiny
    saved, tok.chat_template = tok.chat_template, None
    try:
        assert ensure_chat_template(tok) is True
        assert "no chat template" in capsys.readouterr().out
        assert prompts.prompt_text(tok, [{"role": "user", "content": "hi"}]).endswith("Assistant: ")
    finally:
        tok.chat_template = saved


def test_prompt_and_completion_tokenise_as_trl_trains_them(tiny, catalog):
    _, tok = tiny
    prompt = prompts.prompt_text(tok, prompts.render(catalog, 1, [2, 3, 5], [4, 6, 7]))
    answer = prompts.completion_text(catalog, 4)
    whole = tok(prompt + answer + tok.eos_token, add_special_tokens=False)["input_ids"]
    assert whole == tok(prompt, add_special_tokens=False)["input_ids"] + scoring.completion_ids(tok, [answer])[0]


def test_prefix_shared_scoring_equals_naive_scoring(tiny, catalog):
    model, tok = tiny
    prompt = prompts.prompt_text(tok, prompts.render(catalog, 2, [1, 2, 3], list(range(1, 13))))
    titles = [catalog.title(i) for i in range(1, 13)]
    for reduce in ("sum", "mean"):
        shared = scoring.score_prefix_shared(model, tok, prompt, titles, reduce)
        naive = scoring.score_naive(model, tok, prompt, titles, reduce)
        assert np.abs(shared - naive).max() < 1e-4
        assert (np.argsort(-shared, kind="stable") == np.argsort(-naive, kind="stable")).all()
    assert not np.allclose(scoring.score_prefix_shared(model, tok, prompt, titles, "sum"),
                           scoring.score_prefix_shared(model, tok, prompt, titles, "mean"))


def test_empty_titles_are_refused(tiny, data):
    _, tok = tiny
    items = data.items.copy()
    items.loc[0, "title"] = " "
    with pytest.raises(prompts.PromptError, match="empty title"):
        prompts.Catalog(data.users, items)
    with pytest.raises(ValueError, match="empty completion"):
        scoring.completion_ids(tok, [""])


def test_augmentation_is_seeded_and_never_masks_the_title(tiny, catalog):
    _, tok = tiny
    view = pd.DataFrame({"user_id": [1, 2], "history": [[2, 3, 5], [1, 4]], "target": [6, 7],
                         "candidates": [[6, 8, 9, 10], [7, 11, 12, 3]]})
    aug = prompts.Augment(shuffle_candidates=True, shuffle_keys=True, mask_p=0.5)
    a = prompts.build_examples(catalog, view, tok, 4096, aug, seed=1, epoch=0)
    b = prompts.build_examples(catalog, view, tok, 4096, aug, seed=1, epoch=0)
    c = prompts.build_examples(catalog, view, tok, 4096, aug, seed=1, epoch=1)
    fixed = prompts.build_examples(catalog, view, tok, 4096)
    assert a.equals(b) and not a["prompt"].equals(c["prompt"])
    assert fixed.equals(prompts.build_examples(catalog, view, tok, 4096))
    rng = np.random.default_rng(0)
    for _ in range(50):
        assert "title: " in prompts.record(catalog.items[6], prompts.ITEM_KEYS, prompts.Augment(mask_p=0.99), rng)
    shuffled = {tuple(prompts.record(catalog.items[6], prompts.ITEM_KEYS, prompts.Augment(shuffle_keys=True), rng).split("; "))
                for _ in range(30)}
    assert len(shuffled) > 1 and all(len(s) == 3 for s in shuffled)


def test_overlong_prompts_lose_the_oldest_history_never_candidates(tiny, catalog):
    _, tok = tiny
    full, cut = prompts.fit_prompt(tok, catalog, 1, [2, 3, 5, 8], [4, 6], 4096)
    assert cut == 0
    budget = len(tok(prompts.prompt_text(tok, prompts.render(catalog, 1, [5, 8], [4, 6])), add_special_tokens=False)["input_ids"])
    short, cut = prompts.fit_prompt(tok, catalog, 1, [2, 3, 5, 8], [4, 6], budget)
    assert cut == 2 and catalog.title(4) in short and catalog.title(6) in short and catalog.title(2) not in short
    with pytest.raises(prompts.PromptError, match="MAX_PROMPT_TOKENS=10"):
        prompts.fit_prompt(tok, catalog, 1, [2, 3], [4, 6], 10)


def test_generate_then_match():
    titles = ["The Matrix", "Heat", "Toy Story"]
    assert scoring.match_title('"the matrix"', titles) == 0
    assert scoring.match_title("Toy Story.\nBecause ...", titles) == 2
    assert scoring.match_title("Something else entirely", titles) is None


def _sft_rows(catalog, tok, n=8):
    view = pd.DataFrame({"user_id": [1] * n, "history": [[2, 3]] * n, "target": [6] * n,
                         "candidates": [[6, 8, 9, 10]] * n})
    return prompts.build_examples(catalog, view, tok, 4096)


def test_lora_training_lowers_a_finite_loss_and_only_moves_the_adapter(data, catalog, tmp_path, capsys):
    texts = list(data.items["title"]) + [prompts.SYSTEM, "User: Watched Candidates age gender occupation zip"] * 3
    model, tok = load_llm("tiny", tiny_texts=texts, seed=0)
    base_before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = _cfg(LLM_BATCH_SIZE=4, GRAD_ACCUM=1, LLM_LEARNING_RATE=5e-3, SAVE_STEPS=100, WARMUP_STEPS=0)
    rows = pd.concat([_sft_rows(catalog, tok)] * 4, ignore_index=True)  # 32 rows, 8 steps on one repeated example
    tuned, history = sft.train_sft(model, tok, rows, cfg, tmp_path / "run")
    assert np.isfinite(history["loss"]).all() and len(history) == 8
    assert history["loss"].tail(2).mean() < history["loss"].head(2).mean()
    assert "LoRA SFT: 8 of 8 step(s) done, loss" in capsys.readouterr().out  # one text line says how it ended
    lora = {k: v for k, v in tuned.named_parameters() if "lora_" in k}
    assert lora and any("lora_B" in k and v.abs().sum() > 0 for k, v in lora.items())  # B starts at zero
    base_after = {k.replace("base_model.model.", "").replace(".base_layer", ""): v
                  for k, v in tuned.state_dict().items() if "lora_" not in k}
    assert set(base_before) == set(base_after)
    assert all(torch.equal(base_before[k], base_after[k]) for k in base_before)
    assert (tmp_path / "run" / "adapter" / "adapter_config.json").exists()


def test_a_run_that_never_leaves_the_warm_up_is_refused_instead_of_training_nothing(data, catalog, tmp_path):
    """One optimisation step under any warm-up runs at learning rate 0: the ablations' 8-window arms trained nothing."""
    texts = list(data.items["title"]) + [prompts.SYSTEM, "User: Watched Candidates age gender occupation zip"] * 3
    model, tok = load_llm("tiny", tiny_texts=texts, seed=0)
    rows = _sft_rows(catalog, tok)  # 8 rows = one step of 4 x 2
    with pytest.raises(ValueError, match="1 optimisation step\\(s\\), not more than WARMUP_STEPS=1"):
        sft.train_sft(model, tok, rows, _cfg(LLM_BATCH_SIZE=4, GRAD_ACCUM=2, WARMUP_STEPS=1), tmp_path / "one")
    assert sft.check_schedule(8, _cfg(LLM_BATCH_SIZE=4, GRAD_ACCUM=2, WARMUP_STEPS=0)) == 1
    assert sft.check_schedule(9, _cfg(LLM_BATCH_SIZE=4, GRAD_ACCUM=2, WARMUP_STEPS=1)) == 2
    assert not any("lora_" in k for k, _ in model.named_parameters())  # refused before LoRA touched the model
    tuned, history = sft.train_sft(model, tok, rows, _cfg(LLM_BATCH_SIZE=4, GRAD_ACCUM=2, WARMUP_STEPS=0,
                                                             LLM_LEARNING_RATE=5e-3), tmp_path / "zero")
    assert history["learning_rate"].iloc[0] > 0
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in tuned.named_parameters())


class _Interrupt(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 3:
            raise KeyboardInterrupt


def test_interrupted_training_resumes_from_the_last_complete_checkpoint(data, catalog, tmp_path, capsys):
    texts = list(data.items["title"]) + [prompts.SYSTEM] * 3
    cfg = _cfg(LLM_BATCH_SIZE=2, GRAD_ACCUM=1, SAVE_STEPS=2, WARMUP_STEPS=0)
    model, tok = load_llm("tiny", tiny_texts=texts, seed=0)
    rows = _sft_rows(catalog, tok, n=10)  # 5 steps
    with pytest.raises(KeyboardInterrupt):
        sft.train_sft(model, tok, rows, cfg, tmp_path / "run", callbacks=[_Interrupt()])
    assert sft.last_complete_checkpoint(tmp_path / "run").endswith("checkpoint-2")
    (tmp_path / "run" / "checkpoint-9").mkdir()  # a half-written checkpoint (no trainer_state.json) is skipped
    capsys.readouterr()
    model, tok = load_llm("tiny", tiny_texts=texts, seed=0)
    _, history = sft.train_sft(model, tok, rows, cfg, tmp_path / "run")
    out = capsys.readouterr().out
    assert "resuming from" in out and "checkpoint-2" in out
    assert history["step"].max() == 5
    assert (tmp_path / "run" / "adapter" / "adapter_config.json").exists()


def test_nan_loss_stops_with_the_step():
    class State:
        global_step = 7

    class Args:
        learning_rate = 1e-3

    with pytest.raises(sft.NanLossError, match="at step 7"):
        sft.StopOnNanLoss().on_log(Args(), State(), None, logs={"loss": math.nan})
    sft.StopOnNanLoss().on_log(Args(), State(), None, logs={"loss": 1.0})


def test_checkpoint_folder_depends_on_the_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CHECKPOINTS", str(tmp_path))
    a, b = _cfg(), _cfg(LORA_R=4)
    assert sft.checkpoint_dir("run", a) == sft.checkpoint_dir("run", _cfg())
    assert sft.checkpoint_dir("run", a) != sft.checkpoint_dir("run", b)


def test_padding_free_sft_gives_the_padded_loss_and_overlong_rows_are_refused(data, catalog, tmp_path):
    texts = list(data.items["title"]) + [prompts.SYSTEM, "User: Watched Candidates age gender occupation zip"] * 3
    view = pd.DataFrame({"user_id": [1, 2, 3, 4, 5, 1, 2, 3], "history": [list(range(1, 2 + k)) for k in range(8)],
                         "target": [6, 7, 8, 9, 10, 11, 12, 6], "candidates": [[6, 7, 8, 9, 10, 11, 12]] * 8})
    losses = {}
    for mode in ("padded", "padding_free"):  # prompts of 8 lengths: padded batches carry padding, padding-free none
        model, tok = load_llm("tiny", tiny_texts=texts, seed=0)
        cfg = _cfg(LLM_BATCH_SIZE=4, GRAD_ACCUM=1, LLM_LEARNING_RATE=5e-3, SAVE_STEPS=100, WARMUP_STEPS=0,
                   LORA_DROPOUT=0.0, SFT_PACKING=mode)  # no dropout: its masks depend on the batch's shape
        rows = prompts.build_examples(catalog, view, tok, 4096)
        losses[mode] = sft.train_sft(model, tok, rows, cfg, tmp_path / mode)[1]["loss"].to_numpy()
    assert len(losses["padded"]) == 2 and np.isfinite(losses["padded"]).all()
    assert np.abs(losses["padded"] - losses["padding_free"]).max() < 1e-4
    cfg = _cfg(MAX_PROMPT_TOKENS=16, MAX_COMPLETION_TOKENS=4)
    with pytest.raises(ValueError, match=r"8 SFT row\(s\) exceed MAX_PROMPT_TOKENS \+ MAX_COMPLETION_TOKENS = 20"):
        sft.train_sft(model, tok, rows, cfg, tmp_path / "long")
