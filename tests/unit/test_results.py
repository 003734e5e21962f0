"""Saved runs: written whole, never overwritten by a different run, checked on load."""
import json

import pandas as pd
import pytest

from workbench import config, results


@pytest.fixture
def tmp_results(tmp_path, monkeypatch):
    monkeypatch.setenv(results.RESULTS_ENV, str(tmp_path))
    return tmp_path


RANKS = pd.DataFrame({"user_id": [1, 2, 3, 4], "rank": [1, 3, 12, 2]})


def test_save_and_load_a_run(tmp_results):
    cfg = config.resolve("smoke")
    name = results.run_id("pop", cfg, {"a": 1})
    path = results.save_run(name, RANKS, cfg, "cpu", 1.5, extra={"method": "Pop"})
    record = json.loads(path.read_text())
    assert record["run"] == name and name.startswith("pop-smoke-seed0-") and record["metrics"]["HR@1"] == 0.25
    assert record["ci95"]["HR@1"][0] <= 0.25 <= record["ci95"]["HR@1"][1]
    for key in ("parameters", "profile", "seed", "git_commit", "versions", "device", "wall_time_s", "files_sha256",
                "record_sha256"):
        assert key in record
    assert "20 candidates" in record["protocol"]
    loaded = results.load_run(name)
    assert loaded.record["method"] == "Pop" and loaded.ranks.equals(RANKS)
    assert results.find_runs("pop-") == [name]


def test_runs_that_differ_get_different_names():
    cfg = config.resolve("smoke")
    assert results.run_id("sasrec", cfg, {"HISTORY_LEN": 10}) != results.run_id("sasrec", cfg, {"HISTORY_LEN": 3})
    assert results.run_id("sasrec", cfg, {"x": 1}) == results.run_id("sasrec", dict(cfg), {"x": 1})
    assert results.run_id("sasrec", config.override(cfg, SEED=1), {}) != results.run_id("sasrec", cfg, {})


def test_an_interrupted_save_leaves_the_previous_run_intact(tmp_results):
    cfg = config.resolve("smoke")
    results.save_run("run-a", RANKS, cfg, "cpu", 1.0)

    def crash(folder):
        (folder / "weights.pt").write_bytes(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        results.save_run("run-a", RANKS.assign(rank=[2, 2, 2, 2]), cfg, "cpu", 1.0, write_files=crash)
    assert results.load_run("run-a").ranks.equals(RANKS)  # the old run, whole
    assert not (tmp_results / "run-a" / "weights.pt").exists()
    assert [p.name for p in tmp_results.iterdir()] == ["run-a"]  # no half-written folder left behind


def test_ranks_that_do_not_match_their_metrics_are_refused(tmp_results):
    cfg = config.resolve("smoke")
    results.save_run("run-b", RANKS, cfg, "cpu", 1.0)
    RANKS.assign(rank=[5, 5, 5, 5]).to_parquet(tmp_results / "run-b" / "ranks.parquet", index=False)
    with pytest.raises(results.ResultError, match="does not match"):
        results.load_run("run-b")


def test_bad_ranks_and_missing_runs(tmp_results):
    with pytest.raises(ValueError, match="user_id, rank"):
        results.save_run("x", pd.DataFrame({"rank": [1]}), config.resolve("smoke"), "cpu", 0)
    with pytest.raises(ValueError, match="twice"):
        results.save_run("x", pd.DataFrame({"user_id": [1, 1], "rank": [1, 2]}), config.resolve("smoke"), "cpu", 0)
    with pytest.raises(FileNotFoundError, match="run the notebook"):
        results.load_run("nothing-here")


def _edit(folder, change):
    """Rewrite a run's metrics.json with `change(record)` applied (as a user editing it would)."""
    path = folder / "metrics.json"
    record = json.loads(path.read_text())
    change(record)
    path.write_text(json.dumps(record, indent=2))


@pytest.mark.parametrize("change", [
    lambda r: r.pop("files_sha256"),                    # issue 20: deleting the checksum turned the check off
    lambda r: r.pop("record_sha256"),
    lambda r: r["metrics"].update({"HR@1": 1.0}),       # an edited number
    lambda r: r.update(device="an H200"),               # any edited field
])
def test_a_record_without_its_checksums_or_edited_is_refused(tmp_results, change):
    results.save_run("run-c", RANKS, config.resolve("smoke"), "cpu", 1.0)
    _edit(tmp_results / "run-c", change)
    with pytest.raises(results.ResultError, match="run-c"):
        results.load_run("run-c")


def test_every_file_a_run_wrote_is_verified_and_local_only_files_may_be_absent(tmp_results):
    def write(folder):
        pd.DataFrame({"user_id": [1], "domain_after": [3]}).to_parquet(folder / "variants.parquet")
        (folder / "weights.pt").write_bytes(b"weights")

    results.save_run("run-d", RANKS, config.resolve("smoke"), "cpu", 1.0, write_files=write)
    folder = tmp_results / "run-d"
    assert set(results.load_run("run-d").record["files_sha256"]) == {"ranks.parquet", "variants.parquet", "weights.pt"}
    pd.DataFrame({"user_id": [1], "domain_after": [1]}).to_parquet(folder / "variants.parquet")  # issue 20: unchecked
    with pytest.raises(results.ResultError, match="variants.parquet"):
        results.load_run("run-d")
    write(folder)
    (folder / "weights.pt").unlink()  # weights stay out of git: absent is fine until they are needed
    run = results.load_run("run-d")
    with pytest.raises(FileNotFoundError, match="not kept in git"):
        run.file("weights.pt")
    (folder / "weights.pt").write_bytes(b"other weights")
    with pytest.raises(results.ResultError, match="weights.pt"):
        results.load_run("run-d")
    (folder / "weights.pt").write_bytes(b"weights")
    (folder / "extra.parquet").write_bytes(b"x")
    with pytest.raises(results.ResultError, match="does not list extra.parquet"):
        results.load_run("run-d")


def test_a_run_whose_input_run_was_re_made_is_refused(tmp_results):
    cfg = config.resolve("smoke")
    results.save_run("up", RANKS, cfg, "cpu", 1.0)
    digest = results.content_digest(results.load_run("up").record)
    results.save_run("down", RANKS, cfg, "cpu", 1.0, extra={"inputs": {"up": digest}})
    assert results.load_run("down").record["inputs"] == {"up": digest}
    results.save_run("up", RANKS.assign(rank=[2, 2, 2, 2]), cfg, "cpu", 1.0)  # re-made with other ranks
    with pytest.raises(results.ResultError, match="re-made since"):
        results.load_run("down")
    import shutil
    shutil.rmtree(tmp_results / "up")
    with pytest.raises(results.ResultError, match="which is missing"):
        results.load_run("down")


def test_a_copied_or_renamed_run_folder_is_refused(tmp_results):
    """Second battery: a folder copied under another run's id loaded as that run (its seal travels with it)."""
    import shutil
    results.save_run("run-e", RANKS, config.resolve("smoke"), "cpu", 1.0)
    shutil.copytree(tmp_results / "run-e", tmp_results / "run-f")
    with pytest.raises(results.ResultError, match="record of run run-e, not of run-f"):
        results.load_run("run-f")
