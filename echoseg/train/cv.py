"""Patient-level cross-validation: k folds of whole videos, several seeds, mean +- sd.

Every labelled frame of the dataset (all splits pooled) is dealt into ``k`` folds by video
(echoseg.data.folds). For fold i the model is trained on the other folds but one, selected on
fold i+1 and scored on fold i, which it never saw. With k equal to the number of videos this
is leave-one-patient-out. Each (fold, seed) run is a normal run folder, ``OUT/fold<i>-seed<s>``
with its ``eval-test/`` scores, so ``echo-eval --compare`` can pair two CV folders frame by frame.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from echoseg.atomic import atomic_path, write_json
from echoseg.config import ConfigError, TrainConfig
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


# what may differ between the runs of one cross-validation table: where it is written, the seed of
# each run, and how batches are loaded and where they run (same batches, same recipe)
_NOT_RECIPE = ("out", "seed", "workers", "device", "data")
# recipe options added after cv.json began to record its config, off in a sweep whose config lacks them (so
# --resume refuses to add runs with them on); the others a sweep from then lacks are not compared
_ADDED_OFF = ("antialias", "shift_consistency")


class CVError(ConfigError):
    """A cross-validation folder cannot be continued as asked."""


def _recipe(cfg_dict: dict) -> dict:
    return {k: v for k, v in cfg_dict.items() if k not in _NOT_RECIPE}


def sweep_recipe(info: dict) -> dict:
    """The recipe a cv.json records (its config, or for the oldest sweeps the few keys they kept), with
    the options added since counted as off where it lacks them."""
    if not info.get("config"):
        return {k: info[k] for k in ("model", "width", "epochs", "train_every") if k in info}
    return {**{k: getattr(TrainConfig(), k) for k in _ADDED_OFF}, **info["config"]}


def recipe_differences(a: dict, b: dict) -> list[tuple[str, object, object]]:
    """(key, a's value, b's value) for each recipe key both record with different values (where a run
    is written, its seed and how batches are loaded are not the recipe)."""
    return [(k, a[k], b[k]) for k in sorted(a) if k in b and k not in _NOT_RECIPE and a[k] != b[k]]


def _earlier(out: Path, cfg: TrainConfig, folds: int, fs) -> tuple[list[dict], list[int], list[int]]:
    """The scored rows of the cross-validation in ``out`` that ``cfg`` continues; refused if it is another."""
    if not (out / "cv.json").exists():  # cut off before its first run was scored: nothing to keep
        return [], [], []
    try:
        old = json.loads((out / "cv.json").read_text())
        rows = [dict(r) for r in old["rows"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CVError(f"--resume: {out / 'cv.json'} cannot be read ({exc}); pass --overwrite to start again") from None
    if int(old.get("folds", -1)) != folds:
        raise CVError(f"--resume: {out} holds a {old.get('folds')}-fold cross-validation, not {folds}-fold; "
                      f"pass --folds {old.get('folds')}, or a new --out")
    mine = json.loads(json.dumps(_recipe(cfg.to_dict())))  # tuples as lists, as cv.json holds them
    differ = recipe_differences(sweep_recipe(old), mine)
    if differ:
        said = ", ".join(f"{k} {a!r} there, {b!r} now" for k, a, b in differ)
        raise CVError(f"--resume: {out} was trained with another recipe ({said}); use the same options, "
                      "or a new --out for the new recipe")
    for r in rows:  # the same data: each scored fold must hold out the same videos now
        _, _, te = fold_sets(fs, folds, int(r["fold"]), seed=0)
        now = " ".join(sorted({video_of(n) for n in te.names}))
        if r.get("test_videos") and r["test_videos"] != now:
            raise CVError(f"--resume: fold {r['fold']} of {out} held out {r['test_videos']}, with this --data it "
                          f"holds out {now}; use the same data, or a new --out")
    return rows, [int(s) for s in old.get("seeds", [])], [int(f) for f in old.get("evaluated_folds", [])]


def run_cv(cfg: TrainConfig, folds: int, seeds: Sequence[int], only: Sequence[int] = (),
           on_run: Callable[[int, int, TrainConfig], object] | None = None, jobs: int = 1,
           on_done: Callable[[list[dict]], None] | None = None, resume: bool = False) -> dict:
    """Train and score every (fold, seed); write OUT/cv.csv and OUT/cv.json; return the summary.

    ``on_run(fold, seed, cfg)`` may return training callbacks (a progress bar) for that run.
    ``jobs`` > 1 trains that many runs at once in separate processes (one GPU holds many small
    runs; on a CPU each process gets cores // jobs threads); ``on_done(rows)`` hears each
    finished run; cv.csv and cv.json are rewritten after each, so a sweep cut off keeps what it
    scored. ``resume`` keeps the runs already scored in OUT/cv.json (same recipe, same folds),
    trains only the (fold, seed) pairs it lacks (a run cut off before it was scored starts again)
    and writes one table of all of them, so a sweep can be run in pieces.
    """
    out = Path(cfg.out)
    fs = load_pool(cfg.data)
    pick = sorted(set(only)) if only else list(range(folds))
    for fold in pick:
        fold_sets(fs, folds, fold, seed=0)  # a bad fold number or too many folds fails before any run
    rows: list[dict] = []
    all_seeds, all_folds = [int(s) for s in seeds], list(pick)
    if resume:
        rows, old_seeds, old_folds = _earlier(out, cfg, folds, fs)
        all_seeds = sorted(set(all_seeds) | set(old_seeds))
        all_folds = sorted(set(all_folds) | set(old_folds))
    have = {(int(r["fold"]), int(r["seed"])) for r in rows}
    todo = [(fold, int(seed)) for fold in pick for seed in seeds if (fold, int(seed)) not in have]
    rows.sort(key=lambda r: (r["fold"], r["seed"], -r["g"]))

    def write() -> dict:  # the table of every run scored so far; missing_runs says what it still lacks
        return _write_table(out, {"model": cfg.model, "width": cfg.width, "folds": folds, "seeds": all_seeds,
                                  "evaluated_folds": all_folds, "train_every": cfg.train_every,
                                  "epochs": cfg.epochs, "config": _recipe(cfg.to_dict())}, rows)

    def done(new: list[dict]) -> None:
        rows.extend(new)
        rows.sort(key=lambda r: (r["fold"], r["seed"], -r["g"]))
        write()
        if on_done:
            on_done(new)

    if jobs <= 1:
        for fold, seed in todo:
            run_cfg = replace(cfg, seed=seed, out=str(out / f"fold{fold}-seed{seed}"))
            done(_one_run(run_cfg, fs, folds, fold, on_run(fold, seed, run_cfg) if on_run else None))
    elif todo:
        _parallel(cfg, folds, todo, jobs, done)
    if not rows:
        raise CVError(f"{out}: no run to score: --fold and --seeds ask for none")
    return write()


def _write_table(out: Path, header: dict, rows: list[dict]) -> dict:
    """OUT/cv.csv and OUT/cv.json (``header`` + rows + summary) for the rows scored so far; the summary."""
    summary = summarize_cv(rows, folds=header["evaluated_folds"], seeds=header["seeds"])
    _write_rows(out / "cv.csv", rows)
    write_json(out / "cv.json", {**header, "rows": rows, "summary": summary})
    return summary


def _one_run(run_cfg: TrainConfig, fs, folds: int, fold: int, callbacks=None) -> list[dict]:
    """Train fold ``fold`` with ``run_cfg`` and score it on its held-out videos: the cv rows."""
    from .eval import evaluate
    from .loop import train

    tr, va, te = fold_sets(fs, folds, fold, seed=0)
    result = train(run_cfg, callbacks=callbacks, data=(tr, va))
    m = evaluate(result.out, run_cfg.data, "test", Path(result.out) / "eval-test", run_cfg.device, frames=te)
    return _cv_rows(m, fold, run_cfg.seed, te, result.best.get("epoch"))


def _cv_rows(m: dict, fold: int, seed: int, te, best_epoch) -> list[dict]:
    """cv.json's rows (one per granularity) from one fold run's metrics on its held-out frames ``te``."""
    videos = sorted({video_of(n) for n in te.names})
    rows = []
    for g, s in (m.get("granularities") or {"1": m}).items():
        rows.append({"fold": fold, "seed": seed, "g": float(g), "dice": s["dice"], "iou": s["iou"],
                     "pixel_accuracy": s["pixel_accuracy"], "frames": s["frames"], "videos": len(videos),
                     "test_videos": " ".join(videos), "best_epoch": best_epoch})
    return rows


def rescore_cv(cv_dir: str | Path, data: str | Path, out: str | Path, device: str = "auto", clean: bool = False,
               tta: str = "none", on_run: Callable[[list[dict]], None] | None = None) -> dict:
    """Score every run of the cross-validation in ``cv_dir`` again on the videos its fold held out,
    as asked (``clean``: echo-run's mask clean-up; ``tta``: test-time views), into a cross-validation
    table of its own: OUT/cv.json, cv.csv and OUT/fold<i>-seed<s>/eval-test/ (metrics.json,
    frames.csv, montage.png), so ``echo-eval CV OUT --table`` and ``--compare`` set it beside the
    original patient by patient. ``data`` must deal the same videos into the same folds (checked
    against cv.json); nothing is trained. ``on_run(rows)`` hears each run once scored. Returns the
    summary (as in cv.json) and ``not_scored``: the runs that could not be scored, one line each."""
    from echoseg.errors import EchosegError

    from .eval import evaluate

    cv, out = Path(cv_dir), Path(out)
    if out.resolve() == cv.resolve():
        raise CVError(f"{out}: that is the cross-validation folder itself; pass another --out for the new scores")
    if (out / "cv.json").is_file() and "scored" not in _read_json(out / "cv.json"):
        raise CVError(f"{out}: holds a trained cross-validation (its cv.json would be replaced); pass another --out")
    try:
        info = json.loads((cv / "cv.json").read_text())
        runs = sorted({(int(r["fold"]), int(r["seed"])): r.get("best_epoch") for r in info["rows"]}.items())
        folds = int(info["folds"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CVError(f"{cv / 'cv.json'} cannot be read ({exc}); echo-train --folds --resume rewrites it") from None
    held = {int(r["fold"]): r.get("test_videos") for r in info["rows"]}
    fs = load_pool(data)
    sets = {}
    for fold in sorted({f for (f, _), _ in runs}):
        _, _, sets[fold] = fold_sets(fs, folds, fold, seed=0)
        now = " ".join(sorted({video_of(n) for n in sets[fold].names}))
        if held.get(fold) and held[fold] != now:
            raise CVError(f"{data}: fold {fold} of {cv} held out {held[fold]}, with this data it holds out {now}; "
                          "pass the data the cross-validation was trained on")
    header = {k: info[k] for k in ("model", "width", "folds", "train_every", "epochs", "config") if k in info}
    header.update(seeds=sorted({s for (_, s), _ in runs}), evaluated_folds=sorted(sets),
                  scored={"from": str(cv), "tta": tta, "clean_masks": bool(clean)})
    rows: list[dict] = []
    failed: list[str] = []
    for (fold, seed), best_epoch in runs:
        name = f"fold{fold}-seed{seed}"
        try:
            m = evaluate(cv / name, data, "test", out / name / "eval-test", device, frames=sets[fold], clean=clean,
                         tta=tta)
        except (EchosegError, OSError, ValueError) as exc:  # one run that cannot be scored: the others still are
            log.info("%s: not scored (%s)", cv / name, exc)  # returned in not_scored: the caller says it
            failed.append(f"{name}: {exc}")
            continue
        new = _cv_rows(m, fold, seed, sets[fold], best_epoch)
        rows = sorted(rows + new, key=lambda r: (r["fold"], r["seed"], -r["g"]))
        _write_table(out, header | {"not_scored": failed}, rows)
        if on_run:
            on_run(new)
    if not rows:
        raise CVError(f"{cv}: no run could be scored ({failed[0] if failed else 'cv.json lists none'})")
    return {"summary": _write_table(out, header | {"not_scored": failed}, rows), "not_scored": failed}


def _read_json(path: Path) -> dict:
    try:
        got = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return got if isinstance(got, dict) else {}


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


def summarize_cv(rows: Sequence[dict], folds: Sequence[int] = (), seeds: Sequence[int] = ()) -> dict:
    """Per granularity: Dice mean +- sd over seeds (each seed's Dice pooled over its folds'
    frames), the per-fold means over seeds, and the worst fold (patient) by that mean.

    ``missing_runs`` lists the (fold, seed) pairs of ``folds`` x ``seeds`` that have no score: while
    it is not empty the seeds were pooled over different folds and their mean and sd are not yet
    the table's (``echo-train --folds K --resume`` adds the missing runs)."""
    out: dict = {}
    for g in sorted({r["g"] for r in rows}, reverse=True):
        rg = [r for r in rows if r["g"] == g]
        present = {(int(r["fold"]), int(r["seed"])) for r in rg}
        missing = [[int(f), int(s)] for f in folds for s in seeds if (int(f), int(s)) not in present]
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
                         "worst_fold_videos": names[worst], "min_fold_dice": min(r["dice"] for r in rg),
                         "missing_runs": missing}
    return out


def _write_rows(path: Path, rows: list[dict]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
