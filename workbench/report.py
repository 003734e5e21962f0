"""The comparison of every method on one protocol, from saved runs only: notebook 09 and `python -m workbench report`
(results/REPORT.md, which the README's results section is, regenerated).

Each entry reads the run its notebook saved for these parameters (one per training seed in METHOD_SEEDS); a missing
run is named with the command that makes it, and a run made from another commit than most of the compared runs is
flagged.  Numbers: per-user metrics averaged over seeds, then a bootstrap over users (the pooled CI), with the spread
of the per-seed means beside it.  Sampled ranking, 20 candidates, on the users every entry was evaluated on.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import config, metrics as M
from .assets import atomic_write
from .methods import method_run_id
from .methods import bdlm, rsllm, trsr
from .results import Run, load_run, result_path, results_dir, short_hash

NOTEBOOKS = {"02": "02_baselines", "03": "03_sft_multi_key_value", "04": "04_ablation_shuffle_mask",
             "05": "05_text_rich_summarization", "06": "06_ablation_summarization", "07": "07_rsllm_unified_prompts",
             "08": "08_bdlm_information_sharing"}


@dataclass(frozen=True)
class Entry:
    """One row of the comparison: a method's run (or one model of it) and the notebook that saves it.

    Args:
        label: the row's name.
        method: registered method name.
        notebook: number of the notebook that saves the run.
        run_name: the run's name when it is not the method's (e.g. mkv-zeroshot).
        changes: parameter overrides the notebook applies, as (name, value) pairs.
        variant: a column of the run's variants.parquet to read instead of its ranks (BDLM's models).
    """
    label: str
    method: str
    notebook: str
    run_name: str | None = None
    changes: tuple = ()
    variant: str | None = None


ENTRIES = (
    Entry("Popularity", "popularity", "02"),
    Entry("SASRec", "sasrec", "02"),
    Entry("GRU4Rec", "gru4rec", "02"),
    Entry("SmolLM2 zero-shot", "mkv", "03", "mkv-zeroshot", (("LLM_TRAIN_SAMPLES", 0),)),
    Entry("MKV LoRA", "mkv", "03"),
    Entry("LLM-TRSR", "trsr", "05"),
    Entry("RSLLM", "rsllm", "07"),
    Entry("BDLM LLM", "bdlm", "08"),
    Entry("BDLM domain model", "bdlm", "08", variant="domain_after"),
    Entry("BDLM ensemble", "bdlm", "08", variant="ensemble_after"),
)

# method -> (notebook, parameter listing the arms, arm -> parameter changes, arms train on ABLATION_TRAIN_SAMPLES)
ABLATIONS = {"mkv": ("04", "ABLATION_ARMS", lambda arm: {"AUGMENT": arm}, True),
             "trsr": ("06", "TRSR_ARMS", trsr.arm_changes, True),
             "rsllm": ("07", "RSLLM_ARMS", rsllm.arm_changes, True),
             "bdlm": ("08", "BDLM_ARMS", bdlm.arm_changes, False)}


def command(notebook: str, cfg: dict) -> str:
    """The command that (re)makes a notebook's runs for this profile."""
    return f"python -m workbench run {notebook} --profile {cfg['PROFILE']}"


@dataclass
class Comparison:
    """Saved runs of every entry found for one parameter setting, aligned on common users."""
    cfg: dict
    users: list
    ranks: dict                    # label -> (users x seeds) ranks
    runs: dict                     # label -> [Run per seed]
    missing: dict = field(default_factory=dict)   # label -> the command that makes the run
    reference_commit: str | None = None

    def commits(self, label: str) -> list[str]:
        """The short commits an entry's runs were made at."""
        return sorted({(r.record.get("git_commit") or "unknown")[:7] for r in self.runs[label]})

    def flagged(self) -> dict:
        """Entries with a run from another commit than the reference (the most frequent among the compared runs)."""
        ref = (self.reference_commit or "")[:7]
        return {label: self.commits(label) for label in self.runs if self.commits(label) != [ref]}

    def table(self) -> pd.DataFrame:
        """Long CI table over the common users (seeds pooled per user)."""
        return M.ci_table(self.ranks, self.cfg["N_BOOTSTRAP"], self.cfg["SEED"])

    def seed_spread(self, metric: str = "NDCG@10") -> pd.Series:
        """Per entry, 'min-max' of the per-seed means of `metric` ('' with one seed)."""
        out = {}
        for label, r in self.ranks.items():
            means = [M.per_user_metrics(r[:, j])[metric].mean() for j in range(r.shape[1])]
            out[label] = f"{min(means):.3f}-{max(means):.3f}" if len(means) > 1 else ""
        return pd.Series(out, name=f"{metric} seed range")

    def paired(self, reference: str) -> pd.DataFrame:
        """Paired bootstrap of every entry against `reference` on the common users."""
        return M.paired_against(self.ranks, reference, self.cfg["N_BOOTSTRAP"], self.cfg["SEED"])

    def cost(self) -> pd.DataFrame:
        """Per entry (first seed's run): training and ranking time, prompt tokens, SFT rows, trainable parameters."""
        rows = []
        for label, runs in self.runs.items():
            rec = runs[0].record
            rows.append({"method": label, "fit s": _number(rec.get("fit_seconds"), 1),
                         "rank s/user": _number(_per_user(rec.get("rank_seconds"), rec.get("n_users")), 3),
                         "prompt tokens": _number(rec.get("prompt_tokens_mean"), 0),
                         "SFT rows": _number(rec.get("sft_samples"), 0),
                         "trainable parameters": _number(rec.get("trainable_parameters"), 0),
                         "device": rec.get("device"), "commit": ", ".join(self.commits(label))})
        return pd.DataFrame(rows).set_index("method")


def _number(value, digits: int) -> str:
    """A number with `digits` decimals and thousands separators; '–' for none."""
    return "–" if value is None else f"{value:,.{digits}f}"


def _per_user(seconds, users):
    return seconds / users if seconds is not None and users else None


def entry_runs(entry: Entry, cfg: dict, protocol, seeds) -> list[Run]:
    """The entry's saved run for every seed; FileNotFoundError if one is missing."""
    runs = []
    for seed in seeds:
        run_cfg = config.override(cfg, SEED=seed, **dict(entry.changes))
        runs.append(load_run(method_run_id(entry.method, run_cfg, protocol, entry.run_name)))
    return runs


def entry_ranks(entry: Entry, run: Run) -> pd.Series:
    """Per-user ranks of an entry's run (a variant column for BDLM's models), indexed by user."""
    if entry.variant is None:
        return run.ranks.set_index("user_id")["rank"]
    path = run.folder / "variants.parquet"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: re-run notebook {NOTEBOOKS[entry.notebook]}")
    return pd.read_parquet(path).set_index("user_id")[entry.variant]


def collect(cfg: dict, protocol, entries=ENTRIES, seeds=None) -> Comparison:
    """Every entry's saved runs for `cfg` (METHOD_SEEDS unless `seeds`), aligned on the users all of them ranked."""
    seeds = list(seeds or cfg["METHOD_SEEDS"])
    found, missing = {}, {}
    for entry in entries:
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
    commits = Counter((r.record.get("git_commit") or "unknown") for rs in runs.values() for r in rs)
    return Comparison(cfg, users, ranks, runs, missing, commits.most_common(1)[0][0])


def ablation_config(cfg: dict, own_training: bool = True) -> dict:
    """The parameters every ablation arm shares: ABLATION_EVAL_USERS users, no generation, and (own_training)
    ABLATION_TRAIN_SAMPLES windows."""
    changes = {"LLM_EVAL_USERS": cfg["ABLATION_EVAL_USERS"], "GEN_EVAL_USERS": 0}
    if own_training:
        changes["LLM_TRAIN_SAMPLES"] = cfg["ABLATION_TRAIN_SAMPLES"]
    return config.override(cfg, **changes)


def ablation_summary(method: str, cfg: dict, protocol) -> tuple[pd.DataFrame | None, str]:
    """The summary CSV the method's ablation notebook saved for these parameters (found by its arms' run ids), or
    None and the command that makes it."""
    notebook, arms_param, changes, own = ABLATIONS[method]
    arm_cfg = ablation_config(cfg, own)
    ids = [method_run_id(method, config.override(arm_cfg, **changes(arm), SEED=seed), protocol, f"{method}-{arm}")
           for arm in cfg[arms_param] for seed in cfg["ABLATION_SEEDS"]]
    path = result_path(f"{method}-ablation-{cfg['PROFILE']}-{short_hash(sorted(ids))}.csv")
    if not path.exists():
        return None, command(notebook, cfg)
    return pd.read_csv(path, index_col="method"), path.name


def _cell(mean, low, high) -> str:
    return f"{mean:.3f} [{low:.3f}, {high:.3f}]"


def _markdown(frame: pd.DataFrame) -> str:
    """A DataFrame (index = first column) as a markdown table."""
    head = [frame.index.name or "", *map(str, frame.columns)]
    rows = [[str(i), *("–" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v) for v in row)]
            for i, row in zip(frame.index, frame.itertuples(index=False))]
    return "\n".join("| " + " | ".join(r) + " |" for r in [head, ["---"] * len(head), *rows])


def metric_table(comparison: Comparison) -> pd.DataFrame:
    """Mean [CI] per entry and metric, the seed range, and each entry's notebook and commit (flagged if another)."""
    long = comparison.table()
    wide = long.assign(cell=[_cell(m, lo, hi) for m, lo, hi in zip(long["mean"], long["ci_low"], long["ci_high"])])
    wide = wide.pivot(index="method", columns="metric", values="cell").reindex(list(comparison.ranks))[list(M.METRICS)]
    flagged = comparison.flagged()
    by_label = {e.label: e for e in ENTRIES}
    if max(r.shape[1] for r in comparison.ranks.values()) > 1:
        wide["NDCG@10 seed range"] = comparison.seed_spread().reindex(wide.index).fillna("")
    wide["notebook"] = [by_label[label].notebook if label in by_label else "" for label in wide.index]
    wide["commit"] = [", ".join(comparison.commits(label)) + (" ⚑" if label in flagged else "")
                      for label in wide.index]
    wide.index.name = "method"
    return wide


def paired_table(comparison: Comparison, reference: str, metrics=("HR@1", "NDCG@10")) -> pd.DataFrame:
    """diff [CI] of every entry minus `reference` for a few metrics."""
    pairs = comparison.paired(reference)
    rows = {}
    for (name, metric), row in pairs.iterrows():
        if metric in metrics:
            rows.setdefault(name, {})[metric] = f"{row['diff']:+.3f} [{row['ci_low']:+.3f}, {row['ci_high']:+.3f}]"
    out = pd.DataFrame.from_dict(rows, orient="index")[list(metrics)]
    out.index.name = "difference"
    return out


def full_ranking_table(comparison: Comparison) -> pd.DataFrame | None:
    """Full-ranking metrics (all items, earlier items excluded) of the entries that report them, on all their users."""
    rows = {label: runs[0].record["full_ranking"] for label, runs in comparison.runs.items()
            if "full_ranking" in runs[0].record}
    if not rows:
        return None
    out = pd.DataFrame.from_dict(rows, orient="index")[["HR@10", "NDCG@10", "MRR"]].round(3)
    out.index.name = "method"
    return out


def render(comparison: Comparison, protocol) -> str:
    """results/REPORT.md: the comparison, paired differences, cost, full ranking, the ablations, what is missing."""
    cfg = comparison.cfg
    records = [r.record for rs in comparison.runs.values() for r in rs]
    devices = sorted({str(rec.get("device")) for rec in records})
    models = sorted({str(rec["model"]) for rec in records if rec.get("model")})
    lines = [f"<!-- generated by `python -m workbench report --profile {cfg['PROFILE']}` from the saved runs: "
             f"edit the code, not this text -->",
             f"### Every method on one protocol (profile `{cfg['PROFILE']}`)",
             "",
             f"Sampled ranking, {cfg['N_NEGATIVES'] + 1} candidates, leave-one-out test, data set {cfg['DATASET']}; "
             f"the {len(comparison.users)} users every row was evaluated on; training seeds {cfg['METHOD_SEEDS']} "
             f"(per-user metrics averaged over seeds); mean [95% bootstrap CI, {cfg['N_BOOTSTRAP']} resamples]. "
             f"LLM: {', '.join(models) or '–'}; device(s): {', '.join(devices)}. Runs from the commit most of them "
             f"share ({(comparison.reference_commit or 'unknown')[:7]}); ⚑ marks a run from another commit.",
             "", _markdown(metric_table(comparison)), ""]
    for reference in ("SASRec", "MKV LoRA"):
        if reference in comparison.ranks:
            lines += [f"Paired differences against {reference} (same users; a CI that includes 0 is no evidence of a "
                      f"difference):", "", _markdown(paired_table(comparison, reference)), ""]
    lines += ["Cost (first seed's run; time on the device named):", "", _markdown(comparison.cost()), ""]
    full = full_ranking_table(comparison)
    if full is not None:
        lines += ["Full ranking (all items, the user's earlier items excluded; every test user of the run):", "",
                  _markdown(full), ""]
    if comparison.missing:
        lines += ["Missing runs (make them with):", ""]
        lines += [f"- {label}: `{cmd}`" for label, cmd in comparison.missing.items()] + [""]
    lines += [f"### Ablations (profile `{cfg['PROFILE']}`, {cfg['ABLATION_EVAL_USERS']} users per arm, seeds "
              f"{cfg['ABLATION_SEEDS']}; mean over users and seeds)", ""]
    for method, (notebook, *_rest) in ABLATIONS.items():
        summary, where = ablation_summary(method, cfg, protocol)
        if summary is None:
            lines += [f"- {method}: no summary for these parameters; make it with `{where}`", ""]
            continue
        shown = summary[[c for c in ("HR@1", "HR@10", "NDCG@10", "MRR", "domain NDCG@10", "ensemble NDCG@10")
                         if c in summary.columns]].round(3)
        lines += [f"{method} (notebook {NOTEBOOKS[notebook]}, `results/{where}`):", "", _markdown(shown), ""]
    return "\n".join(lines).rstrip() + "\n"


BEGIN, END = "<!-- report:begin -->", "<!-- report:end -->"


def report_path(profile: str) -> Path:
    """results/REPORT.md for the default profile, results/REPORT-<profile>.md for the others."""
    name = "REPORT.md" if profile == config.DEFAULT_PROFILE else f"REPORT-{profile}.md"
    return results_dir() / name


def readme_block(readme: str) -> str:
    """The generated part of a README: the text between the report markers."""
    if BEGIN not in readme or END not in readme:
        raise ValueError(f"the README has no {BEGIN} ... {END} block for the report: add the two markers where the "
                         f"results go")
    return readme.split(BEGIN, 1)[1].split(END, 1)[0].strip("\n") + "\n"


def with_report(readme: str, text: str) -> str:
    """The README with its generated block replaced by `text`."""
    readme_block(readme)  # checks the markers
    head, rest = readme.split(BEGIN, 1)
    return f"{head}{BEGIN}\n{text.rstrip()}\n{END}{rest.split(END, 1)[1]}"


def write_report(cfg: dict, readme: Path | None = None) -> tuple[Path, dict]:
    """Write the report for resolved parameters from their saved runs (and into `readme`'s generated block); returns
    the path and the missing entries with their commands."""
    from .data.protocol import load_protocol
    protocol = load_protocol(cfg)
    comparison = collect(cfg, protocol)
    text = render(comparison, protocol)
    path = atomic_write(report_path(cfg["PROFILE"]), lambda tmp: tmp.write_text(text))
    if readme is not None:
        readme = Path(readme)
        updated = with_report(readme.read_text(), text)
        atomic_write(readme, lambda tmp: tmp.write_text(updated))
    return path, comparison.missing
