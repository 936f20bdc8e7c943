#!/usr/bin/env python3
"""Train and score candidates for the bundled model: choose on some real patients, report on others.

For each candidate (generator style, number of videos, epochs, augmentation) and each seed, in
parallel: echo-synth's frame-folder data (the layout of ``make pretrained``: 48-frame videos,
every 6th frame labelled; the seed is the data's and the training's), matae-unet training, and
scoring on the real frames in REAL_DIR: its ``train`` and ``val`` splits are the patients the
choice is made on ("old"), its ``test`` split the patients only reported ("unseen"). Per patient
Dice at g = 1 and g = 1/2, and on each patient's largest and smallest thirds of true LV areas
(near ED and near ES: the frame layout has no ED/ES labels).

The candidate chosen is the one highest by ``--rule`` on the old patients, mean over seeds
(default old-trimmed: their mean Dice at g = 1 without each run's worst patient; old: their Dice,
frames pooled); of its seeds, the one highest by the same figure gives ``chosen.pt``. Unseen
patients never enter the choice. Writes to OUT only small files: summary.json (every number),
summary.csv (one row per candidate, seed and patient), chosen.pt, chosen-other-seed.pt and
run.log; summary.json is rewritten as each job ends, so a run cut short still leaves what it did.
scripts/bundle_rounds.py pools the summaries of several rounds (more seeds than one round runs).

With ``--finetune-epochs N``, if time is left: leave-one-patient-out over all real frames
(matae-unet, seed 1), from scratch and from chosen.pt (``echo-train --init``), each arm with the
defaults echo-train gives it (``finetune_recipe``), per patient in summary.json's "finetune" (no
weights of these runs leave the work folder: they saw real data).

    PYTHONPATH=$PWD python3 scripts/bundle_candidates.py --real .real --out "$OUT"
    # dry run on a CPU: tiny data, one epoch, width 8
    PYTHONPATH=$PWD python3 scripts/bundle_candidates.py --real /tmp/fake-real --out /tmp/o --tiny --device cpu

Needs numpy, opencv and torch only (not typer, rich or matplotlib: training curves are skipped
where matplotlib is missing).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # echoseg from this repository without an install
from echoseg.atomic import write_json, write_text  # noqa: E402  (standard library only)

# name -> generator style, videos, epochs, augmentation (the shipped model: v1-500-e2). Style "mix":
# the echo and echo2 datasets of the same seed and size together (twice the frames, no new rendering).
CANDIDATES = {
    "v1-500-e2": dict(style="echo", videos=500, epochs=2, augment="heavy"),
    "v2-500-e2": dict(style="echo2", videos=500, epochs=2, augment="heavy"),
    "v2-1000-e2": dict(style="echo2", videos=1000, epochs=2, augment="heavy"),
    "v2-500-e4": dict(style="echo2", videos=500, epochs=4, augment="heavy"),
    "v2-500-e2-light": dict(style="echo2", videos=500, epochs=2, augment="light"),
    "mix-500-e2": dict(style="mix", videos=500, epochs=2, augment="heavy"),
    # with valve-plane dropout (heavy-valve): the band past the LV's basal end darkened on half the frames
    "v1-500-e2-valve": dict(style="echo", videos=500, epochs=2, augment="heavy-valve"),
    # echo3: echo with atria that can dwarf the LV
    "v3-500-e2": dict(style="echo3", videos=500, epochs=2, augment="heavy"),
    # echo3 trained longer, and with the loss on masks that move with the frame (echo-train --shift-consistency)
    "v3-500-e4": dict(style="echo3", videos=500, epochs=4, augment="heavy"),
    "v3-500-e2-sc": dict(style="echo3", videos=500, epochs=2, augment="heavy", shift_consistency=1.0),
    # echo3 with valve-plane dropout (on echo it lifted the unseen three's worst patient, two seeds)
    "v3-500-e2-valve": dict(style="echo3", videos=500, epochs=2, augment="heavy-valve"),
    "v3-500-e2-valve-sc": dict(style="echo3", videos=500, epochs=2, augment="heavy-valve", shift_consistency=1.0),
    # echo4: echo3 with a hazy LV's haze over its apical part only (the echo3 models ended the LV where it did)
    "v4-500-e2": dict(style="echo4", videos=500, epochs=2, augment="heavy"),
}
DEFAULT = ("v1-500-e2", "v2-500-e2", "v2-500-e4", "mix-500-e2")
MIX = ("echo", "echo2")
OLD, UNSEEN = ("train", "val"), ("test",)
# the choice, on the old patients only: key in a run's groups["old"], and what it means
RULES = {"old-trimmed": ("patient_mean_trimmed", "the old patients' mean Dice at g=1 without each run's worst patient"),
         "old": ("dice", "the old patients' Dice at g=1, frames pooled")}
RULE = "old-trimmed"  # the default, from 2026-12-07

log = logging.getLogger("bundle_candidates")


# --------------------------------------------------------------------------------- one job


def run_job(spec: dict) -> dict:
    """Train one candidate at one seed and score it on the real splits (in this process)."""
    from echoseg.config import TrainConfig
    from echoseg.train.eval import evaluate
    from echoseg.train.loop import train

    run = Path(spec["run"])
    if run.exists():
        shutil.rmtree(run)
    t0 = time.perf_counter()
    # the bundle's recipe: reconstruction on
    cfg = TrainConfig(data=spec["data"], model="matae-unet", width=spec["width"], epochs=spec["epochs"],
                      recon_weight=0.1, augment_strength=spec["augment"], seed=spec["seed"], out=str(run),
                      device=spec["device"], workers=spec["loader_workers"],
                      shift_consistency=spec.get("shift_consistency", 0.0))
    train(cfg)
    train_s = time.perf_counter() - t0
    frames = []
    for split in (*OLD, *UNSEEN):
        if not (Path(spec["real"]) / split / "images").is_dir():
            continue
        r = evaluate(run / "best.pt", spec["real"], split, run / f"real-{split}", spec["device"])
        frames += [dict(row, split=split) for row in _read_csv(Path(r["out"]) / "frames.csv")]
    result = {"candidate": spec["candidate"], "seed": spec["seed"], "train_s": round(train_s, 1),
              "eval_s": round(time.perf_counter() - t0 - train_s, 1), "checkpoint": str(run / "best.pt"),
              **score(frames)}
    (run / "result.json").write_text(json.dumps(result, indent=1))
    return result


def _job_setup(spec: dict) -> None:
    import torch

    torch.set_num_threads(max(1, int(spec.get("threads", 2))))
    try:
        import matplotlib  # noqa: F401
    except ImportError:  # curves.png is a picture for people; the run does not need it
        from echoseg.train import plots

        plots.plot_curves = lambda *a, **k: None


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def score(frames: list[dict]) -> dict:
    """Dice per patient (g = 1 and 1/2; near-ED and near-ES thirds by true area) and per group."""
    from echoseg.data.folds import video_of

    by_patient: dict[str, list[dict]] = {}
    for row in frames:
        by_patient.setdefault(video_of(row["name"]), []).append(row)
    patients = {}
    for pid, rows in sorted(by_patient.items()):
        d1 = [float(r["dice"]) for r in rows]
        dh = [float(r["dice_g0.5"]) for r in rows if r.get("dice_g0.5") not in (None, "")]
        order = sorted(range(len(rows)), key=lambda i: int(rows[i]["area_true_px"]))
        k = max(1, len(rows) // 3)
        patients[pid] = {"split": rows[0]["split"], "frames": len(rows), "dice": _mean(d1), "dice_g0.5": _mean(dh),
                         "dice_large": _mean([d1[i] for i in order[-k:]]),
                         "dice_small": _mean([d1[i] for i in order[:k]])}
    groups = {}
    for group, splits in (("old", OLD), ("unseen", UNSEEN)):
        rows = [r for r in frames if r["split"] in splits]
        pats = [p for p in patients.values() if p["split"] in splits]
        if not rows:
            continue
        ranked = sorted(p["dice"] for p in pats)
        groups[group] = {"frames": len(rows), "dice": _mean([float(r["dice"]) for r in rows]),
                         "dice_g0.5": _mean([float(r["dice_g0.5"]) for r in rows if r.get("dice_g0.5")]),
                         "patient_mean": _mean([p["dice"] for p in pats]), "worst_patient": ranked[0],
                         "patient_mean_trimmed": trimmed_mean(ranked),
                         "dice_large": _mean([p["dice_large"] for p in pats]),
                         "dice_small": _mean([p["dice_small"] for p in pats])}
    return {"groups": groups, "patients": patients}


def _mean(xs: list[float]) -> float | None:
    return round(sum(xs) / len(xs), 4) if xs else None


def trimmed_mean(dices: list[float]) -> float | None:
    """The mean without the lowest (rule old-trimmed's figure); all of one patient's."""
    ranked = sorted(dices)
    return _mean(ranked[1:] or ranked)


# --------------------------------------------------------------------------------- the driver


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--real", help="real frames: REAL/{train,val,test}/{images,masks}/<video>_<frame>.png")
    ap.add_argument("--out", help="where the small result files go (e.g. $OUT)")
    ap.add_argument("--work", default=".bundle-work", help="data and runs (large; not copied to --out)")
    ap.add_argument("--candidates", default=",".join(DEFAULT), help=f"comma-separated, of: {', '.join(CANDIDATES)}")
    ap.add_argument("--seeds", default="13,14")
    ap.add_argument("--rule", choices=sorted(RULES), default=RULE,
                    help="what chooses, mean over seeds: old-trimmed (from 2026-12-07) the old patients' mean Dice "
                         "without each run's worst patient; old (the rule before) their frame-pooled Dice")
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--jobs", type=int, default=0, help="trainings at once (0: all)")
    ap.add_argument("--synth-workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--loader-workers", type=int, default=1, help="DataLoader workers per training")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads per training")
    ap.add_argument("--budget-s", type=float, default=450, help="stop waiting for trainings after this many "
                    "seconds from the start; what finished is summarised")
    ap.add_argument("--finetune-epochs", type=int, default=0, help="then, if time is left: leave-one-patient-out "
                    "on all real frames, matae-unet from scratch vs from chosen.pt, this many epochs (0: skip)")
    ap.add_argument("--finetune-folds", type=int, default=9, help="folds of that cross-validation (9: one patient each)")
    ap.add_argument("--tiny", action="store_true", help="dry run: 6 videos, 12 frames, every 4th, 1 epoch, width 8")
    ap.add_argument("--job", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    if args.job:
        spec = json.loads(args.job)
        _job_setup(spec)
        (run_finetune if spec.get("kind") == "finetune" else run_job)(spec)
        return 0
    if not args.real or not args.out:
        ap.error("--real and --out are needed")
    names = [c for c in args.candidates.split(",") if c]
    unknown = [c for c in names if c not in CANDIDATES]
    if unknown:
        ap.error(f"unknown candidates {unknown}; use some of {', '.join(CANDIDATES)}")
    if not any((Path(args.real) / s / "images").is_dir() for s in OLD):
        ap.error(f"{args.real} has no train/images or val/images: the real frames to choose on")
    seeds = [int(s) for s in args.seeds.split(",") if s]
    out, work = Path(args.out), Path(args.work)
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    logfile = open(out / "run.log", "a", buffering=1)

    def say(msg: str) -> None:
        line = f"[{time.perf_counter() - t_start:6.1f}s] {msg}"
        print(line, flush=True)
        logfile.write(line + "\n")

    frames, every = (12, 4) if args.tiny else (48, 6)
    width = 8 if args.tiny else args.width
    say(f"candidates {names}, seeds {seeds}, width {width}, device {args.device}, real {args.real}")

    # 1. data: one dataset per (style, videos, seed), all cores each
    from echoseg.data.synthetic import write_frames

    datasets: dict[tuple, str] = {}

    def dataset(style: str, videos: int, seed: int) -> str:
        key = (style, videos, seed)
        if key in datasets:
            return datasets[key]
        path = work / "data" / f"{style}-{videos}-s{seed}"
        if path.exists():
            shutil.rmtree(path)
        t0 = time.perf_counter()
        if style == "mix":
            link_union(path, [Path(dataset(part, videos, seed)) for part in MIX])
        else:
            write_frames(path, videos=videos, frames=frames, seed=seed, every=every, style=style,
                         workers=args.synth_workers)
        datasets[key] = str(path)
        say(f"synth {path.name}: {videos} videos in {time.perf_counter() - t0:.1f}s")
        return datasets[key]

    for name in names:
        for seed in seeds:
            dataset(CANDIDATES[name]["style"], 6 if args.tiny else CANDIDATES[name]["videos"], seed)

    # 2. train + score, in parallel, each in its own process
    specs = []
    for name in names:
        c = CANDIDATES[name]
        for seed in seeds:
            specs.append(dict(candidate=name, seed=seed, data=datasets[(c["style"], 6 if args.tiny else c["videos"],
                                                                         seed)],
                              run=str(work / "runs" / f"{name}-s{seed}"), width=width,
                              epochs=1 if args.tiny else c["epochs"], augment=c["augment"],
                              shift_consistency=c.get("shift_consistency", 0.0), device=args.device,
                              real=str(Path(args.real).resolve()), loader_workers=args.loader_workers,
                              threads=args.threads))
    results: list[dict] = []
    failures: list[str] = []
    deadline = t_start + args.budget_s

    def done(spec: dict, r: dict | None, why: str) -> None:
        tag = f"{spec['candidate']}-s{spec['seed']}"
        if r is None:
            failures.append(f"{tag}: {why}")
            say(f"{tag} FAILED: {why}")
            return
        results.append(r)
        g = r["groups"]
        say(f"{tag}: old Dice {g['old']['dice']} (worst patient {g['old']['worst_patient']}, the others' mean "
            f"{g['old'].get('patient_mean_trimmed')}), unseen "
            f"{g.get('unseen', {}).get('dice')}; train {r['train_s']}s, eval {r['eval_s']}s")
        write_summary(out, results, failures, names, seeds, time.perf_counter() - t_start, say, rule=args.rule)

    run_parallel(specs, args.jobs, deadline, done, say)
    summary = write_summary(out, results, failures, names, seeds, time.perf_counter() - t_start, say,
                            rule=args.rule)
    say(f"chosen: {summary.get('chosen')} by rule {args.rule}; the rule's figure against the unseen patients' Dice "
        f"over these runs: r = {summary.get('rule_vs_unseen_r')}")

    # 3. optional: leave-one-patient-out on the real frames, from scratch vs from the chosen weights
    if args.finetune_epochs and (out / "chosen.pt").is_file() and time.perf_counter() < deadline - 60:
        chosen = str((work / "chosen-init.pt").resolve())
        shutil.copyfile(out / "chosen.pt", chosen)
        folds = args.finetune_folds
        ft_specs = [dict(kind="finetune", arm=arm, fold=f, folds=folds, init=chosen if arm == "init" else "",
                         data=str(Path(args.real).resolve()), run=str(work / "ft" / f"{arm}-f{f}"),
                         width=width, epochs=1 if args.tiny else args.finetune_epochs, device=args.device,
                         loader_workers=args.loader_workers, threads=args.threads)
                    for f in range(folds) for arm in ("scratch", "init")]
        ft: list[dict] = []

        def ft_done(spec: dict, r: dict | None, why: str) -> None:
            if r is None:
                say(f"finetune {spec['arm']} fold {spec['fold']} FAILED: {why}")
                return
            ft.append(r)
            say(f"finetune {r['arm']} fold {r['fold']} ({r['patient']}): Dice {r['dice']} g=1/2 {r['dice_g0.5']}")
            summary["finetune"] = summarize_finetune(ft)
            write_json(out / "summary.json", summary)

        say(f"fine-tuning: {folds} folds x (scratch, init) at {ft_specs[0]['epochs']} epochs")
        run_parallel(ft_specs, args.jobs, deadline, ft_done, say)
    say(f"wrote {', '.join(sorted(p.name for p in out.iterdir()))}")
    logfile.close()
    return 0 if results else 1


def run_parallel(specs: list[dict], jobs: int, deadline: float, done, say) -> None:
    """Each spec in its own process (``--job``), ``jobs`` at once (0: all); ``done(spec, result or None,
    why)`` as each ends. At ``deadline`` the processes still running are killed."""
    lock = threading.Lock()
    procs: list[subprocess.Popen] = []
    stopping = threading.Event()

    def one(spec: dict) -> None:
        if stopping.is_set():
            return
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
        job_log = Path(spec["run"] + ".log")
        job_log.parent.mkdir(parents=True, exist_ok=True)
        with open(job_log, "w") as fh:
            p = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--job", json.dumps(spec)],
                                 stdout=fh, stderr=subprocess.STDOUT, env=env)
            with lock:
                procs.append(p)
            rc = p.wait()
        res = Path(spec["run"]) / "result.json"
        with lock:
            if rc == 0 and res.is_file():
                done(spec, json.loads(res.read_text()), "")
            else:
                tail = job_log.read_text()[-1500:].strip() if job_log.is_file() else ""
                say(f"{spec['run']}: exit {rc}; last lines:\n{tail}")
                done(spec, None, f"exit {rc}: {tail.splitlines()[-1] if tail else ''}")

    pool = ThreadPoolExecutor(max_workers=jobs or len(specs) or 1)
    futures = [pool.submit(one, s) for s in specs]
    while not all(f.done() for f in futures):
        if time.perf_counter() > deadline:
            stopping.set()
            say("budget spent: stopping the trainings still running")
            with lock:
                for p in procs:
                    if p.poll() is None:
                        p.kill()
            break
        time.sleep(1)
    pool.shutdown(wait=True)


def finetune_recipe(from_weights: bool, width: int) -> dict:
    """TrainConfig fields for one arm of the fine-tuning comparison, as echo-train sets them: the
    init arm trains as a matae-unet started from the bundle does (its augmentation, distillation,
    rates and shift-consistency loss, the same defaults ``--init pretrained`` gets), the scratch
    arm as one from random weights (``--init none``)."""
    from echoseg.train.init import resolve

    r = resolve("pretrained" if from_weights else "none", "matae-unet", width)
    return dict(augment_strength=r.augment_strength, distill=r.distill, lr=r.lr, full_lr=r.full_lr,
                shift_consistency=r.shift_consistency)


def run_finetune(spec: dict) -> dict:
    """One leave-one-patient-out fold of matae-unet on the real frames, from scratch or from weights."""
    from echoseg.config import TrainConfig
    from echoseg.train.cv import run_cv

    run = Path(spec["run"])
    if run.exists():
        shutil.rmtree(run)
    cfg = TrainConfig(data=spec["data"], model="matae-unet", width=spec["width"], epochs=spec["epochs"], seed=1,
                      out=str(run), device=spec["device"], workers=spec["loader_workers"], init=spec["init"],
                      **finetune_recipe(bool(spec["init"]), spec["width"]))
    run_cv(cfg, spec["folds"], [1], [spec["fold"]])
    rows = _read_csv(run / f"fold{spec['fold']}-seed1" / "eval-test" / "frames.csv")
    from echoseg.data.folds import video_of

    result = {"arm": spec["arm"], "fold": spec["fold"], "patient": ",".join(sorted({video_of(r["name"]) for r in rows})),
              "frames": len(rows), "dice": _mean([float(r["dice"]) for r in rows]),
              "dice_g0.5": _mean([float(r["dice_g0.5"]) for r in rows if r.get("dice_g0.5")])}
    (run / "result.json").write_text(json.dumps(result))
    return result


def summarize_finetune(rows: list[dict]) -> dict:
    """Per arm: mean over folds (patients), worst fold, per patient; and init - scratch on the folds both did."""
    out: dict = {}
    for arm in ("scratch", "init"):
        rs = sorted((r for r in rows if r["arm"] == arm), key=lambda r: r["fold"])
        if rs:
            out[arm] = {"folds": len(rs), "dice_mean": _mean([r["dice"] for r in rs]),
                        "dice_g0.5_mean": _mean([r["dice_g0.5"] for r in rs if r["dice_g0.5"] is not None]),
                        "worst": min(r["dice"] for r in rs), "per_patient": {r["patient"]: r["dice"] for r in rs}}
    both = {r["fold"] for r in rows if r["arm"] == "scratch"} & {r["fold"] for r in rows if r["arm"] == "init"}
    if both:
        diffs = [next(r["dice"] for r in rows if r["arm"] == "init" and r["fold"] == f)
                 - next(r["dice"] for r in rows if r["arm"] == "scratch" and r["fold"] == f) for f in sorted(both)]
        out["init_minus_scratch"] = {"folds": len(diffs), "mean": _mean(diffs), "min": round(min(diffs), 4),
                                     "max": round(max(diffs), 4)}
    return out


def link_union(dest: Path, parts: list[Path]) -> None:
    """A frame-folder dataset of links to the files of ``parts``, each part's names prefixed by a
    letter (the parts share video names), so each video stays one video of one split."""
    for letter, part in zip("ABCDEFGH", parts):
        for f in sorted(part.glob("*/*/*.png")):
            split, kind = f.parent.parent.name, f.parent.name
            (dest / split / kind).mkdir(parents=True, exist_ok=True)
            os.symlink(f.resolve(), dest / split / kind / f"{letter}{f.name}")


def write_summary(out: Path, results: list[dict], failures: list[str], names: list[str], seeds: list[int],
                  elapsed_s: float, say, rule: str = RULE) -> dict:
    """summary.json/csv from the jobs done so far, and the chosen candidate's checkpoints.

    `rule_vs_unseen_r` is how far the rule's figure went with the unseen patients' Dice over this round's runs
    (Pearson r; None under three runs): near 0, the choice said little about patients nobody chose on."""
    rule_key, meaning = RULES[rule]
    per: dict[str, list[dict]] = {}
    for r in results:
        per.setdefault(r["candidate"], []).append(r)
    table = {}
    for name, rs in per.items():
        row = {"seeds": sorted(r["seed"] for r in rs)}
        for group in ("old", "unseen"):
            vals = [r["groups"][group] for r in rs if group in r["groups"]]
            if not vals:
                continue
            for key in ("dice", "dice_g0.5", "patient_mean", "patient_mean_trimmed", "worst_patient", "dice_large",
                        "dice_small"):
                xs = [v[key] for v in vals if v.get(key) is not None]
                if xs:
                    row[f"{group}_{key}"] = _mean(xs)
            ds = [v["dice"] for v in vals]
            row[f"{group}_dice_spread"] = round(max(ds) - min(ds), 4)
        table[name] = row
    chosen = max(table, key=lambda n: table[n].get(f"old_{rule_key}") or -1) if table else None
    summary = {"elapsed_s": round(elapsed_s, 1), "candidates": {n: CANDIDATES[n] for n in names}, "seeds": seeds,
               "rule": f"{rule}, chosen: the highest mean over seeds of {meaning} (train+val splits); its seed "
                       "highest by the same figure gives chosen.pt; unseen (test) patients never enter",
               "rule_vs_unseen_r": _pearson([(r["groups"]["old"].get(rule_key),
                                              r["groups"].get("unseen", {}).get("dice")) for r in results]),
               "table": table, "chosen": chosen, "runs": results, "failures": failures}
    if chosen:
        rs = sorted(per[chosen], key=lambda r: -(r["groups"]["old"].get(rule_key) or -1))
        summary["chosen_seed"] = rs[0]["seed"]
        for r, name in zip(rs, ("chosen.pt", "chosen-other-seed.pt")):
            _copy_weights(Path(r["checkpoint"]), out / name, say)
    write_json(out / "summary.json", summary)
    write_text(out / "summary.csv", _csv(results))
    return summary


def _pearson(pairs: list[tuple]) -> float | None:
    import numpy as np

    xy = np.array([(x, y) for x, y in pairs if x is not None and y is not None], dtype=float).reshape(-1, 2)
    if len(xy) < 3 or xy[:, 0].std() == 0 or xy[:, 1].std() == 0:
        return None
    return round(float(np.corrcoef(xy[:, 0], xy[:, 1])[0, 1]), 3)


def _copy_weights(src: Path, dest: Path, say) -> None:
    """The checkpoint without its optimizer state (best.pt can be a copy of last.pt), if small."""
    import torch

    if not src.is_file():
        return
    raw = torch.load(src, map_location="cpu", weights_only=True)
    raw["optimizer"] = None
    tmp = dest.with_name(f".{dest.name}.tmp")
    torch.save(raw, tmp)
    if tmp.stat().st_size > 15 * 2**20:
        tmp.unlink()
        say(f"{src}: over 15 MB without its optimizer state; not copied")
        return
    os.replace(tmp, dest)


def _csv(results: list[dict]) -> str:
    import io

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["candidate", "seed", "patient", "split", "frames", "dice", "dice_g0.5", "dice_large", "dice_small"])
    for r in sorted(results, key=lambda r: (r["candidate"], r["seed"])):
        for pid, p in r["patients"].items():
            w.writerow([r["candidate"], r["seed"], pid, p["split"], p["frames"], p["dice"], p["dice_g0.5"],
                        p["dice_large"], p["dice_small"]])
        for group, g in r["groups"].items():
            w.writerow([r["candidate"], r["seed"], f"ALL-{group}", group, g["frames"], g["dice"], g["dice_g0.5"],
                        g["dice_large"], g["dice_small"]])
    return buf.getvalue()


if __name__ == "__main__":
    raise SystemExit(main())
