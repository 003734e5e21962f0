"""Figures people can read in a notebook column: one colour per method everywhere, chance lines, CIs, the run named.

Every saved figure carries a footer naming the profile, seed, device, commit and each parameter that differs from the
profile (set by `workbench.start`); PNG (and SVG) go to figures/ when refreshing the committed outputs, else to
runs/scratch/figures (see outputs.py).  Figures stay within ~10 inches (one JupyterLab column at 100 dpi).

Longer than 300 lines: one short function per figure kind, sharing one style.
"""
from __future__ import annotations

import textwrap
import zlib
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.ticker import MaxNLocator

from .. import outputs
from ..metrics import chance_level

FIGURES_ENV = "WORKBENCH_FIGURES"
WIDTH = 10.0  # inches: the widest figure that a notebook column shows at full size
# a fixed colour per method, matched by the first keyword found in a series label (lower case), in this order
METHOD_COLOURS = (
    ("zero-shot", "#7f7f7f"), ("popularity", "#bcbd22"), ("sasrec", "#1f77b4"), ("gru4rec", "#17becf"),
    ("trsr", "#2ca02c"), ("rsllm", "#9467bd"), ("bdlm domain", "#8b1a1a"), ("bdlm ensemble", "#f08080"),
    ("bdlm", "#d62728"), ("mkv", "#ff7f0e"), ("mf", "#8c564b"),
)
# colours for labels that name no method (arms, groups): distinct from each other and from the methods' above
OTHER_COLOURS = ("#e377c2", "#8c564b", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd")
_CONTEXT: dict = {}


def figures_dir() -> Path:
    """$WORKBENCH_FIGURES, else figures/ when refreshing the committed outputs, else runs/scratch/figures."""
    path = outputs.write_dir("figures", FIGURES_ENV)
    path.mkdir(parents=True, exist_ok=True)
    return path


def setup(cfg: dict | None = None, commit: str | None = None) -> None:
    """One readable style for every notebook; `cfg` (resolved parameters) names the run in every figure's footer."""
    sns.set_theme(context="notebook", style="whitegrid", font_scale=1.0)
    matplotlib.rcParams.update({"figure.dpi": 100, "savefig.dpi": 150, "savefig.bbox": "tight",
                                "svg.hashsalt": "workbench", "axes.titleweight": "bold"})
    _CONTEXT.clear()
    if cfg is not None:
        _CONTEXT.update(footer=run_footer(cfg, commit))


def run_footer(cfg: dict, commit: str | None = None) -> str:
    """'profile cpu · seed 0 · device cpu · commit abc1234 · changed: HISTORY_LEN=20' for a resolved cfg."""
    from .. import config, process
    changed = [f"{k}={cfg[k]}" for k in config.changed_parameters(cfg)]
    parts = [f"profile {cfg['PROFILE']}", f"seed {cfg['SEED']}", f"device {cfg.get('DEVICE') or 'cpu'}"]
    if commit:
        parts.append(f"commit {process.short_commit(commit)}")
    parts.append(f"changed from the profile: {', '.join(changed)}" if changed else "profile defaults")
    return " · ".join(parts)


NEUTRAL = "#6f7f90"  # bars of rows that name no method (ablation arms): the row label says what they are


def colour_of(label: str, others: dict | None = None, neutral: bool = False) -> str:
    """The fixed colour of the method a label names; labels naming none get NEUTRAL (`neutral`) or the next unused
    OTHER_COLOURS entry (`others` remembers them within one figure)."""
    low = str(label).lower()
    for key, colour in METHOD_COLOURS:
        if key in low.replace("-", "") or key in low:
            return colour
    if neutral:
        return NEUTRAL
    others = {} if others is None else others
    if label not in others:
        free = [c for c in OTHER_COLOURS if c not in others.values()]
        others[label] = free[0] if free else OTHER_COLOURS[zlib.crc32(str(label).encode()) % len(OTHER_COLOURS)]
    return others[label]


def _below_everything(fig) -> float:
    """The figure-coordinate y just below every axes and text drawn so far."""
    fig.canvas.draw()
    renderer, inverse = fig.canvas.get_renderer(), fig.transFigure.inverted()
    boxes = [a.get_tightbbox(renderer) for a in fig.axes] + \
        [t.get_window_extent(renderer) for t in [*fig.texts, *fig.legends]]
    return min([0.0] + [inverse.transform(b)[0][1] for b in boxes if b is not None])


def add_note(fig, note: str) -> None:
    """A grey footnote under everything already in the figure (never over the axis labels), wrapped to its width."""
    if note:
        chars = int(fig.get_size_inches()[0] * 14)  # 8-point text: about 14 characters per inch
        fig.text(0.01, _below_everything(fig) - 0.01, "\n".join(textwrap.wrap(note, chars)), fontsize=8, ha="left",
                 va="top", color="0.35")


def _titled(fig, title: str) -> None:
    """The figure's title above every panel title (tight_layout alone lets long panel titles run into it)."""
    fig.tight_layout()
    if title:
        top = max(a.get_tightbbox(fig.canvas.get_renderer()).transformed(fig.transFigure.inverted()).y1
                  for a in fig.axes)
        fig.suptitle(title, y=top + 0.02, va="bottom")


def save(fig, name: str, svg: bool = False) -> Path:
    """Add the run's footer (profile, seed, device, commit, changed parameters), write figures/<name>.png (and .svg)
    and return the PNG path."""
    if _CONTEXT.get("footer") and not getattr(fig, "_workbench_footer", False):
        add_note(fig, _CONTEXT["footer"])
        fig._workbench_footer = True
    path = figures_dir() / f"{name}.png"
    fig.savefig(path, metadata={"Software": None}, bbox_inches="tight")
    if svg:
        fig.savefig(path.with_suffix(".svg"), metadata={"Date": None}, bbox_inches="tight")
    return path


def _integer_steps(*axes) -> None:
    """Step, epoch and round axes tick at whole numbers only."""
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def metric_bars(long: pd.DataFrame, metrics=("HR@1", "HR@10", "NDCG@10"), title: str = "", note: str = "",
                n_candidates: int = 20):
    """One panel per metric, one horizontal bar per method (labelled on the axis, so any number of methods stays
    readable) with its 95% CI, a dot at the mean (visible at 0) and a dashed line at a random ranker's level; from
    metrics.ci_table output."""
    data = long[long["metric"].isin(metrics)]
    methods = list(dict.fromkeys(data["method"]))
    colours = [colour_of(m, neutral=True) for m in methods]
    height = 1.2 + 0.32 * len(methods)
    fig, axes = plt.subplots(1, len(metrics), figsize=(WIDTH, height), sharey=True, squeeze=False)
    y = np.arange(len(methods))[::-1]
    for ax, metric in zip(axes[0], metrics):
        rows = data[data["metric"] == metric].set_index("method").reindex(methods)
        ax.barh(y, rows["mean"], 0.7, color=colours, alpha=0.85)
        ax.errorbar(rows["mean"], y, xerr=[rows["mean"] - rows["ci_low"], rows["ci_high"] - rows["mean"]],
                    fmt="o", color="0.15", markersize=3.5, capsize=2.5, linewidth=1)
        ax.axvline(chance_level(metric, n_candidates), color="0.3", linestyle="--", linewidth=1)
        ax.set(xlim=(0, 1), title=metric, xlabel="mean over users (95% CI)")
        ax.set_yticks(y, methods)
        ax.grid(axis="y", visible=False)
    _titled(fig, title)
    add_note(fig, "dashed line: a random ranker" + (f"; {note}" if note else f"; sampled ranking, {n_candidates} "
                                                     f"candidates"))
    return fig


def training_curves(logs: dict, metric: str = "valid_ndcg10"):
    """Training loss and validation metric per epoch, one line per model."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for name, log in logs.items():
        if log is None or len(log) == 0:
            continue
        axes[0].plot(log["epoch"], log["train_loss"], marker=".", label=name, color=colour_of(name))
        axes[1].plot(log["epoch"], log[metric], marker=".", label=name, color=colour_of(name))
    axes[0].set(xlabel="epoch", ylabel="cross-entropy", title="Training loss")
    axes[1].set(xlabel="epoch", ylabel=metric.replace("valid_ndcg10", "NDCG@10"), title="Validation (sampled, 20 candidates)")
    axes[1].legend(frameon=False)
    _integer_steps(*axes)
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
    ax.legend(fontsize=8, framealpha=0.9)
    _integer_steps(ax)
    return fig


def position_bias(tables: dict, n_candidates: int, title: str = "HR@1 by where the target is listed"):
    """HR@1 per target position (1 = listed first) under the stored order and, where more orders were scored,
    order-averaged, one panel per model; bars (right axis) count the users per position, the dotted line is a random
    ranker's 1/n."""
    fig, axes = plt.subplots(1, len(tables), figsize=(min(WIDTH, 5 * len(tables)), 3.6), sharey=True, squeeze=False)
    for ax, (name, t) in zip(axes[0], tables.items()):
        counts = ax.twinx()
        counts.bar(t.index, t["users"], color="0.85", width=0.8, zorder=0)
        counts.set_ylabel("users", color="0.5")
        counts.set_ylim(0, t["users"].max() * 3)  # bars stay in the lower third, under the lines
        counts.yaxis.set_major_locator(MaxNLocator(integer=True))
        counts.grid(False)
        ax.set_zorder(counts.get_zorder() + 1)
        ax.patch.set_visible(False)
        one_order = np.allclose(t["hr1_stored_order"], t["hr1_order_averaged"], equal_nan=True)
        ax.plot(t.index, t["hr1_stored_order"], marker="o", color=colour_of(name),
                label="stored order (the only order scored)" if one_order else "stored order only")
        if not one_order:
            ax.plot(t.index, t["hr1_order_averaged"], marker="s", color="0.2", label="order-averaged")
        ax.axhline(1 / n_candidates, color="0.4", linestyle=":", label="random")
        ax.set_xticks(range(1, n_candidates + 1, max(1, n_candidates // 10)))
        ax.set(xlabel="target's listed position (1 = first)", ylabel="HR@1", title=name, xlim=(0.4, n_candidates + 0.6))
    axes[0][0].legend(frameon=False, fontsize=8)
    _titled(fig, title)
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
    fig, axes = plt.subplots(1, 2, figsize=(WIDTH, 3.6))
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
            ax.legend(fontsize=8, framealpha=0.85)
    _integer_steps(*axes)
    _titled(fig, title)
    return fig


def by_group(tables: dict, metric: str = "NDCG@10", title: str = "", note: str = "", n_candidates: int = 20):
    """Mean metric per user group with its 95% CI: one panel per grouping, one row per method, one bar colour per
    group (user counts in the legend), a dashed line at a random ranker's level; from {grouping name:
    metrics.by_group output}."""
    first = next(iter(tables.values()))
    methods = list(dict.fromkeys(first["method"]))
    height = max(3.0, 1.4 + 0.45 * len(methods))
    fig, axes = plt.subplots(1, len(tables), figsize=(min(WIDTH, 3 + 4.5 * len(tables)), height), sharey=True,
                             squeeze=False)
    y = np.arange(len(methods))[::-1]
    for ax, (grouping, frame) in zip(axes[0], tables.items()):
        groups = list(dict.fromkeys(frame["group"]))
        shades = sns.color_palette("crest", len(groups))
        width = 0.8 / len(groups)
        for j, group in enumerate(groups):
            rows = frame[frame["group"] == group].set_index("method").reindex(methods)
            pos = y + ((len(groups) - 1) / 2 - j) * width
            users = int(rows["users"].iloc[0])
            ax.barh(pos, rows["mean"], width, color=shades[j], label=f"{group} ({users} users)")
            if {"ci_low", "ci_high"} <= set(rows.columns):
                ax.errorbar(rows["mean"], pos, xerr=[rows["mean"] - rows["ci_low"], rows["ci_high"] - rows["mean"]],
                            fmt="o", color="0.15", markersize=2.5, capsize=1.5, linewidth=0.8)
        ax.axvline(chance_level(metric, n_candidates), color="0.3", linestyle="--", linewidth=1)
        ax.set(xlim=(0, 1), xlabel=f"{metric} (mean over users, 95% CI)", title=textwrap.fill(grouping, 40))
        ax.set_yticks(y, methods)
        ax.grid(axis="y", visible=False)
    _titled(fig, title)
    renderer, inverse = fig.canvas.get_renderer(), fig.transFigure.inverted()
    for ax in axes[0]:  # each grouping's legend under its own panel, below its axis label
        box = ax.get_tightbbox(renderer).transformed(inverse)
        fig.legend(*ax.get_legend_handles_labels(), loc="upper left", bbox_to_anchor=(box.x0, box.y0 - 0.01),
                   frameon=False, fontsize=8)
    add_note(fig, "dashed line: a random ranker; groups of few users have wide CIs" + (f"; {note}" if note else ""))
    return fig


def rounds(table: pd.DataFrame, title: str = "Collaborative rounds", note: str = ""):
    """Per round (0 = each model trained alone): validation NDCG@10 of each model (`*_valid_ndcg10` columns), and the
    mean training terms (`llm_loss*`, `domain_loss*` columns; none in round 0)."""
    fig, axes = plt.subplots(1, 2, figsize=(WIDTH, 3.6))
    for column in (c for c in table.columns if c.endswith("_valid_ndcg10")):
        axes[0].plot(table["round"], table[column], marker="o", label=column.removesuffix("_valid_ndcg10"))
    for column in (c for c in table.columns if c.startswith(("llm_loss", "domain_loss"))):
        if table[column].notna().any():
            axes[1].plot(table["round"], table[column], marker="o", label=column.replace("_", " "))
    axes[0].set(xlabel="round", ylabel="NDCG@10", title="Validation (sampled, 20 candidates)", ylim=(0, 1))
    axes[1].set(xlabel="round", ylabel="mean over the round", title="Training terms (KL terms unweighted)")
    axes[0].axhline(chance_level("NDCG@10", 20), color="0.3", linestyle="--", linewidth=1, label="random ranker")
    for ax in axes:
        ax.set_xticks(list(table["round"]))
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, framealpha=0.9)  # framed: it may sit over a line
    _titled(fig, title)
    add_note(fig, note)
    return fig


def cost_accuracy(table: pd.DataFrame, cost: pd.DataFrame, metric: str = "NDCG@10", title: str = "", note: str = ""):
    """Accuracy (mean and 95% CI of `metric`, from a long CI table) against training time, ranking time per user and
    trainable parameters, one marker per method (from `report.Comparison.cost`); values under the axis floor (1 ms,
    1 parameter) are drawn at it."""
    rows = table[table["metric"] == metric].set_index("method")
    number = lambda v: float(str(v).replace(",", "")) if str(v) not in ("–", "None", "nan") else np.nan
    others: dict = {}
    colours = [colour_of(m, others) for m in rows.index]
    panels = [("fit s", "training time (s)", 1e-3), ("rank s/user", "ranking time per user (s)", 1e-3),
              ("trainable parameters", "trainable parameters", 1)]
    fig, axes = plt.subplots(1, len(panels), figsize=(WIDTH, 3.8), sharey=True)
    for ax, (column, label, floor) in zip(axes, panels):
        for i, method in enumerate(rows.index):
            x = max(number(cost.loc[method, column]), floor) if method in cost.index else np.nan
            r = rows.loc[method]
            ax.errorbar(x, r["mean"], yerr=[[r["mean"] - r["ci_low"]], [r["ci_high"] - r["mean"]]], color=colours[i],
                        fmt="osD^v<>ph*P"[i % 11], markersize=7, capsize=3, label=method, alpha=0.9)
        ax.axhline(chance_level(metric, 20), color="0.3", linestyle="--", linewidth=1)
        ax.set(xscale="log", xlabel=f"{label}\n(log scale)", ylim=(0, 1))
    axes[0].set_ylabel(f"{metric} (mean, 95% CI)")
    _titled(fig, title)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, frameon=False, loc="upper center", bbox_to_anchor=(0.5, _below_everything(fig) - 0.01),
               ncol=4, fontsize=9)
    add_note(fig, "dashed line: a random ranker" + (f"; {note}" if note else ""))
    return fig
