"""Figures people can read: labelled axes, CIs drawn, the protocol named; saved as PNG (and SVG) under figures/."""
from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

FIGURES_ENV = "WORKBENCH_FIGURES"


def figures_dir() -> Path:
    """$WORKBENCH_FIGURES, else figures/ at the repository root."""
    path = Path(os.environ.get(FIGURES_ENV) or Path(__file__).resolve().parent.parent / "figures")
    path.mkdir(parents=True, exist_ok=True)
    return path


def setup() -> None:
    """One readable style for every notebook."""
    sns.set_theme(context="notebook", style="whitegrid", font_scale=1.0)
    matplotlib.rcParams.update({"figure.dpi": 100, "savefig.dpi": 150, "savefig.bbox": "tight",
                                "svg.hashsalt": "workbench", "axes.titleweight": "bold"})


def save(fig, name: str, svg: bool = False) -> Path:
    """Write figures/<name>.png (and .svg) and return the PNG path."""
    path = figures_dir() / f"{name}.png"
    fig.savefig(path)
    if svg:
        fig.savefig(path.with_suffix(".svg"), metadata={"Date": None})
    return path


def metric_bars(long: pd.DataFrame, metrics=("HR@1", "HR@10", "NDCG@10"), title: str = "", note: str = ""):
    """Grouped bars of mean metrics per method with 95% CI error bars, from metrics.ci_table output."""
    data = long[long["metric"].isin(metrics)]
    methods = list(dict.fromkeys(data["method"]))
    fig, ax = plt.subplots(figsize=(2.5 + 1.3 * len(methods) * len(metrics) / 3, 4))
    width = 0.8 / len(methods)
    palette = sns.color_palette("colorblind", len(methods))
    for i, method in enumerate(methods):
        rows = data[data["method"] == method].set_index("metric").reindex(list(metrics))
        x = [j + (i - (len(methods) - 1) / 2) * width for j in range(len(metrics))]
        ax.bar(x, rows["mean"], width, label=method, color=palette[i],
               yerr=[rows["mean"] - rows["ci_low"], rows["ci_high"] - rows["mean"]], capsize=3)
    ax.set_xticks(range(len(metrics)), metrics)
    ax.set_ylabel("score (mean over users, 95% CI)")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    if note:
        fig.text(0.01, -0.02, note, fontsize=8, ha="left", va="top", color="0.35")
    return fig


def training_curves(logs: dict, metric: str = "valid_ndcg10"):
    """Training loss and validation metric per epoch, one line per model."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for name, log in logs.items():
        if log is None or len(log) == 0:
            continue
        axes[0].plot(log["epoch"], log["train_loss"], marker=".", label=name)
        axes[1].plot(log["epoch"], log[metric], marker=".", label=name)
    axes[0].set(xlabel="epoch", ylabel="cross-entropy", title="Training loss")
    axes[1].set(xlabel="epoch", ylabel=metric.replace("valid_ndcg10", "NDCG@10"), title="Validation (sampled, 20 candidates)")
    axes[1].legend(frameon=False)
    fig.tight_layout()
    return fig


def loss_curve(history: pd.DataFrame, title: str = "SFT loss (completion tokens)"):
    """Training loss per optimisation step with a moving average."""
    fig, ax = plt.subplots(figsize=(6, 3.4))
    ax.plot(history["step"], history["loss"], color="C0", alpha=0.4, marker=".", label="per step")
    window = max(3, len(history) // 10)
    if len(history) >= 2 * window:
        ax.plot(history["step"], history["loss"].rolling(window, min_periods=1).mean(), color="C0",
                label=f"moving mean of {window} steps")
    ax.set(xlabel="optimisation step", ylabel="cross-entropy", title=title)
    ax.legend(frameon=False)
    return fig


def position_bias(tables: dict, n_candidates: int, title: str = "HR@1 by where the target is listed"):
    """HR@1 per target position (1 = listed first) under the stored order and order-averaged, one panel per model;
    bars (right axis) count the users per position, the dotted line is a random ranker's 1/n."""
    fig, axes = plt.subplots(1, len(tables), figsize=(5.5 * len(tables), 3.6), sharey=True, squeeze=False)
    for ax, (name, t) in zip(axes[0], tables.items()):
        counts = ax.twinx()
        counts.bar(t.index, t["users"], color="0.85", width=0.8, zorder=0)
        counts.set_ylabel("users", color="0.5")
        counts.set_ylim(0, t["users"].max() * 3)  # bars stay in the lower third, under the lines
        counts.grid(False)
        ax.set_zorder(counts.get_zorder() + 1)
        ax.patch.set_visible(False)
        ax.plot(t.index, t["hr1_stored_order"], marker="o", label="stored order only")
        ax.plot(t.index, t["hr1_order_averaged"], marker="s", label="order-averaged")
        ax.axhline(1 / n_candidates, color="0.4", linestyle=":", label="random")
        ax.set_xticks(range(1, n_candidates + 1, max(1, n_candidates // 10)))
        ax.set(xlabel="target's position in the listed candidates (1 = first)", ylabel="HR@1", title=name,
               xlim=(0.4, n_candidates + 0.6))
    axes[0][0].legend(frameon=False)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def token_lengths(lengths: dict, title: str = "Prompt tokens per user", limit: int | None = None):
    """Overlaid histograms of prompt token counts, one per prompt variant; a dashed line marks `limit` if given."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    palette = sns.color_palette("colorblind", len(lengths))
    top = max(max(v) for v in lengths.values())
    bins = range(0, int(top) + 50, max(10, int(top) // 40))
    for color, (name, values) in zip(palette, lengths.items()):
        ax.hist(values, bins=bins, alpha=0.55, color=color, label=f"{name} (median {pd.Series(values).median():.0f})")
    if limit:
        ax.axvline(limit, color="0.3", linestyle="--", label=f"MAX_PROMPT_TOKENS = {limit}")
    ax.set(xlabel="prompt tokens", ylabel="users", title=title)
    ax.legend(frameon=False)
    fig.tight_layout()
    return fig


def loss_terms(history: pd.DataFrame, title: str = "SFT loss by term"):
    """The logged loss and each separately logged term (`loss_*` columns) per step; a dashed line where a new
    training stage starts (`stage` column)."""
    terms = [c for c in history.columns if c.startswith("loss_")]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    axes[0].plot(history["step"], history["loss"], marker=".", label="total (optimised)")
    if "loss_lm" in history:
        axes[0].plot(history["step"], history["loss_lm"], marker=".", label="LM (completion tokens)")
    for term in (t for t in terms if t != "loss_lm"):
        axes[1].plot(history["step"], history[term], marker=".", label=term.removeprefix("loss_").replace("_", " "))
    if "stage" in history and history["stage"].nunique() > 1:
        first = history.loc[history["stage"] == history["stage"].max(), "step"].min()
        for ax in axes:
            ax.axvline(first - 0.5, color="0.4", linestyle="--", label=f"stage {history['stage'].max()} starts")
    axes[0].set(xlabel="optimisation step", ylabel="cross-entropy", title="LM loss")
    axes[1].set(xlabel="optimisation step", ylabel="InfoNCE", title="contrastive terms (unweighted)")
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(frameon=False)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def by_group(tables: dict, metric: str = "NDCG@10", title: str = "", note: str = ""):
    """Mean metric per user group, one panel per grouping and one bar per method, user counts under the groups;
    from {grouping name: metrics.by_group output}."""
    fig, axes = plt.subplots(1, len(tables), figsize=(5.5 * len(tables), 3.8), sharey=True, squeeze=False)
    for ax, (grouping, frame) in zip(axes[0], tables.items()):
        groups = list(dict.fromkeys(frame["group"]))
        methods = list(dict.fromkeys(frame["method"]))
        width = 0.8 / len(methods)
        for i, method in enumerate(methods):
            rows = frame[frame["method"] == method].set_index("group").reindex(groups)
            ax.bar([j + (i - (len(methods) - 1) / 2) * width for j in range(len(groups))], rows["mean"], width,
                   label=method, color=sns.color_palette("colorblind", len(methods))[i])
        users = frame.drop_duplicates("group").set_index("group")["users"].reindex(groups)
        ax.set_xticks(range(len(groups)), [f"{g}\n({n} users)" for g, n in zip(groups, users)])
        ax.set(xlabel=grouping, ylabel=f"{metric} (mean over users)", ylim=(0, 1))
    axes[0][-1].legend(frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.suptitle(title)
    if note:
        fig.text(0.01, -0.02, note, fontsize=8, ha="left", va="top", color="0.35")
    fig.tight_layout()
    return fig


def rounds(table: pd.DataFrame, title: str = "Collaborative rounds", note: str = ""):
    """Per round (0 = each model trained alone): validation NDCG@10 of each model (`*_valid_ndcg10` columns), and the
    mean training terms (`llm_loss*`, `domain_loss*` columns; none in round 0)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    for column in (c for c in table.columns if c.endswith("_valid_ndcg10")):
        axes[0].plot(table["round"], table[column], marker="o", label=column.removesuffix("_valid_ndcg10"))
    for column in (c for c in table.columns if c.startswith(("llm_loss", "domain_loss"))):
        if table[column].notna().any():
            axes[1].plot(table["round"], table[column], marker="o", label=column.replace("_", " "))
    axes[0].set(xlabel="round", ylabel="NDCG@10", title="Validation (sampled, 20 candidates)", ylim=(0, 1))
    axes[1].set(xlabel="round", ylabel="mean over the round", title="Training terms (KL terms unweighted)")
    for ax in axes:
        ax.set_xticks(list(table["round"]))
        if ax.get_legend_handles_labels()[0]:
            ax.legend(frameon=False)
    fig.suptitle(title)
    if note:
        fig.text(0.01, -0.02, note, fontsize=8, ha="left", va="top", color="0.35")
    fig.tight_layout()
    return fig


def cost_accuracy(table: pd.DataFrame, cost: pd.DataFrame, metric: str = "NDCG@10", title: str = "", note: str = ""):
    """Accuracy (mean and 95% CI of `metric`, from a long CI table) against training time, ranking time per user and
    trainable parameters, one marker per method (from `report.Comparison.cost`); values under the axis floor (1 ms,
    1 parameter) are drawn at it."""
    rows = table[table["metric"] == metric].set_index("method")
    number = lambda v: float(str(v).replace(",", "")) if str(v) not in ("–", "None", "nan") else np.nan
    colours = sns.color_palette("colorblind", len(rows))
    panels = [("fit s", "training time (s)", 1e-3), ("rank s/user", "ranking time per user (s)", 1e-3),
              ("trainable parameters", "trainable parameters", 1)]
    fig, axes = plt.subplots(1, len(panels), figsize=(15, 4.2), sharey=True)
    for ax, (column, label, floor) in zip(axes, panels):
        for i, method in enumerate(rows.index):
            x = max(number(cost.loc[method, column]), floor) if method in cost.index else np.nan
            r = rows.loc[method]
            ax.errorbar(x, r["mean"], yerr=[[r["mean"] - r["ci_low"]], [r["ci_high"] - r["mean"]]], color=colours[i],
                        fmt="osD^v<>ph*"[i % 10], markersize=7, capsize=3, label=method, alpha=0.9)
        ax.set(xscale="log", xlabel=f"{label}, log scale", ylabel=f"{metric} (mean, 95% CI)", ylim=(0, 1))
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, frameon=False, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=9)
    fig.suptitle(title)
    if note:
        fig.text(0.01, -0.02, note, fontsize=8, ha="left", va="top", color="0.35")
    fig.tight_layout()
    return fig
