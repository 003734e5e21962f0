"""`make gpu-check` end to end at smoke scale on CPU (what CI can run): the estimate for an H100 and an H200
printed first, the engine benchmark, notebooks in the smoke profile, the report, and its summary, all under its own
folder.  Reproduce: `python -m pytest tests/unit/test_gpu_check.py`."""
import json
import subprocess

import pandas as pd
import pytest

from workbench import gpucheck, results
from workbench.gpucheck import GpuCheck

NOTEBOOKS = ["00", "02", "03"]  # the command's whole path; every notebook runs in smoke under nbval anyway


@pytest.fixture(scope="module")
def checked(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-check")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WORKBENCH_CHECKPOINTS", str(out / "checkpoints"))
        mp.setenv("WORKBENCH_SUMMARIES", str(out / "summaries"))
        before = committed_outputs()
        path = gpucheck.run(GpuCheck(notebooks=NOTEBOOKS, out=out / "check"))
        yield out / "check", json.loads(path.read_text()), before


def committed_outputs() -> str:
    return subprocess.run(["git", "status", "--porcelain", "--", "results", "figures", "notebooks"],
                          cwd=gpucheck.ROOT, capture_output=True, text=True).stdout


def test_gpu_check_runs_benchmark_notebooks_and_report_at_smoke_scale_on_cpu(checked, capsys):
    out, summary, _ = checked
    assert summary["profile"] == "smoke" and summary["device"].startswith("CPU") and summary["commit"]
    assert [s["step"] for s in summary["steps"]] == ["engine benchmark", "3 notebooks, profile smoke", "report"]
    assert [(n["notebook"][:2], n["status"]) for n in summary["notebooks"]] == [(n, "ok") for n in NOTEBOOKS]
    table = pd.read_csv(out / "llm_engine.csv")
    assert {"users/s", "tokens/s"} <= set(table["unit"]) and (table["rate"] > 0).all()
    assert "### Every method on one protocol (profile `smoke`)" in (out / "results" / "REPORT-smoke.md").read_text()
    assert (out / "figures" / "benchmark_sft_loss_cpu.png").stat().st_size > 0
    assert results.load_run(next((out / "results").glob("mkv-smoke-seed0-*")))  # a verified run with compute
    assert json.loads(next((out / "results").glob("mkv-smoke-seed0-*/metrics.json")).read_text())["compute"]


def test_gpu_check_estimates_for_an_h100_and_an_h200_before_it_starts(checked):
    _, summary, _ = checked
    assert set(summary["estimate"]) == set(gpucheck.REFERENCE_DEVICES)
    for name, value in summary["estimate"].items():  # minutes from the committed cpu runs, or why there are none
        assert (isinstance(value, dict) and value["minutes"] > 0) or "make run" in value, name


def test_gpu_check_writes_nothing_over_the_committed_outputs(checked):
    _, _, before = checked
    assert committed_outputs() == before
