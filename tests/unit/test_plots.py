"""Figures that read at a glance: fixed method colours, one column wide, chance lines, CIs, the run in the footer."""
import matplotlib.pyplot as plt
import numpy as np
import pytest

from workbench import config, metrics
from workbench.notebook import plots

METHODS = ["Popularity", "SASRec", "GRU4Rec", "SmolLM2 zero-shot", "MKV LoRA", "LLM-TRSR", "RSLLM", "BDLM LLM"]


def _table(names, seed=0):
    rng = np.random.default_rng(seed)
    return metrics.ci_table({n: rng.integers(1, 21, size=16) for n in names}, n_boot=100)


def test_chance_levels_are_a_random_rankers_expectation():
    assert metrics.chance_level("HR@1", 20) == pytest.approx(0.05)
    assert metrics.chance_level("HR@10", 20) == pytest.approx(0.5)
    assert metrics.chance_level("NDCG@10", 20) == pytest.approx(0.2271, abs=1e-4)
    assert metrics.chance_level("MRR", 20) == pytest.approx(sum(1 / r for r in range(1, 21)) / 20)


def test_a_method_keeps_its_colour_from_figure_to_figure():
    """SASRec was orange in one figure and blue in the next: colours came from each figure's order."""
    first = plots.metric_bars(_table(METHODS))
    second = plots.metric_bars(_table(["SASRec", "MKV LoRA"]))
    colour = lambda fig, row: fig.axes[0].patches[row].get_facecolor()[:3]
    assert colour(first, 1) == colour(second, 0) == pytest.approx(plt.matplotlib.colors.to_rgb(plots.colour_of("SASRec")))
    assert len({plots.colour_of(m) for m in METHODS[:7]}) == 7
    others = {}
    arms = [plots.colour_of(a, others) for a in ("none · llm", "one_way · ensemble", "mutual · domain")]
    assert len(set(arms)) == 3  # labels that name no method never share a colour within a figure


def test_many_series_stay_one_column_wide_with_a_chance_line_and_visible_zeros():
    """16 ablation rows made a 3,469 px figure with 6 px text; each row is now labelled on its own axis line."""
    names = [f"{arm} · {model}" for arm in ("none", "frozen", "one_way", "mutual") for model in ("llm", "domain",
                                                                                                 "ensemble")]
    table = _table(names)
    table.loc[table["metric"] == "HR@1", ["mean", "ci_low", "ci_high"]] = 0.0
    fig = plots.metric_bars(table)
    assert fig.get_size_inches()[0] <= plots.WIDTH
    hr1 = fig.axes[0]
    assert [t.get_text() for t in hr1.get_yticklabels()] == names
    dashed = [line for line in hr1.get_lines() if line.get_linestyle() == "--"]
    assert dashed and dashed[0].get_xdata()[0] == pytest.approx(0.05)
    dots = [c for c in hr1.collections] + [line for line in hr1.get_lines() if line.get_marker() == "o"]
    assert dots  # a marker at every mean, so HR@1 = 0 is drawn


def test_grouped_figures_carry_confidence_intervals():
    rng = np.random.default_rng(1)
    groups = metrics.quantile_groups(rng.integers(5, 100, size=30), 3, "items")
    table = metrics.by_group({m: rng.integers(1, 21, size=30) for m in METHODS[:3]}, groups, n_boot=100)
    assert (table["ci_low"] <= table["mean"]).all() and (table["mean"] <= table["ci_high"]).all()
    assert table["users"].sum() == 30 * 3
    fig = plots.by_group({"history length": table})
    assert fig.get_size_inches()[0] <= plots.WIDTH
    assert len(fig.axes[0].containers) >= 6  # 3 groups of bars + 3 error-bar sets


def test_every_saved_figure_names_the_run_and_each_changed_parameter(tmp_path, monkeypatch):
    monkeypatch.setenv(plots.FIGURES_ENV, str(tmp_path))
    plots.setup(config.resolve("smoke", HISTORY_LEN=20), "0123456789abcdef")
    fig = plt.figure()
    plots.save(fig, "x")
    footer = fig.texts[-1].get_text()
    assert "profile smoke" in footer and "seed 0" in footer and "commit 0123456" in footer
    assert "HISTORY_LEN=20" in footer and (tmp_path / "x.png").exists()
    plots.setup()


def test_training_axes_tick_at_whole_steps():
    import pandas as pd
    fig = plots.loss_curve(pd.DataFrame({"step": [1, 2], "loss": [3.0, 2.5]}))
    fig.canvas.draw()
    assert all(float(t).is_integer() for t in fig.axes[0].get_xticks())


def test_one_scored_order_draws_one_line():
    import pandas as pd
    t = pd.DataFrame({"users": [3, 2], "hr1_stored_order": [0.3, 0.5], "hr1_order_averaged": [0.3, 0.5]}, index=[1, 2])
    fig = plots.position_bias({"model": t}, 20)
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert "order-averaged" not in labels and "stored order (the only order scored)" in labels


def test_sequence_length_ticks_are_plain_numbers():
    """The log axis printed overlapping '2x10^1 3x10^1 ...' minor labels."""
    import pandas as pd
    from workbench.data.dataset import Dataset  # noqa: F401 - the loader's type, built here from a frame
    from workbench.notebook import explore

    class _Data:
        interactions = pd.DataFrame({"user_id": np.repeat(np.arange(50), np.arange(20, 70))})
    fig = explore.sequence_lengths(_Data())
    fig.canvas.draw()
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["20", "50"]
    assert all(t.get_text() == "" for t in ax.get_xticklabels(minor=True))


def test_the_setup_cell_prints_parameters_in_readable_lines():
    cfg = config.resolve("cpu", HISTORY_LEN=20)
    text = config.format_parameters(cfg, list(config.PARAMS))
    assert max(len(line) for line in text.splitlines()) <= 110 and "HISTORY_LEN=20*" in text
    assert "SEED=0 " in text or "SEED=0\n" in text
