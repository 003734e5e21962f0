"""Exploration never writes over the committed outputs: scratch by default, committed folders only when refreshing."""
import os

import matplotlib.pyplot as plt
import pandas as pd
import pytest

from workbench import config, outputs, results
from workbench.notebook import plots, batch
from workbench.__main__ import main

RANKS = pd.DataFrame({"user_id": [1, 2], "rank": [1, 4]})


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project root of its own, with neither $WORKBENCH_RESULTS nor $WORKBENCH_FIGURES set."""
    monkeypatch.setattr(outputs, "ROOT", tmp_path)
    monkeypatch.setattr(outputs, "SCRATCH", tmp_path / "runs" / "scratch")
    for env in (results.RESULTS_ENV, plots.FIGURES_ENV, outputs.REFRESH_ENV):
        monkeypatch.delenv(env, raising=False)
    return tmp_path


def test_a_run_outside_the_refresh_writes_to_scratch_and_leaves_committed_files_alone(project, monkeypatch):
    cfg = config.resolve("smoke")
    monkeypatch.setenv(outputs.REFRESH_ENV, "1")
    committed = results.save_run("pop-smoke-seed0-x", RANKS, cfg, "cpu", 1.0)
    plots.save(plt.figure(), "01_figure")
    before = {p: p.read_bytes() for p in project.rglob("*") if p.is_file()}
    assert committed.parent.parent == project / "results" and (project / "figures" / "01_figure.png").exists()

    monkeypatch.delenv(outputs.REFRESH_ENV)  # exploration: a notebook in JupyterLab, `workbench run` without --refresh
    scratch = results.save_run("pop-smoke-seed0-x", RANKS.assign(rank=[2, 2]), cfg, "cpu", 1.0)
    plots.save(plt.figure(), "01_figure")
    assert scratch.parent.parent == project / "runs" / "scratch" / "results"
    assert (project / "runs" / "scratch" / "figures" / "01_figure.png").exists()
    assert {p: p.read_bytes() for p in before} == before  # nothing committed was rewritten
    assert results.load_run("pop-smoke-seed0-x").folder == scratch.parent  # the scratch copy is read first
    results.load_run("pop-smoke-seed0-x")
    import shutil
    shutil.rmtree(scratch.parent)
    assert results.load_run("pop-smoke-seed0-x").folder == committed.parent  # then the committed one
    assert results.find_runs("pop-") == ["pop-smoke-seed0-x"]


def test_refresh_is_for_the_cpu_profile_defaults_only():
    with pytest.raises(config.ConfigError, match="drop --profile smoke or --refresh"):
        batch.check_refresh("smoke", {})
    with pytest.raises(config.ConfigError, match="drop -p SEED 1 or --refresh"):
        batch.check_refresh("cpu", {"SEED": 1})
    batch.check_refresh("cpu", {})
    assert main(["run", "02", "--refresh", "-p", "HISTORY_LEN", "20"]) == 2


def test_kernels_draw_inline_whatever_the_shell_sets(tmp_path, monkeypatch, capfd):
    """A non-inline $MPLBACKEND (as test setups set) left every committed notebook without its figures."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = new_notebook()
    cell = new_code_cell("PROFILE = None")
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell, new_code_cell("import matplotlib.pyplot as plt\nplt.plot([1, 2]);")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "01_plot.ipynb"
    nbformat.write(nb, str(path))
    batch.run_notebooks([path], "smoke", {}, tmp_path / "out", refresh=True, progress=False)
    saved = nbformat.read(str(path), as_version=4)
    assert any("image/png" in o.get("data", {}) for o in saved.cells[1].outputs)
    assert saved.metadata.kernelspec.display_name == batch.KERNEL_DISPLAY_NAME
    assert "without encryption" not in capfd.readouterr().err  # the kernel's TCP notice no longer reaches the run
    assert os.environ.get("MPLBACKEND") == "Agg" and outputs.REFRESH_ENV not in os.environ  # restored afterwards


def test_a_mistyped_notebook_name_suggests_the_nearest():
    for typed, meant in [("3_sft", "03_sft_multi_key_value"), ("baseline", "02_baselines"),
                         ("comparision", "09_comparison")]:
        with pytest.raises(config.ConfigError, match=f"did you mean {meant}\\?"):
            batch.select_notebooks([typed])
