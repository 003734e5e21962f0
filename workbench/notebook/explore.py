"""Data exploration: the statistics and figures of notebook 01, as small functions over the tidy data model."""
from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..data.dataset import Dataset


def rating_distribution(data: Dataset):
    """Bar chart of the rating values."""
    counts = data.interactions["rating"].value_counts().sort_index()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.bar(counts.index.astype(str), counts.to_numpy(), color="C0")
    ax.set(xlabel="rating", ylabel="interactions", title="Ratings")
    return fig


def sequence_lengths(data: Dataset):
    """Histogram of interactions per user (log x) with the median marked."""
    lengths = data.interactions.groupby("user_id").size()
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.hist(lengths, bins=np.logspace(np.log10(max(lengths.min(), 1)), np.log10(lengths.max()), 30), color="C1")
    ax.axvline(lengths.median(), color="k", ls="--", label=f"median {lengths.median():.0f}")
    ax.set(xscale="log", xlabel="interactions per user (log scale)", ylabel="users", title="Sequence lengths")
    ticks = [t for t in (10, 20, 50, 100, 200, 500, 1000, 2000) if lengths.min() <= t <= lengths.max()]
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.legend(frameon=False)
    return fig


def user_attributes(data: Dataset):
    """Age histogram, gender shares and the most common occupations."""
    users = data.users
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.4), gridspec_kw={"width_ratios": [2, 1, 3]})
    axes[0].hist(users["age"], bins=20, color="C2")
    axes[0].set(xlabel="age", ylabel="users", title="Age")
    gender = users["gender"].value_counts()
    axes[1].bar(gender.index, gender.to_numpy(), color="C4")
    axes[1].set(title="Gender", ylabel="users")
    occ = users["occupation"].value_counts().head(12)[::-1]
    axes[2].barh(occ.index, occ.to_numpy(), color="C5")
    axes[2].set(title="Occupation (top 12)", xlabel="users")
    fig.tight_layout()
    return fig


def genre_counts(data: Dataset) -> pd.DataFrame:
    """Items and interactions per genre (an item counts once per genre it has)."""
    items = data.items[["item_id", "genres"]].explode("genres").dropna()
    per_item = items.groupby("genres").size().rename("items")
    inter = data.interactions.merge(items, on="item_id").groupby("genres").size().rename("interactions")
    return pd.concat([per_item, inter], axis=1).fillna(0).astype(int).sort_values("interactions", ascending=False)


def genre_figure(data: Dataset):
    """Horizontal bars of interactions per genre."""
    counts = genre_counts(data)["interactions"][::-1]
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.barh(counts.index, counts.to_numpy(), color="C3")
    ax.set(xlabel="interactions", title="Genres")
    return fig


def long_tail(data: Dataset) -> dict:
    """Item popularity concentration: share of interactions held by the top 20% items, Gini coefficient."""
    counts = np.sort(data.interactions.groupby("item_id").size().to_numpy())[::-1]
    top = counts[: max(1, int(0.2 * len(counts)))].sum() / counts.sum()
    asc = counts[::-1].astype(float)
    gini = 1 - 2 * np.sum(np.cumsum(asc) / asc.sum()) / len(asc) + 1 / len(asc)
    return {"items_with_interactions": int(len(counts)), "top20pct_share": round(float(top), 3),
            "gini": round(float(gini), 3), "items_with_1_interaction": int((counts == 1).sum())}


def long_tail_figure(data: Dataset):
    """Interactions per item against popularity rank, log-log."""
    counts = np.sort(data.interactions.groupby("item_id").size().to_numpy())[::-1]
    fig, ax = plt.subplots(figsize=(6, 3.4))
    ax.loglog(np.arange(1, len(counts) + 1), counts, color="C0")
    stats = long_tail(data)
    ax.set(xlabel="item popularity rank (log)", ylabel="interactions (log)",
           title=f"Long tail: top 20% of items hold {stats['top20pct_share']:.0%} of interactions")
    return fig


def activity_over_time(data: Dataset):
    """Interactions per week over the collection period."""
    when = pd.to_datetime(data.interactions["timestamp"], unit="s")
    weekly = when.dt.to_period("W").dt.start_time.value_counts().sort_index()
    fig, ax = plt.subplots(figsize=(8, 3.2))
    ax.plot(weekly.index, weekly.to_numpy(), color="C0")
    ax.set(xlabel="week", ylabel="interactions", title="Activity over time")
    fig.autofmt_xdate()
    return fig


def tie_statistics(data: Dataset, min_interactions: int = 3) -> pd.DataFrame:
    """Per tie-break rule: share of test targets that share the previous item's timestamp, and their popularity.

    Shows why the rule matters: under item-id order, a same-second group ends with its largest id, and item id is
    anti-correlated with popularity.
    """
    from scipy.stats import spearmanr
    from ..data.splits import build_sequences, order_interactions
    counts = data.interactions["item_id"].value_counts()
    ordered = order_interactions(data.interactions)
    gaps = ordered.groupby("user_id")["timestamp"].diff()
    same = gaps[gaps.notna()].eq(0)  # each user's first rating has no predecessor
    rows = {}
    for rule in ("file_order", "item_id"):
        seqs = build_sequences(data.interactions, min_interactions, rule, report=False)
        last_two = order_interactions(data.interactions, rule).groupby("user_id").tail(2)
        tied = last_two.groupby("user_id")["timestamp"].agg(lambda t: t.nunique() == 1)
        targets = seqs["items"].map(lambda s: s[-1])
        rows[rule] = {"test target ties with previous item": round(float(tied.mean()), 3),
                      "test target popularity (median count)": float(counts.reindex(targets).median()),
                      "test target popularity (mean count)": round(float(counts.reindex(targets).mean()), 1)}
    rho = spearmanr(counts.index, counts.to_numpy()).statistic
    out = pd.DataFrame(rows)
    out.attrs["note"] = (f"{same.mean():.3f} of consecutive ratings share a timestamp; Spearman(item id, popularity) "
                         f"= {rho:.2f}")
    print(out.attrs["note"])
    return out


def protocol_checks(protocol) -> dict:
    """Checks of the fixed candidates against the split: sizes, targets present, negatives unseen, users dropped."""
    test, seen = protocol.test, dict(zip(protocol.seqs["user_id"], protocol.seqs["items"]))
    return {
        "users": len(protocol.split), "dropped_users": protocol.dropped_users, "tie_break": protocol.tie_break,
        "candidates_per_user": sorted(set(map(len, test["candidates"]))),
        "target_in_candidates": bool(all(t in c for t, c in zip(test["target"], test["candidates"]))),
        "negatives_unseen": bool(all(not (set(c) - {t}) & set(seen[u])
                                     for u, t, c in zip(test["user_id"], test["target"], test["candidates"]))),
        "train_items_min": int(protocol.split["train"].map(len).min()),
    }
