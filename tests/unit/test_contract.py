"""One contract over the registry (as RecBole pushes every model through one pipeline): every registered method goes
fit -> rank -> save -> load -> the same ranks on the smoke profile; constructors do no work; a fifth method is one
folder's worth of declarations and passes the same pipeline and report.
Reproduce: `python -m pytest tests/unit/test_contract.py`.
"""
import pandas as pd
import pytest
import torch

from workbench import config, process, results
from workbench.config import Param
from workbench.data.protocol import load_protocol
from workbench.evaluation import comparison
from workbench.methods.pipeline import load_recommender, run_ablation, run_method
from workbench.recommender import REGISTRY, Ablation, Entry, MethodSpec, Recommender, get_method, implements, register
from small_llm import smoke_setting



@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """A small smoke setting and one saved SASRec run (RSLLM's ID table, BDLM's domain model) in its own folders."""
    yield from smoke_setting(tmp_path_factory, "contract")


@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_registered_method_fits_ranks_saves_and_loads_back_to_the_same_ranks(smoke, name):
    cfg, protocol = smoke
    run = run_method(name, cfg, protocol)
    saved = results.load_run(run.run_id)
    assert saved.ranks.equals(run.ranks[["user_id", "rank"]].sort_values("user_id", ignore_index=True))
    loaded = load_recommender(saved)
    view = loaded.eval_view()
    again = loaded.rank(view).sort_values("user_id", ignore_index=True)[["user_id", "rank"]]
    assert again.equals(saved.ranks), f"{name}: a loaded run ranks differently"
    assert {"fit_seconds", "rank_seconds", "diagnose_seconds"} <= set(saved.record)


@pytest.mark.parametrize("name", [n for n in REGISTRY if n not in ("popularity", "sasrec", "gru4rec", "mf")])
def test_building_an_llm_method_trains_nothing_reads_no_run_and_leaves_the_process_alone(smoke, name, tmp_path,
                                                                                          monkeypatch):
    """Constructors build parts: no other run is read (the results folder is empty), no thread count is changed, no
    checkpoint written; fit does the work."""
    cfg, protocol = smoke
    if name == "bdlm":  # its default domain model (MF) is trained on first use: a saved SASRec run is read instead
        cfg = config.override(cfg, DOMAIN_MODEL="sasrec")
    monkeypatch.setenv(results.RESULTS_ENV, str(tmp_path / "results"))
    monkeypatch.setenv("WORKBENCH_CHECKPOINTS", str(tmp_path / "checkpoints"))
    torch.set_num_threads(2)
    rec = get_method(name)(cfg, protocol)
    assert torch.get_num_threads() == 2
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "results").exists()
    if name in ("rsllm", "bdlm"):
        with pytest.raises(FileNotFoundError, match="02_baselines"):  # fit reads the saved SASRec run, here absent
            rec.fit()
    process.set_threads(1)


# --- a fifth method, declared the way a folder under workbench/methods/ declares one -----------------------------
@pytest.fixture
def fifth_method(smoke):
    """A 'shuffle' recommender registered with its parameter, ablation and comparison row; removed afterwards."""
    params = {"SHUFFLE_SALT": Param(0, "int", "example: salt of the random candidate order", low=0),
              "SHUFFLE_ARMS": Param(["a", "b"], "list_str", "example: ablation arms", choices=("a", "b"))}
    config.register(params)
    spec = register(MethodSpec("shuffle", "Shuffle", __name__, "02_baselines", entries=(Entry("Shuffle"),),
                               ablation=Ablation("SHUFFLE_ARMS", lambda arm: {"SHUFFLE_SALT": {"a": 0, "b": 1}[arm]},
                                                 own_training=False, reference="a")))

    @implements("shuffle")
    class Shuffle(Recommender):
        """Ranks candidates in a seeded random order (SHUFFLE_SALT): the smallest method on the contract."""
        result_params = ("SHUFFLE_SALT",)

        def fit(self, callbacks=()):
            return pd.DataFrame()

        def rank(self, view, scorer=None):
            gen = torch.Generator().manual_seed(self.cfg["SEED"] * 1000 + self.cfg["SHUFFLE_SALT"])
            n = len(view["candidates"].iat[0])
            return pd.DataFrame({"user_id": view["user_id"].to_numpy(),
                                 "rank": [int(torch.randperm(n, generator=gen)[0]) + 1 for _ in range(len(view))]})

        @classmethod
        def load(cls, folder, record, device="cpu"):
            return cls(record["parameters"], load_protocol(record["parameters"]), device)

    try:
        yield spec
    finally:
        REGISTRY.pop("shuffle")
        for key in params:
            config.PARAMS.pop(key)


def test_a_fifth_method_declared_in_one_place_runs_through_the_pipeline_ablation_and_report(smoke, fifth_method):
    cfg, protocol = smoke
    cfg = {**cfg, **{k: config.PARAMS[k].default for k in ("SHUFFLE_SALT", "SHUFFLE_ARMS")}}
    run = run_method("shuffle", cfg, protocol)
    assert load_recommender(results.load_run(run.run_id)).rank(protocol.test).sort_values(
        "user_id", ignore_index=True).equals(results.load_run(run.run_id).ranks)
    grid = run_ablation("shuffle", cfg, protocol)
    grid.save_summary(grid.table(100, 0))
    summary, where = comparison.ablation_summary("shuffle", cfg, protocol)
    assert list(summary.index) == ["a", "b"] and where.startswith("shuffle-ablation-smoke-")
    found = comparison.collect(cfg, protocol)
    assert "Shuffle" in found.ranks and "shuffle" in comparison.ablations()


def test_generation_is_timed_as_diagnosis_and_the_report_runs_no_inference(smoke, monkeypatch):
    """Generate-then-match ran inside report(), outside every timed step; now diagnose() runs it, timed."""
    cfg, protocol = smoke
    run = run_method("mkv", config.override(cfg, GEN_EVAL_USERS=2), protocol)
    assert run.extra["generate_then_match"]["users"] == 2 and run.extra["diagnose_seconds"] > 0
    rec = run.recommender
    monkeypatch.setattr(rec, "rank", lambda *a, **k: pytest.fail("report() ran the model"))
    assert rec.report(rec.eval_view())["generate_then_match"] == run.extra["generate_then_match"]
