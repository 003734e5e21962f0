"""The learning curve's results as the report shows them: one row per combination (NDCG@10 and the paired gain over
its own zero-shot at each point) and where, if anywhere, a point crosses Popularity or SASRec on the same users.

The curve itself is a benchmark (`benchmarks/learning_curve.py`, hours on 2 cores); this module only reads its CSV.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ..results import result_path

CSV = "benchmarks/learning_curve.csv"
REFERENCES = {"popularity": "Popularity", "sasrec": "SASRec"}


def label(combo: str) -> str:
    """A combination as the figure and the table name it: 'RSLLM, sft, free prompt, LLM_LEARNING_RATE=2e-3'."""
    method, objective, form, *variant = combo.split(":")
    return ", ".join([method.upper(), objective, f"{form} prompt", *variant])


def _signed(mean, low, high) -> str:
    return f"{mean:+.3f} [{low:+.3f}, {high:+.3f}]"


def curve_table(done: pd.DataFrame) -> pd.DataFrame:
    """Combination x point: 'NDCG@10 (tuned − zero-shot [95% CI])', the zero-shot column its NDCG@10 alone; a point
    not measured is None (the table shows –)."""
    points = sorted(int(w) for w in done["windows"].unique())
    rows = {}
    for combo, group in done.groupby("combo", sort=False):
        cells = {}
        for w in points:
            hit = group[group["windows"] == w]
            if hit.empty:
                cells[w] = None
                continue
            r = hit.iloc[-1]
            cells[w] = (f"{r['ndcg10']:.3f}" if w == 0 else
                        f"{r['ndcg10']:.3f} ({_signed(r['vs_zeroshot'], r['vs_zeroshot_low'], r['vs_zeroshot_high'])})")
        rows[label(combo)] = cells
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.columns = ["zero-shot" if w == 0 else f"{w} windows" for w in points]
    table.index.name = "combination"
    return table


def crossings(done: pd.DataFrame) -> list[str]:
    """For each reference: the trained points whose paired NDCG@10 CI against it lies above 0, or the closest one."""
    trained = done[done["windows"] > 0]
    if trained.empty:
        return []
    lines = []
    for key, name in REFERENCES.items():
        above = trained[trained[f"vs_{key}_low"] > 0]
        if len(above):
            where = "; ".join(f"{label(r['combo'])} at {int(r['windows'])} windows "
                              f"({_signed(r[f'vs_{key}'], r[f'vs_{key}_low'], r[f'vs_{key}_high'])})"
                              for _, r in above.iterrows())
            lines.append(f"- Above {name} (paired CI above 0): {where}.")
            continue
        best = trained.loc[trained[f"vs_{key}"].idxmax()]
        lines.append(f"- No point crosses {name}; the closest, {label(best['combo'])} at {int(best['windows'])} "
                     f"windows, is {_signed(best[f'vs_{key}'], best[f'vs_{key}_low'], best[f'vs_{key}_high'])} "
                     f"against it.")
    return lines


def curve_summary(profile: str, csv: Path | None = None) -> tuple[str, pd.DataFrame, list[str]] | None:
    """The saved curve of `profile` for the report: its heading and setting, its table, where it crosses the
    references; None when no curve of that profile is saved."""
    csv = Path(csv) if csv is not None else result_path(CSV)
    setting = csv.with_suffix(".json")
    if not csv.exists() or not setting.exists():
        return None
    meta = json.loads(setting.read_text())
    done = pd.read_csv(csv)
    if meta.get("profile") != profile or done.empty:
        return None
    first = done.iloc[0]
    levels = {name: first["ndcg10"] - first[f"vs_{key}"] for key, name in REFERENCES.items()}
    intro = (f"Seed {meta.get('seed')}, {meta.get('model')}, {meta.get('device')}; the same {meta.get('users')} test "
             f"users at every point (Popularity NDCG@10 {levels['Popularity']:.3f}, SASRec {levels['SASRec']:.3f} on "
             f"them); learning rate {meta.get('LLM_LEARNING_RATE')} ({meta.get('LR_SCHEDULE')}) unless a row names "
             f"another; one training run per combination, its adapter ranked at each point (`results/{CSV}`). "
             f"NDCG@10 (tuned − its zero-shot, paired [95% CI]; – a point not run: a check, or a combination stopped "
             f"where it had gained nothing over its zero-shot):")
    return intro, curve_table(done), crossings(done)
