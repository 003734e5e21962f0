"""Drive any registered method: `run_method` (seed -> fit -> rank -> diagnose -> save with provenance), `run_grid`
(arms x seeds), `run_ablation` (a method's declared ablation), `seed_runs`, and reading saved runs back.

Reproduce a baseline: `python -m workbench run 02 --profile smoke`; in code:
`run_method("sasrec", cfg, load_protocol(cfg))`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .. import compute, config, metrics, process, results
from ..assets import atomic_write
from ..recommender import Recommender, get_method, get_spec, zero_shot


@dataclass
class FittedRun:
    """What `run_method` returns: the run id, the fitted recommender, its ranks, training log, record path, timings."""
    run_id: str
    recommender: Recommender
    ranks: pd.DataFrame
    log: pd.DataFrame
    record_path: Path
    fit_seconds: float
    rank_seconds: float
    extra: dict = field(default_factory=dict)


def method_run_id(name: str, cfg: dict, protocol, run_name: str | None = None) -> str:
    """The run id `run_method` would write for this method, parameters and candidate set (and the run ids of the
    saved runs it reads, `Recommender.upstream`)."""
    cls = get_method(name)
    key = cls.run_key(cfg, protocol)
    upstream = cls.upstream(cfg)
    if upstream:
        key = {**key, "upstream": {role: method_run_id(method, ucfg, protocol)
                                   for role, (method, ucfg) in sorted(upstream.items())}}
    return results.run_id(run_name or cls.name, cfg, key)


def read_upstream(rec: Recommender, role: str, notebook: str = "02_baselines") -> results.SavedRun:
    """The saved run `rec` reads in `role` (its `upstream` declaration), verified, and noted in `rec.inputs` with its
    content digest (the record lists it; a reader of the record checks it has not been re-made since)."""
    method, ucfg = type(rec).upstream(rec.cfg)[role]
    run = find_run(method, ucfg, rec.protocol, notebook=notebook)
    rec.inputs[run.folder.name] = results.content_digest(run.record)
    return run


def check_ranks(ranks: pd.DataFrame, view: pd.DataFrame, who: str) -> pd.DataFrame:
    """The ranks of exactly the view's users, each once, within 1..n candidates; anything else is an error."""
    if list(ranks.columns[:2]) != ["user_id", "rank"] or ranks["user_id"].duplicated().any():
        raise ValueError(f"{who}: rank() must return one row per user with columns user_id, rank")
    if set(ranks["user_id"]) != set(view["user_id"]):
        raise ValueError(f"{who}: ranked {len(ranks)} users but the view holds {len(view)} different ones")
    n_cands = view["candidates"].map(len).max()
    if not ranks["rank"].between(1, n_cands).all():
        raise ValueError(f"{who}: ranks outside 1..{n_cands}")
    return ranks


def run_method(name: str, cfg: dict, protocol, device: str = "cpu", which: str = "test",
               run_name: str | None = None, save: bool = True) -> FittedRun:
    """Seed, build, fit, rank the `which` view (test by default), diagnose, and save the run whole."""
    cls = get_method(name)
    rid = method_run_id(name, cfg, protocol, run_name) + ("" if which == "test" else f"-{which}")
    process.seed_everything(cfg["SEED"])
    rec = cls(cfg, protocol, device)
    meter = compute.Meter(device)  # the work the engine counts, per phase (compute.py)
    with meter.phase("fit"):
        log = rec.fit()
    view = rec.eval_view(which)
    with meter.phase("rank"):
        ranks = check_ranks(rec.rank(view), view, rid)
    with meter.phase("diagnose"):
        rec.diagnose(view)
    fit_s, rank_s, diagnose_s = (meter.phases[p]["seconds"] for p in ("fit", "rank", "diagnose"))
    extra = {"method": cls.name, "label": cls.label, "split": which, "fit_seconds": round(fit_s, 2),
             "rank_seconds": round(rank_s, 2), "diagnose_seconds": round(diagnose_s, 2),
             "training_log": log.round(6).to_dict("records"), "inputs": dict(rec.inputs),
             "resumed": list(rec.resumed), **rec.report(view)}
    usage = meter.summary({"rank": ("users", len(view))})
    if usage:
        extra["compute"] = usage
    path = None
    if save:
        path = results.save_run(rid, ranks[["user_id", "rank"]].sort_values("user_id", ignore_index=True), rec.cfg,
                                device, fit_s + rank_s + diagnose_s, extra, write_files=rec.save)
    return FittedRun(rid, rec, ranks, log, path, fit_s, rank_s, extra)


def find_run(name: str, cfg: dict, protocol, run_name: str | None = None, notebook: str = "") -> results.SavedRun:
    """The saved run of `name` for these parameters and this candidate set, or a one-line error naming what to run."""
    rid = method_run_id(name, cfg, protocol, run_name)
    try:
        return results.load_run(rid)
    except FileNotFoundError:
        notebook = notebook or get_spec(name).notebook
        raise FileNotFoundError(f"no saved run {rid} ({name} with these parameters and candidates): run notebook "
                                f"{notebook} in profile {cfg['PROFILE']} with the same parameters first") from None


def load_recommender(run: results.SavedRun, device: str = "cpu") -> Recommender:
    """The fitted recommender saved in a run folder (through its class's `load`)."""
    cls = get_method(run.record["method"])
    return cls.load(run.folder, run.record, device)


def ranks_on(ranks: pd.DataFrame, users) -> np.ndarray:
    """Ranks of exactly `users` (in that order); a missing user is an error, never a silent drop."""
    by_user = ranks.set_index("user_id")["rank"]
    missing = set(users) - set(by_user.index)
    if missing:
        raise ValueError(f"{len(missing)} user(s) have no rank in this run (e.g. {sorted(missing)[:3]}): "
                         f"compare runs made on the same users and candidates")
    return by_user.loc[list(users)].to_numpy()


@dataclass
class Grid:
    """Results of arms x seeds: per-arm ranks (users x seeds, rows in `users` order) and every FittedRun."""
    users: list
    ranks: dict
    runs: dict
    summary_path: Path | None = None  # where `save_summary` writes (run_ablation: the file the report reads)

    def table(self, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
        """Long CI table (per-user metrics averaged over seeds), one method row per arm."""
        return metrics.ci_table(self.ranks, n_boot, seed)

    def paired(self, reference: str, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
        """Paired bootstrap of every arm against `reference` on the same users."""
        return metrics.paired_against(self.ranks, reference, n_boot, seed)

    def save_summary(self, table: pd.DataFrame, extra: pd.DataFrame | None = None) -> Path:
        """Per-arm mean metrics (from `table`), `extra` columns by arm, and each arm's run ids, written atomically to
        `summary_path`; returns the path."""
        if self.summary_path is None:
            raise ValueError("this grid has no summary file: run it with run_ablation")
        summary = table.pivot(index="method", columns="metric", values="mean").round(4)
        summary = summary.reindex([arm for arm in self.ranks if arm in summary.index])
        if extra is not None:
            summary = summary.join(extra)
        summary["runs"] = [", ".join(run.run_id for (a, _), run in self.runs.items() if a == arm)
                           for arm in summary.index]
        return atomic_write(self.summary_path, lambda tmp: summary.to_csv(tmp))


def remaining(start: float, done: int, total: int) -> str:
    """', about N min left' from the mean time of the runs done so far (empty before the first finishes)."""
    if done == 0:
        return ""
    return f", about {(time.time() - start) / done * (total - done) / 60:.0f} min left"


def run_grid(name: str, cfg: dict, protocol, arms: dict, seeds, device: str = "cpu") -> Grid:
    """Run method `name` once per arm (parameter overrides) and training seed, all on the same users and candidates."""
    users, ranks, runs = None, {}, {}
    total, done, start = len(arms) * len(seeds), 0, time.time()
    for arm, changes in arms.items():
        per_seed = []
        for seed in seeds:
            arm_cfg = config.override(cfg, **changes, SEED=seed)
            print(f"--- {name}: arm {arm}, seed {seed} (run {done + 1} of {total}{remaining(start, done, total)})")
            run = run_method(name, arm_cfg, protocol, device, run_name=f"{name}-{arm}")
            done += 1
            users = sorted(run.ranks["user_id"]) if users is None else users
            per_seed.append(ranks_on(run.ranks, users))
            runs[(arm, seed)] = run
        ranks[arm] = np.stack(per_seed, axis=1)
    return Grid(users, ranks, runs)


def ablation_arm_runs(name: str, cfg: dict, protocol) -> dict[str, list[str]]:
    """{arm: its run ids, one per seed} of method `name`'s declared ablation for these parameters."""
    ablation = get_spec(name).ablation
    arm_cfg = ablation.config(cfg)
    return {arm: [method_run_id(name, config.override(arm_cfg, **changes, SEED=seed), protocol, f"{name}-{arm}")
                  for seed in cfg["ABLATION_SEEDS"]] for arm, changes in ablation.arms(cfg).items()}


def ablation_run_ids(name: str, cfg: dict, protocol) -> list[str]:
    """The run ids of every arm and seed of method `name`'s declared ablation for these parameters."""
    return [rid for ids in ablation_arm_runs(name, cfg, protocol).values() for rid in ids]


def ablation_summary_path(name: str, cfg: dict, protocol, write: bool = True) -> Path:
    """The ablation's summary CSV, named by its arms' run ids (write: where a run writes it; else where it is read)."""
    file = f"{name}-ablation-{cfg['PROFILE']}-{results.short_hash(sorted(ablation_run_ids(name, cfg, protocol)))}.csv"
    return results.results_dir() / file if write else results.result_path(file)


def run_ablation(name: str, cfg: dict, protocol, device: str = "cpu") -> Grid:
    """Method `name`'s declared ablation (its spec: arms, shared settings) over ABLATION_SEEDS, on the same users."""
    ablation = get_spec(name).ablation
    if ablation is None:
        raise ValueError(f"{name} declares no ablation")
    grid = run_grid(name, ablation.config(cfg), protocol, ablation.arms(cfg), cfg["ABLATION_SEEDS"], device)
    grid.summary_path = ablation_summary_path(name, cfg, protocol)
    return grid


def seed_runs(name: str, cfg: dict, protocol, device: str = "cpu", run_name: str | None = None) -> dict:
    """The method's run for every other training seed in METHOD_SEEDS (the comparison pools them per user)."""
    runs = {}
    for seed in (s for s in cfg["METHOD_SEEDS"] if s != cfg["SEED"]):
        print(f"--- {run_name or name}: training seed {seed} (METHOD_SEEDS {cfg['METHOD_SEEDS']})")
        runs[seed] = run_method(name, config.override(cfg, SEED=seed), protocol, device, run_name=run_name)
    return runs


def against_zero_shot(name: str, run: FittedRun, cfg: dict, protocol, device: str = "cpu"):
    """The LLM method's untrained reference on the trained run's users (run `<name>-zeroshot`, and one per other
    METHOD_SEEDS seed for the comparison), and the paired difference trained - untrained per metric (did it learn?)."""
    untrained = zero_shot(cfg)
    zero = run_method(name, untrained, protocol, device, run_name=f"{name}-zeroshot")
    seed_runs(name, untrained, protocol, device, run_name=f"{name}-zeroshot")
    trained, reference = metrics.align_ranks(run.ranks[["user_id", "rank"]], zero.ranks[["user_id", "rank"]])
    if len(trained) != len(run.ranks):
        raise ValueError(f"{name}-zeroshot ranked other users than the trained run: compare on the same users")
    return zero, metrics.paired_bootstrap(trained, reference, cfg["N_BOOTSTRAP"], cfg["SEED"]).round(4)
