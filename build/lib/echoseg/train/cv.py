"""Patient-level cross-validation: k folds of whole videos, several seeds, mean +- sd.

Every labelled frame of the dataset (all splits pooled) is dealt into ``k`` folds by video
(echoseg.data.folds). For fold i the model is trained on the other folds but one, selected on
fold i+1 and scored on fold i, which it never saw. With k equal to the number of videos this
is leave-one-patient-out. Each (fold, seed) run is a normal run folder, ``OUT/fold<i>-seed<s>``
with its ``eval-test/`` scores, so ``echo-eval --compare`` can pair two CV folders frame by frame.
"""

from __future__ import annotations

import csv
import logging
import math
from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from echoseg.atomic import atomic_path, write_json
from echoseg.config import TrainConfig
from echoseg.data.dataset import load_split
from echoseg.data.folds import fold_sets, pool, video_of

log = logging.getLogger(__name__)


def load_pool(data: str | Path):
    """Every labelled frame of ``data``, whichever splits it has."""
    from echoseg.data.frameset import DataError

    sets = []
    for split in ("train", "val", "test"):
        try:
            sets.append(load_split(data, split))
        except DataError:
            continue
    return pool(sets)


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    v = [float(x) for x in values if x is not None and math.isfinite(float(x))]
    if not v:
        return float("nan"), float("nan")
    return float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0


def run_cv(cfg: TrainConfig, folds: int, seeds: Sequence[int], only: Sequence[int] = (),
           on_run: Callable[[int, int, TrainConfig], object] | None = None) -> dict:
    """Train and score every (fold, seed); write OUT/cv.csv and OUT/cv.json; return the summary.

    ``on_run(fold, seed, cfg)`` may return training callbacks (a progress bar) for that run.
    """
    from .eval import evaluate
    from .loop import train

    out = Path(cfg.out)
    fs = load_pool(cfg.data)
    pick = sorted(set(only)) if only else list(range(folds))
    rows: list[dict] = []
    for fold in pick:
        tr, va, te = fold_sets(fs, folds, fold, seed=0)
        for seed in seeds:
            run_cfg = replace(cfg, seed=int(seed), out=str(out / f"fold{fold}-seed{seed}"))
            cbs = on_run(fold, seed, run_cfg) if on_run else None
            result = train(run_cfg, callbacks=cbs, data=(tr, va))
            m = evaluate(result.out, cfg.data, "test", Path(result.out) / "eval-test", cfg.device, frames=te)
            per_g = m.get("granularities") or {"1": m}
            for g, s in per_g.items():
                rows.append({"fold": fold, "seed": int(seed), "g": float(g), "dice": s["dice"], "iou": s["iou"],
                             "pixel_accuracy": s["pixel_accuracy"], "frames": s["frames"],
                             "videos": len({video_of(n) for n in te.names}),
                             "best_epoch": result.best.get("epoch")})
            _write_rows(out / "cv.csv", rows)
    summary = summarize_cv(rows)
    write_json(out / "cv.json", {"model": cfg.model, "width": cfg.width, "folds": folds, "seeds": list(seeds),
                                 "evaluated_folds": pick, "rows": rows, "summary": summary})
    return summary


def summarize_cv(rows: Sequence[dict]) -> dict:
    """Per granularity: Dice mean +- sd over seeds (each seed's Dice pooled over its folds'
    frames), and the per-fold means."""
    out: dict = {}
    for g in sorted({r["g"] for r in rows}, reverse=True):
        rg = [r for r in rows if r["g"] == g]
        per_seed = []
        for seed in sorted({r["seed"] for r in rg}):
            rs = [r for r in rg if r["seed"] == seed]
            n = sum(r["frames"] for r in rs)
            per_seed.append(sum(r["dice"] * r["frames"] for r in rs) / max(n, 1))
        per_fold = {str(f): mean_sd([r["dice"] for r in rg if r["fold"] == f])[0] for f in sorted({r["fold"] for r in rg})}
        m, sd = mean_sd(per_seed)
        out[f"{g:g}"] = {"dice_mean": m, "dice_sd": sd, "dice_per_seed": per_seed, "dice_per_fold": per_fold,
                         "min_fold_dice": min(r["dice"] for r in rg)}
    return out


def _write_rows(path: Path, rows: list[dict]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
