"""Ranking metrics from per-user target ranks (1 = best): HR@k, NDCG@k, MRR, bootstrap CIs, paired bootstrap.

Every table built from these is "sampled ranking, 20 candidates" unless it says "full ranking".
"""
from __future__ import annotations

import numpy as np
import pandas as pd

METRICS = ("HR@1", "HR@5", "HR@10", "NDCG@5", "NDCG@10", "MRR")


def ranks_from_scores(scores, target_index) -> np.ndarray:
    """1-based rank of each row's target among its scores (higher = better); ties count against the target."""
    scores = np.asarray(scores, dtype=float)
    target = scores[np.arange(len(scores)), np.asarray(target_index)]
    greater = (scores > target[:, None]).sum(axis=1)
    ties = (scores == target[:, None]).sum(axis=1) - 1
    nan = np.isnan(target)
    ranks = 1 + greater + ties
    ranks[nan] = scores.shape[1]  # an unscored target ranks last
    return ranks.astype(int)


def per_user_metrics(ranks) -> pd.DataFrame:
    """One row per user, one column per metric in METRICS; 2-D ranks (users x seeds) are averaged over seeds."""
    r = np.asarray(ranks, dtype=float)
    if r.ndim == 2:
        return sum(per_user_metrics(r[:, j]) for j in range(r.shape[1])) / r.shape[1]
    if r.size == 0:
        raise ValueError("no ranks to evaluate: the evaluation set is empty")
    if (r < 1).any():
        raise ValueError("ranks are 1-based: got a rank below 1")
    out = {}
    for name in METRICS:
        if name == "MRR":
            out[name] = 1.0 / r
            continue
        kind, k = name.split("@")
        hit = r <= int(k)
        out[name] = hit.astype(float) if kind == "HR" else np.where(hit, 1.0 / np.log2(r + 1), 0.0)
    return pd.DataFrame(out)


def chance_level(metric: str, n_candidates: int) -> float:
    """The expected value of `metric` for a random ranker (target rank uniform on 1..n_candidates)."""
    return float(per_user_metrics(np.arange(1, n_candidates + 1))[metric].mean())


def summarize(ranks) -> dict:
    """Mean of each metric over users."""
    return per_user_metrics(ranks).mean().to_dict()


def _bootstrap_indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def bootstrap_ci(ranks, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """Mean and percentile bootstrap CI (resampling users) for each metric; one row per metric."""
    per_user = per_user_metrics(ranks).to_numpy()
    idx = _bootstrap_indices(len(per_user), n_boot, seed)
    means = per_user[idx].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2], axis=0)
    return pd.DataFrame({"mean": per_user.mean(axis=0), "ci_low": lo, "ci_high": hi}, index=list(METRICS))


def paired_bootstrap(ranks_a, ranks_b, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """Difference A - B on the same users: mean, bootstrap CI and two-sided bootstrap p-value per metric."""
    a, b = per_user_metrics(ranks_a).to_numpy(), per_user_metrics(ranks_b).to_numpy()
    if a.shape != b.shape:
        raise ValueError(f"paired comparison needs the same users: got {len(a)} and {len(b)} ranks")
    diff = a - b
    idx = _bootstrap_indices(len(diff), n_boot, seed)
    boot = diff[idx].mean(axis=1)
    lo, hi = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2], axis=0)
    p = np.minimum(1.0, 2 * np.minimum((boot <= 0).mean(axis=0), (boot >= 0).mean(axis=0)))
    return pd.DataFrame({"diff": diff.mean(axis=0), "ci_low": lo, "ci_high": hi, "p_value": p}, index=list(METRICS))


def align_ranks(ranks_a: pd.DataFrame, ranks_b: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Ranks of two runs on their common users, in the same user order (for paired_bootstrap)."""
    both = ranks_a.merge(ranks_b, on="user_id", suffixes=("_a", "_b"))
    if both.empty:
        raise ValueError("the two runs share no users: compare runs made on the same candidates")
    return both["rank_a"].to_numpy(), both["rank_b"].to_numpy()


class NonFiniteScores(FloatingPointError):
    """Candidate scores with NaN or infinite values: ranks from them would mean nothing."""


def finite_scores(scores, who: str = "the model") -> np.ndarray:
    """The candidate scores as a float array, or NonFiniteScores if any is NaN or infinite (no ranks are made)."""
    array = np.asarray([np.asarray(s, dtype=float) for s in scores], dtype=float) if len(scores) else np.zeros((0, 0))
    bad = ~np.isfinite(array)
    if bad.any():
        rows = int(bad.any(axis=-1).sum()) if array.ndim > 1 else int(bad.sum())
        raise NonFiniteScores(f"{who} gave {int(bad.sum())} non-finite candidate score(s) (NaN or inf) for {rows} "
                              f"user(s): the model diverged or overflowed (lower the learning rate or LORA_ALPHA); "
                              f"no ranks were made or saved")
    return array


def candidate_ranks(view: pd.DataFrame, scores, who: str = "the model") -> pd.DataFrame:
    """Ranks of each user's target among its candidates, given finite scores aligned with view['candidates']."""
    scores = finite_scores(scores, who)
    target_index = [c.index(t) for c, t in zip(view["candidates"], view["target"])]
    return pd.DataFrame({"user_id": view["user_id"].to_numpy(), "rank": ranks_from_scores(scores, target_index)})


def ci_table(ranks_by_method: dict, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Long table (method, metric, mean, ci_low, ci_high) for several methods' ranks."""
    frames = [bootstrap_ci(r, n_boot, seed).rename_axis("metric").reset_index().assign(method=m)
              for m, r in ranks_by_method.items()]
    return pd.concat(frames, ignore_index=True)[["method", "metric", "mean", "ci_low", "ci_high"]]


def format_table(long: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """Wide display table: one row per method, cells 'mean [low, high]'."""
    cell = long.apply(lambda r: f"{r['mean']:.{digits}f} [{r['ci_low']:.{digits}f}, {r['ci_high']:.{digits}f}]", axis=1)
    wide = long.assign(cell=cell).pivot(index="method", columns="metric", values="cell")
    return wide.reindex(index=list(dict.fromkeys(long["method"])), columns=[m for m in METRICS if m in wide.columns])


def paired_against(ranks_by_method: dict, reference: str, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Paired bootstrap of every method against `reference`; all rank arrays must hold the same users in one order."""
    return pd.concat({f"{name} - {reference}": paired_bootstrap(r, ranks_by_method[reference], n_boot, seed)
                      for name, r in ranks_by_method.items() if name != reference})


def by_group(ranks_by_method: dict, groups, metric: str = "NDCG@10", n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Mean per-user `metric` of each method within each group of users (rank arrays and `groups` aligned by user),
    with a bootstrap 95% CI over the group's users: long table (group, method, mean, ci_low, ci_high, users), groups in
    their categorical order."""
    groups = pd.Series(pd.Categorical(groups) if not isinstance(groups, pd.Categorical) else groups)
    lengths = {name: len(r) for name, r in ranks_by_method.items()}
    if any(n != len(groups) for n in lengths.values()):
        raise ValueError(f"{len(groups)} group labels but ranks of {lengths} users: align them by user")
    rows = []
    for name, r in ranks_by_method.items():
        values = per_user_metrics(np.asarray(r))[metric].to_numpy()
        for group in groups.cat.categories:
            v = values[(groups == group).to_numpy()]
            lo = hi = np.nan
            if len(v):
                means = v[_bootstrap_indices(len(v), n_boot, seed)].mean(axis=1)
                lo, hi = np.quantile(means, [0.025, 0.975])
            rows.append({"group": group, "method": name, "mean": v.mean() if len(v) else np.nan,
                         "ci_low": lo, "ci_high": hi, "users": len(v)})
    out = pd.DataFrame(rows)
    out["group"] = pd.Categorical(out["group"], categories=groups.cat.categories, ordered=groups.cat.ordered)
    return out


def quantile_groups(values, q: int = 3, unit: str = "") -> pd.Categorical:
    """Values cut at their quantiles into at most q ordered groups labelled by range ('12-40 items')."""
    values = pd.Series(np.asarray(values))
    codes, edges = pd.qcut(values, q, labels=False, retbins=True, duplicates="drop")
    low = [int(np.floor(edges[0]))] + [int(np.floor(e)) + 1 for e in edges[1:-1]]
    labels = [f"{a}-{int(np.floor(b))}{' ' + unit if unit else ''}" for a, b in zip(low, edges[1:])]
    return pd.Categorical.from_codes(codes.to_numpy().astype(int), labels, ordered=True)
