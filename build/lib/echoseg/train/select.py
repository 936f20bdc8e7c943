"""Which epoch becomes best.pt: a rule that does not pick a noise peak of a small val split.

Policies:

* ``last`` (default): the last epoch. Under the recipe's cosine schedule and EMA weights the
  final epochs are the converged, averaged model; on real echo the last epoch scored as well as
  or better than any val-chosen one on unseen patients (README), because a one- or few-patient
  val split is a noisy selector.
* ``smooth``: the epoch with the best *trailing mean* of the selection score over ``window``
  epochs, from ``min_epoch`` on; a one-epoch spike no longer wins.
* ``best``: the epoch with the best raw score (the old behaviour), from ``min_epoch`` on.

The score of an epoch is the full-width val Dice, or for a nested model the mean val Dice over
all its granularities. An epoch at which any granularity has *collapsed* (val Dice below
``COLLAPSE_FRACTION`` of the full width's, or below ``COLLAPSE_FLOOR``) is never selected by any
policy (``last`` then takes the latest epoch that has not): a nested checkpoint is only as
usable as its smallest sub-network.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

POLICIES = ("last", "smooth", "best")
COLLAPSE_FRACTION = 0.5
COLLAPSE_FLOOR = 0.1


def _g_dice(row: dict, g: float) -> float | None:
    if g == 1.0 and "val_dice" in row:
        return float(row["val_dice"])
    v = row.get(f"val_dice_g{g:g}")
    return None if v is None else float(v)


def collapsed(row: dict, granularities: Sequence[float]) -> list[float]:
    """The granularities whose val Dice has collapsed at this epoch (empty list: none)."""
    full = _g_dice(row, 1.0)
    if full is None:
        return []
    bad = []
    for g in granularities:
        d = _g_dice(row, g)
        if d is None or not math.isfinite(d) or d < max(COLLAPSE_FLOOR, COLLAPSE_FRACTION * full):
            bad.append(float(g))
    return bad


def score(row: dict, granularities: Sequence[float]) -> float:
    """The selection score of an epoch: mean val Dice over the granularities (full only if one)."""
    vals = [_g_dice(row, g) for g in granularities]
    vals = [v for v in vals if v is not None]
    return float(sum(vals) / len(vals)) if vals else float("nan")


@dataclass(frozen=True)
class Selector:
    policy: str = "last"
    window: int = 3
    min_epoch: int = 1
    granularities: tuple[float, ...] = (1.0,)

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"unknown selection {self.policy!r}; use one of {', '.join(POLICIES)}")

    @classmethod
    def for_run(cls, policy: str, epochs: int, granularities: Sequence[float]) -> "Selector":
        """The rule for a run of ``epochs``: smoothing over 3 epochs and candidates from a third of
        the run on (the cosine schedule's early epochs), for the policies that use them."""
        return cls(policy=policy, window=3 if epochs >= 6 else 1,
                   min_epoch=max(1, math.ceil(epochs / 3)) if epochs >= 6 else 1,
                   granularities=tuple(float(g) for g in granularities))

    def value(self, rows: Sequence[dict], i: int) -> float | None:
        """The value epoch ``rows[i]`` competes with, or None if it is not a candidate."""
        row = rows[i]
        if collapsed(row, self.granularities):
            return None
        if self.policy == "last":
            return float(i)
        if int(row["epoch"]) < self.min_epoch:
            return None
        if self.policy == "best":
            return score(row, self.granularities)
        recent = rows[max(0, i - self.window + 1): i + 1]
        vals = [score(r, self.granularities) for r in recent]
        return float(sum(vals) / len(vals))

    def choose(self, rows: Sequence[dict]) -> int | None:
        """Index of the selected epoch in ``rows`` (None: no epoch qualifies)."""
        best_i, best_v = None, -math.inf
        for i in range(len(rows)):
            v = self.value(rows, i)
            if v is not None and math.isfinite(v) and v > best_v:
                best_i, best_v = i, v
        return best_i

    def is_new_best(self, rows: Sequence[dict]) -> bool:
        """Whether the latest epoch of ``rows`` is now the selected one (decided online)."""
        return bool(rows) and self.choose(rows) == len(rows) - 1
