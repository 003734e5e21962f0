"""How long a profile's whole comparison will take on an accelerator, estimated before it starts.

`plan(cfg)` lists the LLM runs every notebook makes (each method's run and zero-shot reference per METHOD_SEEDS
seed, each ablation arm per ABLATION_SEEDS seed) with their training rows, evaluated users and generated users.
`unit_costs` reads, for the same runs of a reference profile (cpu: the committed `make run`), the work their
records counted (`compute`: FLOPs of fit, rank and diagnose, tokens generated) per training row, per evaluated
user and per generating user.  `estimate` scales those to the planned sizes and turns them into seconds:

    FLOPs / (device's dense bf16 peak × MFU)  +  decode steps × DECODE_STEP_S  +  fixed costs per run and notebook,

where the decode steps are generate-then-match's (one user at a time, tokens per user as recorded) and those of the
cached generation a method declares (`decode_plan`: LLM-TRSR's summaries, counted once per history kind), with the
baselines' epochs at their reference seconds per epoch divided by BASELINE_SPEEDUP.  The assumptions are
printed with the estimate; where the profile's own runs on this device kind exist (a gpu-quick run), their measured
MFU replaces the assumed one.  Reproduce: `python -m workbench gpu-check --estimate-only`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .. import compute, config, process, results
from ..llm.recommender import llm_methods
from ..methods.pipeline import find_run
from ..recommender import REGISTRY, get_method, get_spec, zero_shot

ASSUMED_MFU = 0.05       # of the datasheet peak; the last engine measured ~2% on an H100 (launch-bound), the target 30%
DECODE_STEP_S = 0.025    # one greedy decoding step of a batch (launch-bound for a 135M model)
RUN_OVERHEAD_S = 6.0     # per LLM run: model load, prompts, tokenisation, saving
NOTEBOOK_OVERHEAD_S = 10.0  # per notebook: kernel start, data, plots
BASELINE_SPEEDUP = 10.0  # a GPU epoch of SASRec/GRU4Rec/MF against the reference CPU's
ENGINE_BENCHMARK = {"users": 100, "samples": 500, "variants": 3, "per_user_rate": 30.0}  # gpu-check's benchmark


@dataclass(frozen=True)
class PlannedRun:
    """One LLM run a profile makes: which notebook, method and run name, its parameters and sizes."""
    notebook: str
    method: str
    run_name: str
    cfg: dict = field(repr=False)
    train_rows: int
    eval_users: int
    gen_users: int


def _sizes(name: str, cfg: dict, protocol) -> tuple[int, int, int]:
    """(SFT rows = windows × epochs, evaluated users, generating users) of one run of method `name`."""
    cls = get_method(name)
    capped = cls.capped(cfg)
    windows = capped["LLM_TRAIN_SAMPLES"]
    windows = len(protocol.train) if windows is None else min(windows, len(protocol.train))
    users = cls.n_eval_users(cfg)
    users = len(protocol.test) if users is None else min(users, len(protocol.test))
    return windows * capped["LLM_EPOCHS"], users, min(capped["GEN_EVAL_USERS"], users)


def plan(cfg: dict, protocol) -> list[PlannedRun]:
    """Every LLM run the notebooks make for these parameters (method runs, zero-shot references, ablation arms)."""
    runs = []
    for name in llm_methods():
        spec = get_spec(name)
        for seed in cfg["METHOD_SEEDS"]:
            for run_name, run_cfg in ((name, cfg), (f"{name}-zeroshot", zero_shot(cfg))):
                run_cfg = config.override(run_cfg, SEED=seed)
                runs.append(PlannedRun(spec.notebook, name, run_name, run_cfg, *_sizes(name, run_cfg, protocol)))
        if spec.ablation is not None:
            shared = spec.ablation.config(cfg)
            for arm, changes in spec.ablation.arms(cfg).items():
                for seed in cfg["ABLATION_SEEDS"]:
                    arm_cfg = config.override(shared, **changes, SEED=seed)
                    runs.append(PlannedRun(spec.ablation_notebook, name, f"{name}-{arm}", arm_cfg,
                                           *_sizes(name, arm_cfg, protocol)))
    return runs


def _per_unit(record: dict, run: PlannedRun, folder: str) -> dict:
    """A record's counted work per training row, evaluated user and generating user (0 where it did none)."""
    usage = record.get("compute")
    if not usage:
        raise ValueError(f"the saved run {folder} records no compute entry (made before "
                         f"runs counted their work): re-make the reference profile's runs (make run) to estimate")
    fit, rank, diag = (usage.get(p, {}) for p in ("fit", "rank", "diagnose"))
    users, gen = max(run.eval_users, 1), max(run.gen_users, 1)
    whole = run.train_rows and not record.get("resumed")  # a resumed or reused training counted only its rest
    return {"fit_flops": fit.get("flops", 0) / run.train_rows if whole else None,
            "fit_fixed": 0 if run.train_rows else fit.get("flops", 0),  # untrained: validation scoring (BDLM)
            "rank_flops": rank.get("flops", 0) / users,
            "gen_flops": diag.get("flops", 0) / gen, "gen_generated": diag.get("generated_tokens", 0) / gen}


def unit_costs(reference: dict, protocol) -> dict[str, dict]:
    """{run name: work per unit} from the reference profile's saved runs: a run that trained nothing counts no fit
    work (a zero-shot's unit costs come from itself, its training's from the method's run)."""
    costs = {}
    for run in plan(reference, protocol):
        if run.run_name in costs:
            continue
        saved = find_run(run.method, run.cfg, protocol, run_name=run.run_name)
        costs[run.run_name] = _per_unit(saved.record, run, saved.folder.name)
    return costs


def _cost_of(run: PlannedRun, costs: dict) -> dict:
    """The unit costs of a planned run: its own run name's in the reference, else its method's run; the training's
    per row from the first of these that trained in its own process (an arm reusing the method's checkpoints
    counted no training)."""
    own, method = costs.get(run.run_name) or costs[run.method], costs[run.method]
    fit = next((c["fit_flops"] for c in (own, method) if c["fit_flops"]), None)
    if fit is None and run.train_rows:
        raise ValueError(f"no reference run of {run.method} counted its training (all reused from checkpoints): "
                         f"re-make the reference runs with fresh checkpoints (make run in a fresh clone)")
    return {**own, "fit_flops": fit or 0.0}


def measured_mfu(cfg: dict, protocol, device_name: str) -> float | None:
    """The median MFU (vs datasheet) of this profile's saved LLM runs made on a device of this name; None if none."""
    values = []
    for run in plan(cfg, protocol):
        try:
            usage = find_run(run.method, run.cfg, protocol, run_name=run.run_name).record.get("compute") or {}
        except FileNotFoundError:
            continue
        if usage.get("device", "").split(" (")[0] == device_name.split(" (")[0]:
            values += [usage[p]["mfu_vs_datasheet"] for p in ("fit", "rank")
                       if usage.get(p, {}).get("mfu_vs_datasheet")]
    return float(pd.Series(values).median()) if values else None


def baseline_seconds(reference: dict, protocol, target: dict) -> dict[str, float]:
    """{baseline: seconds} at the target's EPOCHS from the reference runs' seconds per epoch, / BASELINE_SPEEDUP."""
    out, llms = {}, set(llm_methods())
    for name in (n for n in REGISTRY if n not in llms):
        record = find_run(name, reference, protocol).record
        epochs = max(1, len(record.get("training_log") or [1]))
        out[name] = record["fit_seconds"] / epochs * target["EPOCHS"] * len(target["METHOD_SEEDS"]) / BASELINE_SPEEDUP
    return out


def estimate(cfg: dict, protocol, device_name: str, reference: dict | None = None,
             mfu: float | None = None, benchmark: bool = True, reference_runs: Path | None = None) -> pd.DataFrame:
    """Seconds per planned step of `cfg`'s comparison on a device of this name (rows: notebooks' runs, baselines,
    overheads, the engine benchmark); attributes: the peak, the MFU used and where it came from.  reference: the
    resolved parameters whose saved runs give the work per unit (None: the cpu profile's, the committed run), read
    from `reference_runs` (None: where saved runs are read; gpu-check names the committed results/)."""
    peak = compute.datasheet_peak(device_name)
    if peak is None:
        raise ValueError(f"no datasheet bf16 peak for {device_name!r}: add the accelerator to "
                         f"compute.DATASHEET_BF16_TFLOPS, or estimate for one listed there (e.g. 'NVIDIA H200')")
    reference = reference or config.resolve("cpu")
    measured = measured_mfu(cfg, protocol, device_name) if mfu is None else None
    used = mfu or measured or ASSUMED_MFU
    rate = peak * used
    with process.environment({results.RESULTS_ENV: str(reference_runs)} if reference_runs else {}):
        costs = unit_costs(reference, protocol)
        baselines = baseline_seconds(reference, protocol, cfg)
    rows, decoding = [], {}
    for run in plan(cfg, protocol):
        c = _cost_of(run, costs)
        train = run.train_rows
        flops = (c["fit_flops"] * train + c["fit_fixed"] + c["rank_flops"] * run.eval_users
                 + c["gen_flops"] * run.gen_users)
        for key, n in get_method(run.method).decode_plan(run.cfg, run.eval_users, train).items():
            notebook, before = decoding.get(key, (run.notebook, 0))  # made once, where first needed
            decoding[key] = (notebook, max(before, n))
        steps = c["gen_generated"] * run.gen_users  # generate-then-match: one user at a time
        rows.append({"notebook": run.notebook, "step": run.run_name, "train rows": train, "users": run.eval_users,
                     "TFLOP": flops / 1e12, "seconds": flops / rate + steps * DECODE_STEP_S + RUN_OVERHEAD_S})
    for key, (notebook, steps) in decoding.items():
        rows.append({"notebook": notebook, "step": f"summaries {' '.join(map(str, key))}",
                     "seconds": steps * DECODE_STEP_S})
    for name, seconds in baselines.items():
        rows.append({"notebook": get_spec(name).notebook, "step": name, "seconds": seconds})
    notebooks = {r["notebook"] for r in rows} | {"00_quickstart", "01_data_exploration", "09_comparison"}
    rows.append({"notebook": "(all)", "step": f"{len(notebooks)} notebooks' fixed costs",
                 "seconds": NOTEBOOK_OVERHEAD_S * len(notebooks)})
    if benchmark:
        b, mkv = ENGINE_BENCHMARK, costs["mkv"]
        flops = b["samples"] * b["variants"] * mkv["fit_flops"] + b["users"] * mkv["rank_flops"]
        rows.append({"notebook": "benchmarks", "step": "llm_engine.py", "TFLOP": flops / 1e12,
                     "seconds": flops / rate + b["users"] / b["per_user_rate"] + 4 * RUN_OVERHEAD_S})
    table = pd.DataFrame(rows)
    table.attrs.update(peak_tflops=peak / 1e12, mfu=used, mfu_source="measured" if measured and not mfu else
                       ("given" if mfu else "assumed"), device=device_name)
    return table


def describe(table: pd.DataFrame, profile: str) -> str:
    """The estimate as text: total minutes, the assumptions, and the seconds per notebook."""
    a = table.attrs
    per_notebook = table.groupby("notebook", sort=True)["seconds"].sum()
    lines = [f"estimate for profile {profile} on {a['device']}: {table['seconds'].sum() / 60:.1f} min "
             f"({table['TFLOP'].sum():,.0f} TFLOP at {a['mfu']:.0%} MFU ({a['mfu_source']}) of "
             f"{a['peak_tflops']:,.0f} TFLOP/s dense bf16; decode {DECODE_STEP_S * 1000:.0f} ms/step, "
             f"{RUN_OVERHEAD_S:.0f} s per LLM run, {NOTEBOOK_OVERHEAD_S:.0f} s per notebook, baselines "
             f"{BASELINE_SPEEDUP:.0f}x the reference CPU's epochs)"]
    lines += [f"  {nb:<34} {s / 60:5.1f} min" for nb, s in per_notebook.items()]
    return "\n".join(lines)


def minutes(table: pd.DataFrame) -> float:
    """The estimate's total in minutes (rounded up to a tenth)."""
    return math.ceil(table["seconds"].sum() / 6) / 10
