"""Checkpoint selection: no noise peak, no collapsed granularity, the policies as documented."""

from __future__ import annotations

import pytest

from echoseg.train.select import Selector, collapsed, score

GS = (0.25, 0.5, 1.0)


def _row(epoch, full, half=None, quarter=None):
    r = {"epoch": epoch, "val_dice": full}
    if half is not None:
        r.update({"val_dice_g1": full, "val_dice_g0.5": half, "val_dice_g0.25": quarter})
    return r


def test_collapsed_smallest_granularity_is_never_selected():
    # Epoch 4 has the best full-width and mean score, but its g=0.25 sub-network collapsed.
    rows = [_row(1, 0.70, 0.65, 0.60), _row(2, 0.80, 0.78, 0.74), _row(3, 0.82, 0.80, 0.77),
            _row(4, 0.95, 0.93, 0.05), _row(5, 0.83, 0.81, 0.78)]
    assert collapsed(rows[3], GS) == [0.25] and collapsed(rows[2], GS) == []
    for policy in ("last", "smooth", "best"):
        sel = Selector(policy=policy, window=1, min_epoch=1, granularities=GS)
        chosen = sel.choose(rows)
        assert rows[chosen]["epoch"] != 4
        assert not collapsed(rows[chosen], GS)
    assert Selector(policy="best", window=1, granularities=GS).choose(rows) == 4  # epoch 5 is the best survivor
    # last: the latest epoch that has not collapsed
    assert rows[Selector(policy="last", granularities=GS).choose(rows[:4])]["epoch"] == 3
    assert Selector(policy="last", granularities=GS).choose(rows[3:4]) is None  # nothing usable at all


def test_smooth_ignores_a_one_epoch_spike_and_early_epochs():
    vals = [0.5, 0.91, 0.6, 0.62, 0.80, 0.84, 0.85, 0.86, 0.85, 0.70]  # epoch 2 is a noise peak
    rows = [_row(i + 1, v) for i, v in enumerate(vals)]
    best = Selector(policy="best", window=1, min_epoch=1).choose(rows)
    assert rows[best]["epoch"] == 2
    auto = Selector.for_run("smooth", epochs=len(rows), granularities=(1.0,))
    assert auto.min_epoch == 4 and auto.window == 3
    chosen = rows[auto.choose(rows)]["epoch"]
    assert chosen == 9  # best trailing 3-epoch mean: (0.85 + 0.86 + 0.85) / 3 at epoch 9
    assert rows[Selector(policy="last").choose(rows)]["epoch"] == 10


def test_online_decision_matches_offline_choice():
    vals = [0.4, 0.7, 0.65, 0.8, 0.79, 0.81, 0.9, 0.5]
    rows = [_row(i + 1, v) for i, v in enumerate(vals)]
    sel = Selector.for_run("smooth", epochs=len(rows), granularities=(1.0,))
    saved = [rows[i]["epoch"] for i in range(len(rows)) if sel.is_new_best(rows[: i + 1])]
    assert saved and saved[-1] == rows[sel.choose(rows)]["epoch"]


def test_score_is_mean_over_granularities_and_bad_policy_refused():
    assert score(_row(1, 0.9, 0.8, 0.7), GS) == pytest.approx(0.8)
    assert score(_row(1, 0.9), (1.0,)) == pytest.approx(0.9)
    with pytest.raises(ValueError, match="unknown selection"):
        Selector(policy="median")
    assert Selector().policy == "last"  # the default
