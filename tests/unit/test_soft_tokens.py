"""Soft tokens on the tiny model: one `splice` code path for prefix-shared / naive scoring, generation and training."""

import numpy as np
import pandas as pd
import pytest
import torch

from workbench import config
from workbench.llm import scoring, softtokens, sft
from workbench.llm.loading import load_llm
from workbench.methods.mkv import prompts

HIDDEN = 64  # the tiny model's width
TITLES = [1, 2, 3, 4, 5, 6]


def _tiny(catalog):
    texts = [catalog.title(i) for i in catalog.items] + [prompts.SYSTEM, "User: Watched Candidates age gender zip"] * 3
    torch.set_num_threads(1)
    return load_llm("tiny", tiny_texts=texts, seed=0)


@pytest.fixture(scope="module")
def tiny(catalog):
    model, tok = _tiny(catalog)
    softtokens.add_soft_token(model, tok)
    return model, tok


def _prompt(tok, catalog, history, soft=True):
    """A chat prompt listing the history with a placeholder after each title (RSLLM's layout)."""
    tag = f" {softtokens.SOFT_TOKEN}" if soft else ""
    lines = ["Watched:"] + [f"- {catalog.title(i)}{tag}" for i in history] + ["Which movie next?"]
    messages = [{"role": "system", "content": prompts.SYSTEM}, {"role": "user", "content": "\n".join(lines)}]
    return prompts.prompt_text(tok, messages)


def test_adding_the_soft_token_keeps_other_tokenisations(catalog):
    model, tok = _tiny(catalog)
    text = _prompt(tok, catalog, [1, 2, 3], soft=False)
    before, rows = tok(text, add_special_tokens=False)["input_ids"], model.get_input_embeddings().num_embeddings
    token_id = softtokens.add_soft_token(model, tok)
    assert tok(text, add_special_tokens=False)["input_ids"] == before
    assert tok(softtokens.SOFT_TOKEN, add_special_tokens=False)["input_ids"] == [token_id]
    assert model.get_input_embeddings().num_embeddings == rows + 1 == model.get_output_embeddings().weight.shape[0]
    assert softtokens.add_soft_token(model, tok) == token_id and len(tok) == rows + 1  # idempotent: no second growth


def test_without_soft_tokens_every_scorer_reads_plain_ids(tiny, catalog):
    model, tok = tiny
    prompt, titles = _prompt(tok, catalog, [7, 8, 9], soft=False), [catalog.title(i) for i in TITLES]
    p_ids = scoring.token_ids(tok, prompt)
    direct = []
    with torch.no_grad():  # the model called with input_ids directly
        for ids in scoring.completion_ids(tok, titles):
            logp = model(input_ids=torch.tensor([p_ids + ids])).logits[0, len(p_ids) - 1:-1].float().log_softmax(-1)
            direct.append(logp[torch.arange(len(ids)), ids].sum().item())
    none = torch.empty(0, HIDDEN)  # no placeholders: splice returns the plain embeddings
    assert np.array_equal(scoring.score_naive(model, tok, prompt, titles), np.asarray(direct))
    assert np.array_equal(scoring.score_naive(model, tok, prompt, titles, soft=none), np.asarray(direct))
    shared = scoring.score_prefix_shared(model, tok, prompt, titles)
    assert np.array_equal(scoring.score_prefix_shared(model, tok, prompt, titles, soft=none), shared)
    assert np.abs(shared - np.asarray(direct)).max() < 1e-4
    ids = torch.tensor([p_ids])
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False,
                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    expected = tok.decode(out[0, len(p_ids):], skip_special_tokens=True).strip()
    assert scoring.generate_answer(model, tok, prompt, 8) == expected == scoring.generate_answer(model, tok, prompt, 8, none)


def test_soft_tokens_change_scores_and_prefix_sharing_still_equals_naive(tiny, catalog):
    model, tok = tiny
    prompt, titles = _prompt(tok, catalog, [7, 8, 9]), [catalog.title(i) for i in TITLES]
    a = torch.randn(3, HIDDEN, generator=torch.Generator().manual_seed(0))
    b = a.clone()
    b[1] += 1.0
    for reduce in ("sum", "mean"):
        shared = scoring.score_prefix_shared(model, tok, prompt, titles, reduce, soft=a)
        assert np.abs(shared - scoring.score_naive(model, tok, prompt, titles, reduce, soft=a)).max() < 1e-4
    assert not np.allclose(scoring.score_prefix_shared(model, tok, prompt, titles, soft=a),
                           scoring.score_prefix_shared(model, tok, prompt, titles, soft=b))
    assert isinstance(scoring.generate_answer(model, tok, prompt, 8, soft=a), str)


def test_splice_refuses_a_count_or_width_mismatch(tiny, catalog):
    model, tok = tiny
    ids = torch.tensor([scoring.token_ids(tok, _prompt(tok, catalog, [7, 8, 9]))])
    with pytest.raises(ValueError, match="prompt has 3 soft-token placeholders but 2 vectors were given"):
        softtokens.splice(model, ids, torch.zeros(2, HIDDEN))
    with pytest.raises(ValueError, match="width 32 but the model's hidden size is 64"):
        softtokens.splice(model, ids, torch.zeros(3, 32))
    with pytest.raises(ValueError, match="row 0: prompt has 1 soft-token placeholders but 2 soft_ids"):
        softtokens.check_soft_ids(pd.DataFrame({"prompt": [f"a {softtokens.SOFT_TOKEN}"], "soft_ids": [[1, 2]]}))
    with pytest.raises(ValueError, match="need a `soft_ids` column"):
        softtokens.check_soft_ids(pd.DataFrame({"prompt": ["a"]}))


def test_gradients_reach_the_soft_vectors(tiny, catalog):
    model, tok = tiny
    prompt = _prompt(tok, catalog, [7, 8, 9])
    vectors = torch.randn(3, HIDDEN, requires_grad=True)
    scoring.prefix_shared_logp(model, tok, prompt, [catalog.title(1), catalog.title(2)], soft=vectors)[0].backward()
    assert vectors.grad is not None and (vectors.grad.abs().sum(-1) > 0).all()


def _rows(tok, catalog, n=8):
    history = [[7, 8, 9], [10, 11]] * (n // 2)
    return pd.DataFrame({"prompt": [_prompt(tok, catalog, h) for h in history], "soft_ids": history,
                         "completion": [catalog.title(6)] * n})


def test_sft_trains_the_soft_embedder_with_the_adapter_and_restores_it(catalog, tmp_path):
    model, tok = _tiny(catalog)
    softtokens.add_soft_token(model, tok)
    torch.manual_seed(0)
    embedder = torch.nn.Embedding(20, HIDDEN)
    before = embedder.weight.detach().clone()
    cfg = config.resolve("smoke", LLM_BATCH_SIZE=4, GRAD_ACCUM=1, LLM_LEARNING_RATE=5e-3, SAVE_STEPS=2, WARMUP_STEPS=0)
    tuned, history = sft.train_sft(model, tok, _rows(tok, catalog), cfg, tmp_path / "run", soft_embedder=embedder)
    assert len(history) == 2 and np.isfinite(history["loss"]).all()
    assert not torch.equal(embedder.weight.detach(), before)
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in tuned.named_parameters())
    assert (tmp_path / "run" / "adapter" / softtokens.EMBEDDER_FILE).exists()
    assert (tmp_path / "run" / "checkpoint-2" / softtokens.EMBEDDER_FILE).exists()
    ranks = scoring.rank_examples(tuned, tok, _rows(tok, catalog, 2), pd.DataFrame(
        {"user_id": [1, 2], "target": [6, 6], "candidates": [[6, 1, 2]] * 2}), catalog, progress=False,
        soft_embedder=embedder)
    assert ranks["rank"].between(1, 3).all()
    fresh = torch.nn.Embedding(20, HIDDEN)  # the finished run is reused: its trained embedder is restored
    model, tok = _tiny(catalog)
    softtokens.add_soft_token(model, tok)
    sft.train_sft(model, tok, _rows(tok, catalog), cfg, tmp_path / "run", soft_embedder=fresh)
    assert torch.equal(fresh.weight, embedder.weight)
    with pytest.raises(TypeError, match="subclass workbench.llm.sft.SoftTokenSFTTrainer"):
        sft.train_sft(model, tok, _rows(tok, catalog), cfg, tmp_path / "x", soft_embedder=fresh,
                        trainer_cls=sft.SFTTrainer)


def test_padding_free_soft_token_training_matches_padded(catalog, tmp_path):
    """Rows of two prompt lengths: flattening a batch keeps each placeholder's vector on its own row's tokens."""
    results = {}
    for mode in ("padded", "padding_free"):
        model, tok = _tiny(catalog)
        softtokens.add_soft_token(model, tok)
        torch.manual_seed(0)
        embedder = torch.nn.Embedding(20, HIDDEN)
        cfg = config.resolve("smoke", LLM_BATCH_SIZE=4, GRAD_ACCUM=1, LLM_LEARNING_RATE=5e-3, SAVE_STEPS=100,
                             WARMUP_STEPS=0, LORA_DROPOUT=0.0, SFT_PACKING=mode)
        _, history = sft.train_sft(model, tok, _rows(tok, catalog), cfg, tmp_path / mode, soft_embedder=embedder)
        results[mode] = (history["loss"].to_numpy(), embedder.weight.detach().clone())
    assert np.abs(results["padded"][0] - results["padding_free"][0]).max() < 1e-4
    assert torch.allclose(results["padded"][1], results["padding_free"][1], atol=1e-5)
