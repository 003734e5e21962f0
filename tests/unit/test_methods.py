"""The method contract: registry, run ids, whole saved runs with weights, grids, and mismatches refused."""
import pandas as pd
import pytest
import torch

from workbench import config, results
from workbench.data.protocol import load_protocol
from workbench.recommender import REGISTRY, get_method
from workbench.methods.pipeline import load_recommender, method_run_id, ranks_on, run_grid, run_method
from workbench.methods.pipeline import check_ranks


@pytest.fixture(scope="module")
def smoke():
    torch.set_num_threads(1)
    cfg = config.resolve("smoke", EPOCHS=1)
    return cfg, load_protocol(cfg)


@pytest.fixture(autouse=True)
def _isolated(run_folders):
    """Every test here writes its runs and checkpoints to its own temporary folders."""


def test_registry_knows_every_method():
    assert {"popularity", "sasrec", "gru4rec", "mkv"} <= set(REGISTRY)
    with pytest.raises(KeyError, match="unknown method 'bert4rec'"):
        get_method("bert4rec")


def test_run_ids_change_with_what_changes_results_only(smoke):
    cfg, protocol = smoke
    base = method_run_id("sasrec", cfg, protocol)
    assert method_run_id("sasrec", config.override(cfg, N_BOOTSTRAP=500), protocol) == base
    assert method_run_id("sasrec", config.override(cfg, SEED=1), protocol) != base
    assert method_run_id("sasrec", config.override(cfg, EMBED_DIM=32), protocol) != base
    other = load_protocol(config.override(cfg, HISTORY_LEN=3))  # the default run is no longer overwritten
    assert method_run_id("sasrec", cfg, other) != base
    assert other.identity() != protocol.identity()
    assert load_protocol(config.override(cfg, SEED=1)).identity() == protocol.identity()  # candidates stay put


def test_a_saved_sasrec_run_gives_back_its_model_and_item_embeddings(smoke):
    cfg, protocol = smoke
    run = run_method("sasrec", cfg, protocol)
    saved = results.load_run(run.run_id)
    assert (saved.folder / "weights.pt").exists() and saved.record["method"] == "sasrec"
    loaded = load_recommender(saved)
    table = loaded.item_embeddings
    assert torch.equal(table, run.recommender.model.items.weight.detach())
    reloaded = loaded.rank(protocol.test).sort_values("user_id", ignore_index=True)
    assert reloaded.equals(saved.ranks)


def test_a_run_folder_without_its_weights_says_how_to_get_them_back(smoke):
    """Weights stay out of git: in a fresh clone the committed SASRec run has ranks but no weights.pt."""
    cfg, protocol = smoke
    run = run_method("sasrec", cfg, protocol)
    (run.record_path.parent / "weights.pt").unlink()
    with pytest.raises(FileNotFoundError, match="weights are not kept in git: re-run notebook 02_baselines"):
        load_recommender(results.load_run(run.run_id))


def test_popularity_through_the_contract_equals_the_plain_model(smoke):
    from workbench.methods.baselines import models
    cfg, protocol = smoke
    run = run_method("popularity", cfg, protocol)
    plain = models.sampled_ranks(models.Popularity(protocol.n_items).fit(protocol.split["train"]), protocol.test)
    assert run.ranks.sort_values("user_id", ignore_index=True).equals(plain.sort_values("user_id", ignore_index=True))


def test_ranks_of_other_users_are_refused(smoke):
    _, protocol = smoke
    view = protocol.test
    good = pd.DataFrame({"user_id": view["user_id"], "rank": 1})
    assert check_ranks(good, view, "x") is good
    with pytest.raises(ValueError, match="different ones"):
        check_ranks(good.iloc[1:], view, "x")
    with pytest.raises(ValueError, match="outside 1..20"):
        check_ranks(good.assign(rank=21), view, "x")
    with pytest.raises(ValueError, match="no rank in this run"):
        ranks_on(good.iloc[1:], list(view["user_id"]))


def test_a_grid_runs_every_arm_and_seed_on_the_same_users(smoke):
    cfg, protocol = smoke
    grid = run_grid("gru4rec", cfg, protocol, {"d8": {"EMBED_DIM": 8}, "d16": {"EMBED_DIM": 16}}, [0, 1])
    assert set(grid.ranks) == {"d8", "d16"} and grid.ranks["d8"].shape == (cfg["MAX_USERS"], 2)
    assert len({run.run_id for run in grid.runs.values()}) == 4
    assert set(grid.table(100, 0)["method"]) == {"d8", "d16"}
    assert "d16 - d8" in grid.paired("d8", 100, 0).index.get_level_values(0)


def test_llm_checkpoints_are_keyed_by_training_parameters_only(smoke):
    cfg, protocol = smoke
    mkv = get_method("mkv")
    key = lambda c: mkv(c, protocol).checkpoint_key()  # noqa: E731
    base = key(cfg)
    for same in ({"N_BOOTSTRAP": 200}, {"GEN_EVAL_USERS": 1}, {"LLM_EVAL_USERS": 3}):
        assert key(config.override(cfg, **same)) == base, same
    for other in ({"SEED": 1}, {"LORA_R": 4}, {"AUGMENT": ["mask"]}):
        assert key(config.override(cfg, **other)) != base, other
