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
           on_run: Callable[[int, int, TrainConfig], object] | None = None, jobs: int = 1,
           on_done: Callable[[list[dict]], None] | None = None) -> dict:
    """Train and score every (fold, seed); write OUT/cv.csv and OUT/cv.json; return the summary.

    ``on_run(fold, seed, cfg)`` may return training callbacks (a progress bar) for that run.
    ``jobs`` > 1 trains that many runs at once in separate processes (one GPU holds many small
    runs; on a CPU each process gets cores // jobs threads); ``on_done(rows)`` hears each
    finished run.
    """
    out = Path(cfg.out)
    fs = load_pool(cfg.data)
    pick = sorted(set(only)) if only else list(range(folds))
    for fold in pick:
        fold_sets(fs, folds, fold, seed=0)  # a bad fold number or too many folds fails before any run
    todo = [(fold, int(seed)) for fold in pick for seed in seeds]
    rows: list[dict] = []

    def done(new: list[dict]) -> None:
        rows.extend(new)
        rows.sort(key=lambda r: (r["fold"], r["seed"], -r["g"]))
        _write_rows(out / "cv.csv", rows)
        if on_done:
            on_done(new)

    if jobs <= 1:
        for fold, seed in todo:
            run_cfg = replace(cfg, seed=seed, out=str(out / f"fold{fold}-seed{seed}"))
            done(_one_run(run_cfg, fs, folds, fold, on_run(fold, seed, run_cfg) if on_run else None))
    else:
        _parallel(cfg, folds, todo, jobs, done)
    summary = summarize_cv(rows)
    write_json(out / "cv.json", {"model": cfg.model, "width": cfg.width, "folds": folds, "seeds": list(seeds),
                                 "evaluated_folds": pick, "train_every": cfg.train_every, "epochs": cfg.epochs,
                                 "rows": rows, "summary": summary})
    return summary


def _one_run(run_cfg: TrainConfig, fs, folds: int, fold: int, callbacks=None) -> list[dict]:
    """Train fold ``fold`` with ``run_cfg`` and score it on its held-out videos: the cv rows."""
    from .eval import evaluate
    from .loop import train

    tr, va, te = fold_sets(fs, folds, fold, seed=0)
    result = train(run_cfg, callbacks=callbacks, data=(tr, va))
    m = evaluate(result.out, run_cfg.data, "test", Path(result.out) / "eval-test", run_cfg.device, frames=te)
    videos = sorted({video_of(n) for n in te.names})
    rows = []
    for g, s in (m.get("granularities") or {"1": m}).items():
        rows.append({"fold": fold, "seed": run_cfg.seed, "g": float(g), "dice": s["dice"], "iou": s["iou"],
                     "pixel_accuracy": s["pixel_accuracy"], "frames": s["frames"], "videos": len(videos),
                     "test_videos": " ".join(videos), "best_epoch": result.best.get("epoch")})
    return rows


def _child(cfg_dict: dict, folds: int, fold: int, threads: int) -> list[dict]:
    """One (fold, seed) run in a worker process (spawned: no state shared with the parent)."""
    import torch

    torch.set_num_threads(threads)
    cfg = TrainConfig.from_dict(cfg_dict)
    return _one_run(cfg, load_pool(cfg.data), folds, fold)


def _parallel(cfg: TrainConfig, folds: int, todo: list[tuple[int, int]], jobs: int,
              done: Callable[[list[dict]], None]) -> None:
    import multiprocessing as mp
    import os
    from concurrent.futures import ProcessPoolExecutor, as_completed

    threads = max(1, (os.cpu_count() or 1) // jobs)
    failures = []
    with ProcessPoolExecutor(max_workers=min(jobs, len(todo)), mp_context=mp.get_context("spawn")) as pool_:
        futures = {}
        for fold, seed in todo:
            run_cfg = replace(cfg, seed=seed, out=str(Path(cfg.out) / f"fold{fold}-seed{seed}"))
            futures[pool_.submit(_child, run_cfg.to_dict(), folds, fold, threads)] = (fold, seed)
        for fut in as_completed(futures):
            fold, seed = futures[fut]
            try:
                done(fut.result())
            except Exception as exc:  # one failed run must not lose the others: reported, then raised
                log.error("fold %d seed %d failed: %s", fold, seed, exc)
                failures.append((fold, seed, exc))
    if failures:
        fold, seed, exc = failures[0]
        raise RuntimeError(f"{len(failures)} of {len(todo)} cross-validation runs failed; first: fold {fold} "
                           f"seed {seed}: {exc}") from exc


def summarize_cv(rows: Sequence[dict]) -> dict:
    """Per granularity: Dice mean +- sd over seeds (each seed's Dice pooled over its folds'
    frames), the per-fold means over seeds, and the worst fold (patient) by that mean."""
    out: dict = {}
    for g in sorted({r["g"] for r in rows}, reverse=True):
        rg = [r for r in rows if r["g"] == g]
        per_seed = []
        for seed in sorted({r["seed"] for r in rg}):
            rs = [r for r in rg if r["seed"] == seed]
            n = sum(r["frames"] for r in rs)
            per_seed.append(sum(r["dice"] * r["frames"] for r in rs) / max(n, 1))
        folds = sorted({r["fold"] for r in rg})
        per_fold = {str(f): mean_sd([r["dice"] for r in rg if r["fold"] == f])[0] for f in folds}
        names = {str(r["fold"]): r.get("test_videos", "") for r in rg}
        worst = min(per_fold, key=lambda f: per_fold[f])
        m, sd = mean_sd(per_seed)
        out[f"{g:g}"] = {"dice_mean": m, "dice_sd": sd, "dice_per_seed": per_seed, "dice_per_fold": per_fold,
                         "fold_videos": names, "worst_fold": int(worst), "worst_fold_dice": per_fold[worst],
                         "worst_fold_videos": names[worst], "min_fold_dice": min(r["dice"] for r in rg)}
    return out


def _write_rows(path: Path, rows: list[dict]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
