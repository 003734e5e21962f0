"""Baselines on tiny synthetic sequences: finite falling loss, weights change, padding is safe, rankings are right."""
import numpy as np
import pandas as pd
import pytest
import torch

from workbench import config
from workbench.methods.baselines import models


def _toy():
    """Users cycle through items 1..8 in order: the next item is predictable from the last one."""
    rows = [(u, [(u + t) % 8 + 1 for t in range(s, s + 5)], (u + s + 5) % 8 + 1) for u in range(40) for s in range(4)]
    train = pd.DataFrame(rows, columns=["user_id", "history", "target"])
    valid = train.groupby("user_id").tail(1).copy()
    valid["candidates"] = [[t] + [i for i in range(1, 9) if i != t][:3] for t in valid["target"]]
    return train, valid


@pytest.mark.parametrize("name", ["sasrec", "gru4rec"])
def test_training_lowers_a_finite_loss_and_changes_the_weights(name):
    cfg = config.resolve("smoke", EPOCHS=15, PATIENCE=15, HISTORY_LEN=5, LEARNING_RATE=1e-2, BATCH_SIZE=32)
    train, valid = _toy()
    torch.manual_seed(0)
    model = models.build_model(name, 9, cfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    log = models.fit(model, train, valid, cfg, progress=False)
    assert np.isfinite(log["train_loss"]).all()
    assert log["train_loss"].iloc[-1] < log["train_loss"].iloc[0]
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert log["valid_ndcg10"].max() > 0.9  # the toy pattern is learnable


def test_sasrec_padding_gives_no_nan_and_does_not_change_the_output():
    torch.manual_seed(0)
    model = models.SASRec(n_items=9, max_len=6, dim=8, layers=2, heads=2, dropout=0.0).eval()
    short = models.pad_histories([[3, 4]], 6)
    assert short.tolist() == [[0, 0, 0, 0, 3, 4]]
    with torch.no_grad():
        out = model(short)
        model.positions.weight[:4] += torch.randn(4, 8)  # what padding positions carry must not leak into the output
        again = model(short)
    assert torch.isfinite(out).all()
    assert torch.allclose(out, again, atol=1e-6)


def test_empty_history_is_refused():
    with pytest.raises(ValueError, match="empty"):
        models.pad_histories([[1], []], 4)


def test_popularity_and_full_ranking_exclude_seen_items():
    pop = models.Popularity(6).fit([[1, 2, 2, 3], [2, 3, 3, 3]])
    assert pop.counts.tolist() == [0, 1, 3, 4, 0, 0]
    view = pd.DataFrame({"user_id": [1], "history": [[3]], "target": [2], "candidates": [[2, 4, 5]]})
    assert models.sampled_ranks(pop, view)["rank"].tolist() == [1]
    assert models.full_ranks(pop, view, seen=[[3]])["rank"].tolist() == [1]   # item 3 excluded
    assert models.full_ranks(pop, view, seen=[[]])["rank"].tolist() == [2]


def test_unknown_baseline_name():
    with pytest.raises(ValueError, match="popularity, sasrec, gru4rec or mf"):
        models.build_model("bert4rec", 10, config.resolve("smoke"))


def test_a_run_that_stops_early_says_so(capsys):
    """The bar stopped at "85% 17/20" with no word that early stopping ended it."""
    cfg = config.resolve("smoke", EPOCHS=50, PATIENCE=1, HISTORY_LEN=5, LEARNING_RATE=1e-2, BATCH_SIZE=32)
    train, valid = _toy()
    torch.manual_seed(0)
    log = models.fit(models.build_model("gru4rec", 9, cfg), train, valid, cfg)
    out = capsys.readouterr().out
    assert len(log) < 50 and f"stopped early at epoch {len(log)} of 50: no validation gain for 1 epoch(s)" in out
    best = int(log.loc[log["valid_ndcg10"].idxmax(), "epoch"])
    assert f"keeping epoch {best}" in out
