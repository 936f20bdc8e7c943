#!/usr/bin/env python3
"""Seed ensembles of bundle candidates on the real dev patients: how much of a recipe's shortfall is seed luck.

For each candidate in the rounds given (``bundle_candidates`` output folders: their summary.json names
each run's checkpoint), every run's probabilities on REAL's train, val and test frames at g = 1
(cached as uint8 in OUT/probs, so a second call with more k is quick), then ensembles of k of that
candidate's seeds: the probabilities averaged and cut at 0.5, scored as ``bundle_candidates`` scores a
run (per patient; old = train + val, unseen = test; all nine), raw or (``--clean-masks``) after
echo-run's clean-up. k = 1 is the runs themselves, which
checks the scoring against the rounds' own figures. Every combination of seeds when there are at
most ``--max-combos``, else that many drawn at random (seeded). What falls with k is the seed-to-seed
part of the error; what stays is the recipe's own (its bias on a patient).

Writes OUT/ensembles.json (every ensemble: its seeds and per-patient Dice; per candidate and k the
mean over ensembles) and OUT/ensembles.md (the table). Needs numpy, opencv and torch (not typer).

    python3 scripts/bundle_ensembles.py ROUND [ROUND ...] --real echo-real-dev --out ens --k 1,2,3,5
"""

from __future__ import annotations

import argparse
import itertools
import random
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # the candidate scripts, and echoseg without an install
import bundle_candidates as bc  # noqa: E402
import bundle_rounds as br  # noqa: E402

from echoseg.atomic import atomic_path, write_json, write_text  # noqa: E402


def load_frames(real: Path) -> dict:
    """Names, splits, images and true masks of the old and unseen splits there are."""
    from echoseg.data.dataset import load_split

    names, splits, images, masks = [], [], [], []
    for split in (*bc.OLD, *bc.UNSEEN):
        if not (real / split / "images").is_dir():
            continue
        fs = load_split(real, split)
        names += list(fs.names)
        splits += [split] * len(fs.names)
        images.append(fs.images)
        masks.append(fs.masks > 0)
    if not names:
        raise SystemExit(f"error: {real}: no train/val/test frame folders (images/ and masks/); give echo-real-dev's folder")
    return {"names": names, "splits": splits, "images": np.concatenate(images), "masks": np.concatenate(masks)}


def probabilities(checkpoint: Path, images: np.ndarray, cache: Path) -> np.ndarray:
    """The run's foreground probability per pixel at g = 1, as uint8 (0-255); cached by run."""
    if cache.is_file():
        p = np.load(cache)
        if p.shape == images.shape[:3]:
            return p
    import torch

    from echoseg.models.checkpoint import build_from_checkpoint, load_checkpoint
    from echoseg.train.predict import predict_logits

    ckpt = load_checkpoint(checkpoint)
    model = build_from_checkpoint(ckpt).eval()
    logits = predict_logits(model, images, ckpt.input_spec, 1.0, "cpu")
    p = np.round(torch.sigmoid(torch.from_numpy(logits)).numpy() * 255).astype(np.uint8)
    with atomic_path(cache) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, p)
    return p


def ensemble_run(candidate: str, seeds: tuple, probs: list[np.ndarray], frames: dict, clean: bool = False) -> dict:
    """One ensemble scored as bundle_candidates scores a run: probabilities averaged, cut at 0.5;
    ``clean``: each mask after echo-run's clean-up (the LV's blob, holes filled) first."""
    from echoseg.runtime.postprocess import clean_mask
    from echoseg.train.metrics import per_frame

    masks = np.mean([p.astype(np.float32) for p in probs], axis=0) >= 127.5
    if clean:
        masks = np.stack([clean_mask(m) for m in masks])
    dice = per_frame(masks, frames["masks"])["dice"]
    area = frames["masks"].sum(axis=(1, 2))
    rows = [{"name": n, "split": s, "dice": float(d), "area_true_px": int(a)}
            for n, s, d, a in zip(frames["names"], frames["splits"], dice, area)]
    return {"candidate": candidate, "seeds": list(seeds), **bc.score(rows)}


def combos(seeds: list[int], k: int, most: int) -> list[tuple]:
    every = list(itertools.combinations(sorted(seeds), k))
    return every if len(every) <= most else sorted(random.Random(k).sample(every, most))


def summarize(runs: list[dict]) -> dict:
    """Per candidate and k: bundle_rounds' per-candidate figures over the ensembles (as if each were a seed)."""
    named = [dict(r, candidate=f"{r['candidate']} x{len(r['seeds'])}", seed=i) for i, r in enumerate(runs)]
    out = br.per_candidate(named, bc.RULE)
    for name, row in out.items():
        row["ensembles"] = len(row.pop("seeds"))
    return out


def markdown(table: dict) -> str:
    lines = ["| candidate x seeds in the ensemble | ensembles | old six (sd) | unseen three (sd) | unseen worst "
             "patient: mean, lowest | all nine (sd) | all nine's worst patient: mean, lowest |",
             "|---|---|---|---|---|---|---|"]
    for name, row in table.items():
        cells = [br.cell(row, g, worst) for g, worst in (("old", False), ("unseen", False), ("unseen", True),
                                                          ("nine", False), ("nine", True))]
        lines.append(f"| {name} | {row['ensembles']} | " + " | ".join(cells) + " |")
    pids = sorted({p for row in table.values() for p in row["per_patient"]})
    lines += ["", "| candidate x seeds | " + " | ".join(p[:6] for p in pids) + " |", "|---|" + "---|" * len(pids)]
    for name, row in table.items():
        lines.append(f"| {name} | " + " | ".join(f"{row['per_patient'].get(p, float('nan')):.3f}" for p in pids) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("rounds", nargs="+", type=Path, help="bundle_candidates output folders (summary.json)")
    ap.add_argument("--real", type=Path, required=True, help="echo-real-dev (train/val/test frame folders)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--k", default="1,2,3,5", help="ensemble sizes, comma-separated (default 1,2,3,5)")
    ap.add_argument("--max-combos", type=int, default=60, help="at most this many ensembles per candidate and k")
    ap.add_argument("--candidates", default="", help="only these candidates (comma-separated; default all)")
    ap.add_argument("--clean-masks", action="store_true", help="score the masks after echo-run's clean-up "
                    "(the LV's blob, holes filled), as echo-eval --clean-masks does")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args(argv)
    try:
        ks = sorted({int(k) for k in args.k.split(",") if k.strip()})
    except ValueError:
        ap.error(f"--k {args.k!r}: give whole numbers separated by commas, e.g. 1,2,3")
    if not ks or min(ks) < 1 or args.max_combos < 1:
        ap.error("--k needs sizes of 1 or more and --max-combos 1 or more")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    runs, notes = br.load(args.rounds)
    for n in notes:
        print(n, file=sys.stderr)
    wanted = {c for c in args.candidates.split(",") if c}
    runs = [r for r in runs if not wanted or r["candidate"] in wanted]
    frames = load_frames(args.real)
    (args.out / "probs").mkdir(parents=True, exist_ok=True)
    probs: dict[tuple, np.ndarray] = {}
    for r in runs:
        ck = Path(r.get("checkpoint", ""))
        if not ck.is_file():
            print(f"{r['candidate']} seed {r['seed']}: checkpoint {ck} is gone; left out", file=sys.stderr)
            continue
        probs[(r["candidate"], r["seed"])] = probabilities(ck, frames["images"],
                                                         args.out / "probs" / f"{r['candidate']}-s{r['seed']}.npy")
        print(f"{r['candidate']} seed {r['seed']}: probabilities on {len(frames['names'])} frames", flush=True)
    if not probs:
        print("error: no run with its checkpoint in these rounds; nothing to ensemble", file=sys.stderr)
        return 1
    ensembles = []
    for name in sorted({c for c, _ in probs}):
        seeds = sorted(s for c, s in probs if c == name)
        for k in ks:
            if k > len(seeds):
                print(f"{name}: {len(seeds)} seeds, no ensemble of {k}", file=sys.stderr)
                continue
            for group in combos(seeds, k, args.max_combos):
                ensembles.append(ensemble_run(name, group, [probs[(name, s)] for s in group], frames,
                                              args.clean_masks))
    table = summarize(ensembles)
    write_json(args.out / "ensembles.json", {"rounds": [str(d) for d in args.rounds], "k": ks,
                                             "clean_masks": args.clean_masks, "table": table,
                                             "ensembles": ensembles})
    text = markdown(table)
    write_text(args.out / "ensembles.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
