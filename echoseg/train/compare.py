"""An honest comparison of two models: paired Dice differences with a bootstrap over videos.

Frames of one video are not independent (they are near-copies), so the interval resamples
whole videos, not frames. Several runs of one model (seeds) are averaged frame by frame
before pairing, and summarised as mean +- sd of their Dice. Works on scored runs
(``eval-*/frames.csv``) and on cross-validation folders (``cv.json`` with per-fold scores).

Two cross-validation folders are also compared patient by patient: each held-out patient's Dice
on both sides, the mean of patients and the worst patient of each, and the run-by-run
differences (same fold, same seed). Two folders of one model are two recipes; their
``config`` says what differs.
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
    # a cross-validation seed only: its folder, seed, Dice per fold (``folds[g][fold]``), each fold's
    # held-out videos and the folder's recipe (cv.json ``config``)
    source: str = ""
    seed: int | None = None
    folds: dict[float, dict[int, float]] = field(default_factory=dict)
    fold_videos: dict[int, str] = field(default_factory=dict)
    config: dict = field(default_factory=dict)

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
        s = Scored(f"{folder.name}/seed{seed}", info["model"], int(info["width"]), source=str(folder), seed=seed,
                   config=dict(info.get("config") or {}))
        for fold in (f for t, f in scored if t == seed):
            part = read_frames_csv(folder / f"fold{fold}-seed{seed}" / "eval-test" / "frames.csv", "", "", 0)
            for g, d in part.dice.items():
                s.dice.setdefault(g, {}).update(d)
        for r in info["rows"]:
            if int(r["seed"]) == seed and r.get("dice") is not None:
                s.folds.setdefault(float(r["g"]), {})[int(r["fold"])] = float(r["dice"])
                s.fold_videos[int(r["fold"])] = str(r.get("test_videos", ""))
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
    kinds, else by cross-validation folder when there are two (two recipes of one model), else
    exactly two runs of one kind."""
    kinds = list(dict.fromkeys(s.key for s in scored))
    if len(kinds) == 2:
        return [s for s in scored if s.key == kinds[0]], [s for s in scored if s.key == kinds[1]]
    folders = list(dict.fromkeys(s.source for s in scored))
    if len(folders) == 2 and all(folders):
        return [s for s in scored if s.source == folders[0]], [s for s in scored if s.source == folders[1]]
    if len(scored) == 2:
        return [scored[0]], [scored[1]]
    raise ValueError(f"--compare needs two runs, runs of two models or two cross-validation folders (found "
                     f"{len(scored)} runs of {len(kinds)} kinds: {', '.join(kinds)})")


def _side_name(side: Sequence[Scored], by_folder: bool) -> str:
    return f"{side[0].key} ({side[0].source})" if by_folder else side[0].key


def recipe_difference(a: Sequence[Scored], b: Sequence[Scored]) -> dict[str, list]:
    """The training options two cross-validation folders differ in: ``{option: [A's, B's]}``."""
    ca, cb = a[0].config, b[0].config
    return {k: [ca.get(k), cb.get(k)] for k in sorted(set(ca) | set(cb)) if ca.get(k) != cb.get(k)}


def by_patient(a: Sequence[Scored], b: Sequence[Scored], g_a: float, g_b: float) -> dict | None:
    """Two cross-validation sides held-out patient by held-out patient (folds both scored), or
    None when a side has no per-fold scores. Each fold: the Dice of every seed and their mean;
    each side: the mean of patients and the worst patient (lowest mean over seeds); the runs of
    the same fold and seed paired: mean, min and max of B - A and how often B is ahead."""
    runs_a = {(f, s.seed): d for s in a for f, d in s.folds.get(g_a, {}).items()}
    runs_b = {(f, s.seed): d for s in b for f, d in s.folds.get(g_b, {}).items()}
    if not runs_a or not runs_b:
        return None
    videos_a = {f: v for s in a for f, v in s.fold_videos.items()}
    videos_b = {f: v for s in b for f, v in s.fold_videos.items()}
    folds = sorted({f for f, _ in runs_a} & {f for f, _ in runs_b})
    other = [f for f in folds if videos_a.get(f) != videos_b.get(f)]
    if other:
        raise ValueError(f"fold {other[0]} holds out {videos_a.get(other[0])!r} on one side and "
                         f"{videos_b.get(other[0])!r} on the other: compare cross-validations of the same data "
                         "and --folds")
    rows = []
    for f in folds:
        sa = sorted(s for g, s in runs_a if g == f)
        sb = sorted(s for g, s in runs_b if g == f)
        ma, mb = float(np.mean([runs_a[f, s] for s in sa])), float(np.mean([runs_b[f, s] for s in sb]))
        rows.append({"fold": f, "videos": videos_a.get(f, ""), "a": [runs_a[f, s] for s in sa],
                     "b": [runs_b[f, s] for s in sb], "seeds_a": sa, "seeds_b": sb, "a_mean": ma, "b_mean": mb,
                     "diff": mb - ma})
    out = {"g_a": g_a, "g_b": g_b, "folds": rows, "folds_a": len({f for f, _ in runs_a}),
           "folds_b": len({f for f, _ in runs_b})}
    for side in ("a", "b"):
        worst = min(rows, key=lambda r: r[f"{side}_mean"])
        out[f"{side}_patients_mean"] = float(np.mean([r[f"{side}_mean"] for r in rows]))
        out[f"{side}_worst"] = {"fold": worst["fold"], "videos": worst["videos"], "dice": worst[f"{side}_mean"]}
    out["paired_runs"] = paired_runs(runs_a, runs_b)
    return out


def paired_runs(runs_a: dict, runs_b: dict) -> dict | None:
    """The runs both sides have (same key: fold and seed) paired, B - A: how many, mean, min, max
    and in how many B is ahead; None when they share none."""
    pairs = sorted(set(runs_a) & set(runs_b))
    if not pairs:
        return None
    diffs = np.array([runs_b[k] - runs_a[k] for k in pairs])
    return {"runs": len(pairs), "mean": float(diffs.mean()), "min": float(diffs.min()), "max": float(diffs.max()),
            "b_ahead": int((diffs > 0).sum())}


def compare(scored: Sequence[Scored], n_boot: int = 2000) -> dict:
    """Per granularity of side B: its Dice against side A's (same g if A has it, else A's full)."""
    a, b = sides(scored)
    by_folder = a[0].key == b[0].key and bool(a[0].source) and a[0].source != b[0].source
    result: dict = {"a": [s.label for s in a], "b": [s.label for s in b], "a_model": _side_name(a, by_folder),
                    "b_model": _side_name(b, by_folder), "runs": [], "differences": [], "patients": []}
    if by_folder:
        result["recipe_difference"] = recipe_difference(a, b)
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
        patients = by_patient(a, b, d.g_a, d.g_b)
        if patients:
            result["patients"].append(patients)
    return result
