"""Every method on one protocol, from saved runs only: each registered comparison entry's runs (one per training seed
in METHOD_SEEDS) aligned on the users all of them ranked; the same-user comparison a method's notebook shows beside
the baselines; each ablation's saved summary.

A missing run is named with the command that makes it; a run made from another commit than most of the compared
runs is flagged.  Numbers: per-user metrics averaged over seeds, then a bootstrap over users (the pooled CI), with
the spread of the per-seed means beside it.  Sampled ranking, 20 candidates.  Reproduce: `python -m workbench report`.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .. import config, metrics, process
from ..methods.pipeline import ablation_arm_runs, ablation_summary_path, method_run_id, ranks_on
from ..recommender import REGISTRY, Entry, entries
from ..results import ResultError, SavedRun, load_run


def command(notebook: str, cfg: dict) -> str:
    """The command that (re)makes a notebook's runs for this profile (notebook: its file stem or number)."""
    return f"python -m workbench run {notebook[:2]} --profile {cfg['PROFILE']}"


@dataclass
class Comparison:
    """Saved runs of every entry found for one parameter setting, aligned on common users."""
    cfg: dict
    users: list
    ranks: dict                    # label -> (users x seeds) ranks
    runs: dict                     # label -> [SavedRun per seed]
    missing: dict = field(default_factory=dict)   # label -> the command that makes the run
    reference_commit: str | None = None
    own: dict = field(default_factory=dict)       # label -> (users x seeds) ranks on every user the entry ranked
    def commits(self, label: str) -> list[str]:
        """The short commits an entry's runs were made at ('+dirty-<hash>' kept: uncommitted code)."""
        return sorted({process.short_commit(r.record.get("git_commit")) for r in self.runs[label]})

    def flagged(self) -> dict:
        """Entries with a run from another commit than the reference (the most frequent among the compared runs) or
        from a checkout with uncommitted code changes (whatever the reference)."""
        ref = process.short_commit(self.reference_commit)
        return {label: self.commits(label) for label in self.runs
                if self.commits(label) != [ref] or any(process.is_dirty(c) for c in self.commits(label))}

    def table(self) -> pd.DataFrame:
        """Long CI table over the common users (seeds pooled per user)."""
        return metrics.ci_table(self.ranks, self.cfg["N_BOOTSTRAP"], self.cfg["SEED"])

    def seed_spread(self, metric: str = "NDCG@10") -> pd.Series:
        """Per entry, 'min-max' of the per-seed means of `metric` ('' with one seed)."""
        out = {}
        for label, r in self.ranks.items():
            means = [metrics.per_user_metrics(r[:, j])[metric].mean() for j in range(r.shape[1])]
            out[label] = f"{min(means):.3f}-{max(means):.3f}" if len(means) > 1 else ""
        return pd.Series(out, name=f"{metric} seed range")

    def pair(self, label: str, reference: str) -> tuple[pd.DataFrame, int]:
        """Paired bootstrap of `label` against `reference` on the users both ranked (more than the common users when
        some entry ranks fewer), and how many users that is."""
        users = self.own[label].index.intersection(self.own[reference].index)
        if not len(users):
            raise ValueError(f"{label} and {reference} share no evaluated user: re-run them with the same users")
        a, b = (self.own[x].loc[users].to_numpy() for x in (label, reference))
        table = metrics.paired_bootstrap(a, b, self.cfg["N_BOOTSTRAP"], self.cfg["SEED"])
        return table, len(users)

    def paired(self, reference: str) -> pd.DataFrame:
        """Paired bootstrap of every entry against `reference` on the common users."""
        return metrics.paired_against(self.ranks, reference, self.cfg["N_BOOTSTRAP"], self.cfg["SEED"])

    def cost(self) -> pd.DataFrame:
        """Per entry (first seed's run): training and ranking time, prompt tokens, SFT rows, trainable parameters."""
        rows = []
        for label, runs in self.runs.items():
            rec = runs[0].record
            rows.append({"method": label, "fit s": _number(rec.get("fit_seconds"), 1),
                         "rank s/user": _number(_per_user(rec.get("rank_seconds"), rec.get("n_users")), 3),
                         "prompt tokens": _number(rec.get("prompt_tokens_mean"), 0),
                         "SFT rows": _number(rec.get("sft_samples"), 0), "training budget": training_budget(rec),
                         "trainable parameters": _number(rec.get("trainable_parameters"), 0),
                         "device": rec.get("device"), "commit": ", ".join(self.commits(label))})
        return pd.DataFrame(rows).set_index("method")


    def compute(self) -> pd.DataFrame | None:
        """Per LLM entry (first seed's run) what its record's `compute` entry says the device did: dtype, kernel,
        ranking batch size, rates, MFU against the timed matmul (and the datasheet, on CUDA), peak memory; None when
        no run recorded one."""
        rows, variants = [], {e.label for e in entries() if e.variant}  # another model of a run: not its own work
        mfu = lambda p, k: "–" if p.get(k) is None else f"{p[k]:.1%}"  # noqa: E731
        for label, runs in self.runs.items():
            usage = runs[0].record.get("compute")
            if not usage or label in variants:
                continue
            fit, rank = usage.get("fit", {}), usage.get("rank", {})
            rows.append({"method": label, "dtype": ", ".join(rank.get("dtype", [])) or "–",
                         "SFT tokens/s": _number(fit.get("train_tokens_per_s"), 0),
                         "SFT MFU (matmul / sheet)": f"{mfu(fit, 'mfu_vs_matmul')} / {mfu(fit, 'mfu_vs_datasheet')}",
                         "users/s": _number(rank.get("users_per_s"), 2),
                         "rank MFU (matmul / sheet)": f"{mfu(rank, 'mfu_vs_matmul')} / {mfu(rank, 'mfu_vs_datasheet')}",
                         "rank batch": ", ".join(map(str, rank.get("rank_batch_size", []))) or "–",
                         "peak MB (fit / rank)": f"{_number(fit.get('peak_memory_mb'), 0)} / "
                                                 f"{_number(rank.get('peak_memory_mb'), 0)}",
                         "matmul TFLOP/s": f"{usage['matmul_tflops']:.2f}"})
        return pd.DataFrame(rows).set_index("method") if rows else None


def training_budget(record: dict) -> str:
    """What an LLM run trained on, in words: windows, SFT rows and optimiser steps, and each method's extra stages or
    rounds ('–' for a conventional model, 'zero-shot' untrained), so that budgets can be compared across methods."""
    rows, cfg = record.get("sft_samples"), record.get("parameters", {})
    if rows is None or "LLM_BATCH_SIZE" not in cfg:
        return "–"
    if not rows:
        return "zero-shot"
    per_step = cfg["LLM_BATCH_SIZE"] * cfg["GRAD_ACCUM"]
    steps = lambda n: -(-int(n) // per_step)  # noqa: E731
    plural = lambda n: f"{n} step{'s' if n != 1 else ''}"  # noqa: E731
    windows = cfg.get("LLM_TRAIN_SAMPLES")
    stages = record.get("stages") or {}
    parts = [int(v) for _, v in sorted(stages.items())] if len(stages) > 1 else [int(rows)]
    text = (f"{windows if windows is not None else 'all'} windows: {sum(parts):,} rows, "
            f"{plural(sum(map(steps, parts)))}")
    if len(parts) > 1:
        text += f" in {len(parts)} stages (" + " + ".join(f"{steps(v)}" for v in parts) + ")"
    rounds = [r for r in record.get("rounds") or [] if r.get("round")]
    if rounds and record.get("round_sft_samples"):
        n = record["round_sft_samples"]
        text += f"; then {len(rounds)} round(s) x {n:,} rows ({plural(steps(n))}, LM + KL) + domain phase"
    return text


def _number(value, digits: int) -> str:
    """A number with `digits` decimals and thousands separators; '–' for none."""
    return "–" if value is None else f"{value:,.{digits}f}"


def _per_user(seconds, users):
    return seconds / users if seconds is not None and users else None


def entry_runs(entry: Entry, cfg: dict, protocol, seeds) -> list[SavedRun]:
    """The entry's saved run for every seed; FileNotFoundError if one is missing."""
    runs = []
    for seed in seeds:
        run_cfg = config.override(cfg, SEED=seed, **dict(entry.changes))
        runs.append(load_run(method_run_id(entry.method, run_cfg, protocol, entry.run_name)))
    return runs


def entry_ranks(entry: Entry, run: SavedRun) -> pd.Series:
    """Per-user ranks of an entry's run (a variant column for BDLM's models), indexed by user."""
    if entry.variant is None:
        return run.ranks.set_index("user_id")["rank"]
    return pd.read_parquet(run.file("variants.parquet", entry.notebook)).set_index("user_id")[entry.variant]


def collect(cfg: dict, protocol, rows: tuple[Entry, ...] | None = None, seeds=None) -> Comparison:
    """Every entry's saved runs for `cfg` (METHOD_SEEDS unless `seeds`), aligned on the users all of them ranked."""
    seeds = list(seeds or cfg["METHOD_SEEDS"])
    found, missing = {}, {}
    for entry in rows if rows is not None else entries():
        try:
            runs = entry_runs(entry, cfg, protocol, seeds)
            found[entry.label] = (runs, [entry_ranks(entry, r) for r in runs])
        except FileNotFoundError:
            missing[entry.label] = command(entry.notebook, cfg)
    if not found:
        raise FileNotFoundError(f"no saved runs for profile {cfg['PROFILE']}: run `python -m workbench run --profile "
                                f"{cfg['PROFILE']}` first")
    users = sorted(set.intersection(*(set(r.index) for _, per_seed in found.values() for r in per_seed)))
    if not users:
        raise ValueError("the saved runs share no evaluated user: re-run them with the same LLM_EVAL_USERS")
    ranks = {label: np.stack([r.loc[users].to_numpy() for r in per_seed], axis=1)
             for label, (_, per_seed) in found.items()}
    runs = {label: runs for label, (runs, _) in found.items()}
    own = {label: pd.concat(per_seed, axis=1, join="inner").sort_index() for label, (_, per_seed) in found.items()}
    commits = Counter((r.record.get("git_commit") or "unknown") for rs in runs.values() for r in rs)
    return Comparison(cfg, users, ranks, runs, missing, commits.most_common(1)[0][0], own)


def ablations() -> list[str]:
    """The registered methods that declare an ablation, in registration order."""
    return [name for name, spec in REGISTRY.items() if spec.ablation]


def ablation_summary(method: str, cfg: dict, protocol) -> tuple[pd.DataFrame | None, str]:
    """The summary CSV the method's ablation notebook saved for these parameters (the file `run_ablation` names from
    its arms' run ids), checked against the verified runs it names (`check_summary`), or None and the command that
    makes it."""
    path = ablation_summary_path(method, cfg, protocol, write=False)
    if not path.exists():
        return None, command(REGISTRY[method].ablation_notebook, cfg)
    summary = pd.read_csv(path, index_col="method")
    check_summary(summary, method, cfg, protocol, path)
    return summary, path.name


SUMMARY_TOLERANCE = 6e-5  # the CSV holds 4 decimals


def check_summary(summary: pd.DataFrame, method: str, cfg: dict, protocol, path) -> None:
    """Every metric column of an ablation summary (and every '<model> <metric>' column read from the runs'
    variants.parquet) equals what the runs it names give now, and it names this ablation's runs; an edited or
    stale file is an error naming it, never a table in the report."""
    notebook = REGISTRY[method].ablation_notebook
    stale = lambda why: ResultError(f"{Path(path).name} {why}: it was edited or is stale; delete it and re-run "
                                    f"notebook {notebook}")
    expected = ablation_arm_runs(method, cfg, protocol)
    named = {arm: [r.strip() for r in str(runs).split(",")] for arm, runs in summary.get("runs", {}).items()}
    if named != expected:
        raise stale("does not name this ablation's arms and runs (each row the runs of its own arm)")
    for arm, ids in named.items():
        runs = [load_run(r) for r in ids]
        users = sorted(runs[0].ranks["user_id"])
        computed = dict(metrics.per_user_metrics(np.stack([ranks_on(r.ranks, users) for r in runs], axis=1)).mean())
        for column in summary.columns:
            model, _, metric = column.rpartition(" ")
            if metric not in metrics.METRICS:
                continue
            if model:
                variants = [pd.read_parquet(r.file("variants.parquet", notebook)).set_index("user_id")
                            for r in runs]
                if f"{model}_after" not in variants[0]:
                    continue
                ranks = np.stack([v.loc[users, f"{model}_after"].to_numpy() for v in variants], axis=1)
                value = metrics.per_user_metrics(ranks)[metric].mean()
            else:
                value = computed[metric]
            if not abs(float(summary.at[arm, column]) - value) <= SUMMARY_TOLERANCE:
                raise stale(f"says {column} = {summary.at[arm, column]} for arm {arm}, but its runs give {value:.4f}")


def same_users(cfg: dict, protocol, runs: dict | None = None, saved=("Popularity", "SASRec", "GRU4Rec"),
               users=None) -> dict:
    """{label: ranks array} of the saved comparison entries `saved` (by label), then of `runs` (label -> ranks frame,
    e.g. this notebook's runs), all on `users` (default: the first run's users, sorted); a user missing from any of
    them is an error, never a silent drop.  The step every method notebook takes before comparing."""
    runs = runs or {}
    if users is None:
        if not runs:
            raise ValueError("give `users` or at least one run whose users to compare on")
        users = sorted(next(iter(runs.values()))["user_id"])
    by_label = {e.label: e for e in entries()}
    unknown = [label for label in saved if label not in by_label]
    if unknown:
        raise KeyError(f"no comparison entry {', '.join(unknown)}: use one of {', '.join(by_label)}")
    out = {}
    for label in saved:
        entry = by_label[label]
        run = load_entry_run(entry, cfg, protocol)
        ranks = entry_ranks(entry, run)
        out[label] = ranks_on(pd.DataFrame({"user_id": ranks.index, "rank": ranks.to_numpy()}), users)
    out.update({label: ranks_on(ranks, users) for label, ranks in runs.items()})
    return out


def load_entry_run(entry: Entry, cfg: dict, protocol) -> SavedRun:
    """An entry's saved run at cfg's SEED, or a one-line error naming the notebook that makes it."""
    try:
        return entry_runs(entry, cfg, protocol, [cfg["SEED"]])[0]
    except FileNotFoundError:
        raise FileNotFoundError(f"no saved run for {entry.label} with these parameters: make it with "
                                f"`{command(entry.notebook, cfg)}` (same parameters)") from None
