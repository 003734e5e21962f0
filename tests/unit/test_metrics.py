import math

import numpy as np
import pandas as pd
import pytest

from workbench import metrics


def test_metrics_match_hand_computed_values():
    ranks = [1, 2, 11]
    got = metrics.summarize(ranks)
    assert got["HR@1"] == pytest.approx(1 / 3)
    assert got["HR@5"] == pytest.approx(2 / 3)
    assert got["HR@10"] == pytest.approx(2 / 3)
    assert got["NDCG@5"] == pytest.approx((1 + 1 / math.log2(3)) / 3)
    assert got["NDCG@10"] == pytest.approx((1 + 1 / math.log2(3)) / 3)
    assert got["MRR"] == pytest.approx((1 + 1 / 2 + 1 / 11) / 3)


def test_ranks_from_scores_counts_ties_against_the_target():
    scores = [[0.9, 0.1, 0.5], [0.2, 0.2, 0.2], [0.0, 1.0, 2.0]]
    assert metrics.ranks_from_scores(scores, [0, 1, 0]).tolist() == [1, 3, 3]


def test_nan_target_score_ranks_last():
    assert metrics.ranks_from_scores([[np.nan, 1.0, 2.0]], [0]).tolist() == [3]


def test_bad_ranks_are_refused():
    with pytest.raises(ValueError, match="empty"):
        metrics.per_user_metrics([])
    with pytest.raises(ValueError, match="1-based"):
        metrics.per_user_metrics([0, 1])


def test_bootstrap_ci_brackets_the_mean_and_narrows_with_more_users():
    rng = np.random.default_rng(0)
    small, large = rng.integers(1, 21, 50), rng.integers(1, 21, 2000)
    ci_s, ci_l = metrics.bootstrap_ci(small, 500), metrics.bootstrap_ci(large, 500)
    assert (ci_s["ci_low"] <= ci_s["mean"]).all() and (ci_s["mean"] <= ci_s["ci_high"]).all()
    assert ((ci_l["ci_high"] - ci_l["ci_low"]) < (ci_s["ci_high"] - ci_s["ci_low"])).all()


def test_paired_bootstrap_detects_a_real_difference_and_not_a_null_one():
    rng = np.random.default_rng(1)
    b = rng.integers(1, 21, 300)
    better = np.maximum(1, b - 5)
    same = metrics.paired_bootstrap(b, b, 300)
    assert (same["diff"] == 0).all() and (same["p_value"] == 1).all()
    diff = metrics.paired_bootstrap(better, b, 300)
    assert diff.loc["MRR", "diff"] > 0 and diff.loc["MRR", "ci_low"] > 0 and diff.loc["MRR", "p_value"] < 0.05
    with pytest.raises(ValueError, match="same users"):
        metrics.paired_bootstrap(b, b[:-1])


def test_candidate_ranks_and_alignment():
    view = pd.DataFrame({"user_id": [7, 8], "target": [30, 40], "candidates": [[10, 30, 20], [40, 50, 60]]})
    ranks = metrics.candidate_ranks(view, [[0.1, 0.5, 0.9], [3.0, 2.0, 1.0]])
    assert ranks["rank"].tolist() == [2, 1]
    a, b = metrics.align_ranks(ranks, pd.DataFrame({"user_id": [8, 9], "rank": [5, 1]}))
    assert a.tolist() == [1] and b.tolist() == [5]


def test_format_table_has_one_row_per_method():
    long = metrics.ci_table({"A": [1, 2, 3], "B": [4, 5, 6]}, 50)
    wide = metrics.format_table(long)
    assert list(wide.index) == ["A", "B"] and list(wide.columns) == list(metrics.METRICS)
    assert wide.loc["A", "HR@1"].startswith("0.333 [")


def test_several_seeds_are_averaged_per_user():
    two_seeds = np.array([[1, 3], [2, 2]])
    got = metrics.per_user_metrics(two_seeds)
    assert got["HR@1"].tolist() == [0.5, 0.0]
    assert got["MRR"].tolist() == pytest.approx([(1 + 1 / 3) / 2, 0.5])
    assert metrics.bootstrap_ci(two_seeds, 50).loc["HR@1", "mean"] == pytest.approx(0.25)
