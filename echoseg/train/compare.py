"""An honest comparison of two models: paired Dice differences with a bootstrap over videos.

Frames of one video are not independent (they are near-copies), so the interval resamples
whole videos, not frames. Several runs of one model (seeds) are averaged frame by frame
before pairing, and summarised as mean +- sd of their Dice. Works on scored runs
(``eval-*/frames.csv``) and on cross-validation folders (``cv.json`` with per-fold scores).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from echoseg.data.folds import group_by_video


@dataclass
class Scored:
    """One model's per-frame Dice by granularity: ``dice[g][frame name]``."""

    label: str
    model: str
    width: int
    dice: dict[float, dict[str, float]] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.model} w{self.width}"

    def mean(self, g: float) -> float:
        return float(np.mean(list(self.dice[g].values())))


def read_frames_csv(path: Path, label: str, model: str, width: int) -> Scored:
    """A frames.csv written by echo-eval: column ``dice`` is g=1, ``dice_gG`` the others."""
    s = Scored(label, model, width)
    with open(path, newline="") as fh:
        for r in csv.DictReader(fh):
            for k, v in r.items():
                if k == "dice" or k.startswith("dice_g"):
                    g = 1.0 if k == "dice" else float(k[6:])
                    s.dice.setdefault(g, {})[r["name"]] = float(v)
    return s


def read_cv(folder: Path) -> list[Scored]:
    """One Scored per seed of a cross-validation folder, its scored folds' test frames together
    (a table still missing runs, see ``echo-train --folds --resume``, gives what it has)."""
    info = json.loads((folder / "cv.json").read_text())
    scored = sorted({(int(r["seed"]), int(r["fold"])) for r in info.get("rows", [])})
    out = []
    for seed in sorted({s for s, _ in scored}):
        s = Scored(f"{folder.name}/seed{seed}", info["model"], int(info["width"]))
        for fold in (f for t, f in scored if t == seed):
            part = read_frames_csv(folder / f"fold{fold}-seed{seed}" / "eval-test" / "frames.csv", "", "", 0)
            for g, d in part.dice.items():
                s.dice.setdefault(g, {}).update(d)
        out.append(s)
    return out


@dataclass(frozen=True)
class Difference:
    g_a: float
    g_b: float
    mean: float
    ci95: tuple[float, float] | None  # None with one video: resampling one video gives no interval
    frames: int  # frames both sides scored (the pairs)
    videos: int
    frames_a: int = 0  # frames each side scored (all its runs): more than ``frames`` when the sets differ
    frames_b: int = 0


def paired_difference(a: Sequence[Scored], b: Sequence[Scored], g_a: float, g_b: float,
                      n_boot: int = 2000, seed: int = 0) -> Difference:
    """Mean over frames of Dice(b) - Dice(a) (each side averaged over its runs), with a
    percentile bootstrap 95% interval that resamples videos (None from one video: no interval).
    Only frames both sides scored are paired; ``frames_a``/``frames_b`` say how many each had."""
    common = set.intersection(*(set(s.dice[g_a]) for s in a), *(set(s.dice[g_b]) for s in b))
    n_a = len(set.union(*(set(s.dice[g_a]) for s in a)))
    n_b = len(set.union(*(set(s.dice[g_b]) for s in b)))
    if not common:
        raise ValueError("the two sides share no scored frames; score both on the same data and split")
    names = sorted(common)
    da = np.mean([[s.dice[g_a][n] for n in names] for s in a], axis=0)
    db = np.mean([[s.dice[g_b][n] for n in names] for s in b], axis=0)
    diff = db - da
    groups = [np.asarray(ix) for ix in group_by_video(names).values()]
    sums = np.array([diff[ix].sum() for ix in groups])
    counts = np.array([len(ix) for ix in groups])
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(groups), size=(n_boot, len(groups)))
    boot = sums[pick].sum(1) / counts[pick].sum(1)
    lo, hi = np.quantile(boot, [0.025, 0.975])
    ci = (float(lo), float(hi)) if len(groups) > 1 else None
    return Difference(g_a, g_b, float(diff.mean()), ci, len(names), len(groups), n_a, n_b)


def sides(scored: Sequence[Scored]) -> tuple[list[Scored], list[Scored]]:
    """Split runs into the two sides of a comparison: by model and width when there are two
    kinds, else exactly two runs of one kind."""
    kinds = list(dict.fromkeys(s.key for s in scored))
    if len(kinds) == 2:
        return [s for s in scored if s.key == kinds[0]], [s for s in scored if s.key == kinds[1]]
    if len(scored) == 2:
        return [scored[0]], [scored[1]]
    raise ValueError(f"--compare needs two runs, or runs of two models (found {len(scored)} runs of "
                     f"{len(kinds)} kinds: {', '.join(kinds)})")


def compare(scored: Sequence[Scored], n_boot: int = 2000) -> dict:
    """Per granularity of side B: its Dice against side A's (same g if A has it, else A's full)."""
    a, b = sides(scored)
    result: dict = {"a": [s.label for s in a], "b": [s.label for s in b], "a_model": a[0].key,
                    "b_model": b[0].key, "runs": [], "differences": []}
    for name, side in (("A", a), ("B", b)):
        for g in sorted(set.intersection(*(set(s.dice) for s in side)), reverse=True):
            vals = [s.mean(g) for s in side]
            result["runs"].append({"side": name, "model": side[0].key, "g": g, "dice_mean": float(np.mean(vals)),
                                   "dice_sd": float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0,
                                   "runs": len(vals)})
    a_gs = set.intersection(*(set(s.dice) for s in a))
    for g in sorted(set.intersection(*(set(s.dice) for s in b)), reverse=True):
        d = paired_difference(a, b, g if g in a_gs else 1.0, g, n_boot=n_boot)
        result["differences"].append(d.__dict__ | {"ci95": list(d.ci95) if d.ci95 else None})
    return result
