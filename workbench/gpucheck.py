"""`make gpu-check`: the first run on a lent accelerator, short and sure.  On CUDA: the time estimate of profile
gpu-quick first (refused over the budget unless forced), the engine benchmark, every notebook in gpu-quick (every
method and baseline on all 943 users, one seed) and its report.  On CPU the same steps at smoke scale (CI runs them),
after printing the estimate for an H100 and an H200.  Everything goes under runs/gpu-check/<profile>/: results/
(runs, REPORT-<profile>.md), figures/, the executed notebooks, llm_engine.csv and gpu-check.json (estimate beside
the seconds each step took).  docs/gpu.md says how to run it on a machine with no package index.
Reproduce: `python -m workbench gpu-check` (`--estimate-only`, `--force`, `--budget-minutes 8`).
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import compute, config, process
from .assets import atomic_write

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "runs" / "gpu-check"
COMMITTED = ROOT / "results"  # the cpu profile's `make run`, whose counted work the estimate scales
REFERENCE_DEVICES = ("NVIDIA H100 80GB HBM3", "NVIDIA H200")  # estimated for on a machine without CUDA
GPU_SFT_VARIANTS = "padded,padding_free,packed"  # flex attention left out: its compilation alone can take minutes
CPU_BENCHMARK = ["--model", "tiny", "--users", "4", "--samples", "8", "--sft", "padded,padding_free"]


@dataclass
class GpuCheck:
    """Settings of one gpu-check.

    Args:
        budget_minutes: a CUDA run estimated longer than this is refused (unless `force`).
        force: start even when over budget or when no estimate can be made.
        estimate_only: print the estimate(s) and stop.
        notebooks: the notebooks to run (numbers or stems); empty = all.
        benchmark: run benchmarks/llm_engine.py first.
        mfu: the MFU the estimate assumes (None: measured on this device kind if a gpu-quick run exists, else
            budget.ASSUMED_MFU).
        out: where everything is written (None: runs/gpu-check/<profile>).
    """
    budget_minutes: float = 8.0
    force: bool = False
    estimate_only: bool = False
    notebooks: list = field(default_factory=list)
    benchmark: bool = True
    mfu: float | None = None
    out: Path | None = None


def estimates(device: str, mfu: float | None) -> dict[str, object]:
    """{device name: estimate table, or the one-line reason there is none} for profile gpu-quick."""
    from .data.protocol import load_protocol
    from .evaluation import budget
    cfg = config.resolve("gpu-quick")
    protocol = load_protocol(cfg)
    names = [process.device_description(device)] if compute.is_cuda(device) else list(REFERENCE_DEVICES)
    out = {}
    for name in names:
        try:
            table = budget.estimate(cfg, protocol, name, mfu=mfu, reference_runs=COMMITTED)
            print(budget.describe(table, "gpu-quick"), flush=True)
            out[name] = table
        except (FileNotFoundError, ValueError) as err:
            print(f"no estimate for {name}: {err}", flush=True)
            out[name] = str(err)
    return out


def check_budget(tables: dict, settings: GpuCheck) -> None:
    """Refuse a CUDA run without an estimate, or estimated over the budget, unless forced."""
    from .evaluation import budget
    if settings.force:
        return
    for name, table in tables.items():
        if isinstance(table, str):
            raise ValueError(f"gpu-check cannot estimate its time on {name} ({table}); add --force to start anyway")
        if budget.minutes(table) > settings.budget_minutes:
            raise ValueError(f"gpu-check is estimated at {budget.minutes(table):.1f} min on {name}, over the "
                             f"{settings.budget_minutes:g}-minute budget: lower the gpu-quick sizes, raise "
                             f"--budget-minutes, or add --force")


def timed(label: str, steps: list, fn) -> None:
    """Run one step, print and record its seconds."""
    start = time.time()
    print(f"=== gpu-check: {label}", flush=True)
    fn()
    steps.append({"step": label, "seconds": round(time.time() - start, 1)})
    print(f"=== gpu-check: {label} done in {steps[-1]['seconds']:.0f} s", flush=True)


def run(settings: GpuCheck) -> Path | None:
    """The estimate, then (unless estimate_only) the benchmark, the notebooks and the report; returns gpu-check.json."""
    from .evaluation import budget, report
    from .notebook import batch
    device = process.pick_device(None)
    cuda = compute.is_cuda(device)
    profile = "gpu-quick" if cuda else "smoke"
    out = Path(settings.out or OUT / profile)
    env = {"WORKBENCH_RESULTS": str(out / "results"), "WORKBENCH_FIGURES": str(out / "figures")}
    with process.environment(env):  # an earlier gpu-check's runs there give a measured MFU
        tables = estimates(device, settings.mfu)
    if cuda:
        check_budget(tables, settings)
    if settings.estimate_only:
        return None
    out.mkdir(parents=True, exist_ok=True)
    steps, start = [], time.time()
    with process.environment(env):
        if settings.benchmark:
            kind = "gpu" if cuda else "cpu"
            args = [sys.executable, str(ROOT / "benchmarks" / "llm_engine.py"), "--table", str(out / "llm_engine.csv"),
                    "--figure", str(out / "figures" / f"benchmark_sft_loss_{kind}.png")]
            args += (["--users", str(budget.ENGINE_BENCHMARK["users"]), "--samples",
                      str(budget.ENGINE_BENCHMARK["samples"]), "--sft", GPU_SFT_VARIANTS] if cuda else CPU_BENCHMARK)
            timed("engine benchmark", steps, lambda: subprocess.run(args, check=True, cwd=ROOT))
        paths, notebooks = batch.select_notebooks(settings.notebooks), []
        timed(f"{len(paths)} notebooks, profile {profile}", steps,
              lambda: notebooks.extend(batch.run_notebooks(paths, profile, {}, out / "notebooks", progress=False)))
        timed("report", steps, lambda: report.write_report(config.resolve(profile)))
    estimated = {name: (t if isinstance(t, str) else {"minutes": budget.minutes(t), "mfu": t.attrs["mfu"],
                                                      "mfu_source": t.attrs["mfu_source"],
                                                      "per_notebook_s": t.groupby("notebook")["seconds"].sum()
                                                      .round(1).to_dict()})
                 for name, t in tables.items()}
    summary = {"device": process.device_description(device), "profile": profile, "commit": process.git_commit(),
               "minutes": round((time.time() - start) / 60, 2), "estimate": estimated, "steps": steps,
               "notebooks": [{k: r.get(k) for k in ("notebook", "status", "seconds")} for r in notebooks]}
    path = atomic_write(out / "gpu-check.json", lambda tmp: tmp.write_text(json.dumps(summary, indent=2, default=str)))
    print(f"gpu-check: {summary['minutes']:.1f} min on {summary['device']} (profile {profile}); "
          f"report {out / 'results' / f'REPORT-{profile}.md'}; summary {path}")
    return path
