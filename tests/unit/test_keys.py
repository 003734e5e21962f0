"""Keys on everything a result depends on (issue 20): checkpoints follow the base weights, the device kind and the
uncommitted change itself; run ids follow the base weights and the runs a method reads."""
import types

import pytest
import torch

from workbench import config, process
from workbench.data.protocol import load_protocol
from workbench.llm import loading, sft
from workbench.llm.recommender import LLMRecommender
from workbench.llm.tiny import build_tiny
from workbench.methods.pipeline import method_run_id

TEXTS = ["The Matrix (1999)", "Toy Story (1995)", "Heat (1995)"] * 4


@pytest.fixture(scope="module")
def smoke():
    cfg = config.resolve("smoke")
    return cfg, load_protocol(cfg)


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("WORKBENCH_CHECKPOINTS", str(tmp_path / "checkpoints"))
    return tmp_path


def _save(folder, seed):
    model, tok = build_tiny(TEXTS, hidden=32, vocab_size=300, seed=seed)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)


def _folder_of(cfg, dtype=torch.float32, device="cpu"):
    """The checkpoint folder an LLM method with these parameters would train in (no model is built)."""
    rec = types.SimpleNamespace(cfg=cfg, model=types.SimpleNamespace(dtype=dtype), device=device, protocol=None)
    rec.base_key = lambda: LLMRecommender.base_key(rec)
    return LLMRecommender.checkpoints(rec, "mkv", {"method": "mkv", "params": 1})


def test_checkpoints_and_run_ids_follow_the_base_weights_not_the_model_name(isolated, smoke):
    """Replacing a model folder's weights resumed the old adapter on the new model (ranks differed from a fresh run)."""
    cfg, protocol = smoke
    folder = isolated / "model"
    _save(folder, seed=0)
    cfg = config.override(cfg, MODEL=str(folder))
    before = _folder_of(cfg), method_run_id("mkv", cfg, protocol)
    assert (_folder_of(cfg), method_run_id("mkv", cfg, protocol)) == before
    _save(folder, seed=1)  # other weights, same path
    after = _folder_of(cfg), method_run_id("mkv", cfg, protocol)
    assert after[0] != before[0] and after[1] != before[1]


def test_checkpoints_follow_the_dtype_and_device_kind(isolated, smoke):
    cfg, _ = smoke
    assert _folder_of(cfg) != _folder_of(cfg, dtype=torch.bfloat16)
    assert _folder_of(cfg) != _folder_of(cfg, device="cuda:0")
    assert _folder_of(cfg, device="cuda:0") == _folder_of(cfg, device="cuda:1")


def test_two_different_uncommitted_edits_never_share_a_checkpoint(isolated, smoke, monkeypatch):
    """The key held the commit plus '+dirty', so two different edits of a prompt shared one checkpoint."""
    cfg, _ = smoke
    folders = set()
    for commit in ("a" * 40, "a" * 40 + "+dirty-11111111", "a" * 40 + "+dirty-22222222"):
        monkeypatch.setattr(process, "git_commit", lambda root=None, c=commit: c)
        folders.add(sft.checkpoint_dir("mkv", {"x": 1}))
    assert len(folders) == 3


@pytest.mark.parametrize("method", ["rsllm", "bdlm"])
def test_a_method_that_reads_a_saved_run_has_that_run_in_its_id(smoke, method):
    """RSLLM and BDLM ids ignored the SASRec (domain) run they read: a run on a 32-dim SASRec replaced the default."""
    cfg, protocol = smoke
    base = method_run_id(method, cfg, protocol)
    assert method_run_id(method, config.override(cfg, EMBED_DIM=32), protocol) != base
    assert method_run_id(method, config.override(cfg, ID_MODEL_SEED=1), protocol) != base
    assert method_run_id(method, config.override(cfg, EPOCHS=3), protocol) != base  # the SASRec's training too
    assert method_run_id("mkv", config.override(cfg, EMBED_DIM=32), protocol) == method_run_id("mkv", cfg, protocol)


def test_the_bdlm_domain_model_kind_is_in_its_id(smoke):
    cfg, protocol = smoke
    assert method_run_id("bdlm", config.override(cfg, DOMAIN_MODEL="sasrec"), protocol) != method_run_id("bdlm", cfg, protocol)


def test_model_identity_of_an_unknown_path_is_a_one_line_error(isolated):
    with pytest.raises(loading.ModelError, match="does not exist"):
        loading.model_identity(str(isolated / "no-such-model"))


def test_an_llm_on_a_data_folder_is_keyed_by_its_item_text(tmp_path):
    """Second battery: two DATA_PATH folders with the same interactions and other titles shared run ids and
    checkpoints (an adapter trained on the first titles was reused for the second)."""
    import shutil
    from pathlib import Path
    fixture = Path(__file__).resolve().parents[1] / "fixtures" / "ml-100k"
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(fixture, a)
    shutil.copytree(fixture, b)
    lines = (b / "u.item").read_text(encoding="latin-1").splitlines()
    titles = [line.split("|")[1] for line in lines]
    swapped = [line.replace(f"|{t}|", f"|{titles[(i + 1) % len(titles)]}|", 1) for i, (line, t) in
               enumerate(zip(lines, titles))]
    (b / "u.item").write_text("\n".join(swapped) + "\n", encoding="latin-1")
    ids = {}
    for folder in (a, b):
        cfg = config.resolve("smoke", DATA_PATH=str(folder), MIN_INTERACTIONS=3, N_NEGATIVES=3)
        protocol = load_protocol(cfg)
        ids[folder] = (method_run_id("mkv", cfg, protocol), method_run_id("sasrec", cfg, protocol),
                       protocol.identity())
    assert ids[a][2] == ids[b][2]  # the same interactions: the same candidates and baseline runs
    assert ids[a][1] == ids[b][1]
    assert ids[a][0] != ids[b][0]  # other titles: another LLM run


def test_bdlm_rounds_are_keyed_by_the_title_score_reduction(smoke):
    """Second battery: rounds trained with SCORE_REDUCE sum were reloaded for mean (the KL terms score with it)."""
    from workbench.methods.bdlm.method import BDLM
    cfg, protocol = smoke
    keys = [BDLM(config.override(cfg, SCORE_REDUCE=r), protocol).checkpoint_key() for r in ("sum", "mean")]
    assert keys[0] != keys[1]
