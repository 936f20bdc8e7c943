"""Frames grouped by the video (patient) they come from: splits and folds never cut a video.

Frames of one video are nearly copies of each other, so a split by frame leaks a patient into
both sides and flatters the score. A frame's video is read from its name: ``<video>_<frame>``
in frame folders (``<video>#<frame>`` for EchoNet-Dynamic's traced frames); a name without a
numeric frame suffix is a group of its own.
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np

from .frameset import DataError, FrameSet

_FRAME_SUFFIX = re.compile(r"^(?P<video>.+?)[_#](?P<frame>\d+)$")


def video_of(name: str) -> str:
    """The video (patient) a frame name belongs to."""
    m = _FRAME_SUFFIX.match(name)
    return m.group("video") if m else name


def group_by_video(names: Sequence[str]) -> dict[str, list[int]]:
    """Frame indices per video, videos in sorted order."""
    groups: dict[str, list[int]] = {}
    for i, n in enumerate(names):
        groups.setdefault(video_of(n), []).append(i)
    return dict(sorted(groups.items()))


def split_videos(videos: Sequence[str], fractions: tuple[float, float], seed: int) -> dict[str, list[str]]:
    """Videos dealt into train/val/test by ``fractions`` (train, val; test is the rest), seeded.

    With three or more videos every split gets at least one.
    """
    order = sorted(videos)
    perm = [order[i] for i in np.random.default_rng(seed).permutation(len(order))]
    n = len(perm)
    n_train = int(round(n * fractions[0]))
    n_val = int(round(n * fractions[1]))
    if n >= 3:
        n_val = max(1, n_val)
        n_train = min(max(1, n_train), n - n_val - 1)
    return {"train": sorted(perm[:n_train]), "val": sorted(perm[n_train:n_train + n_val]),
            "test": sorted(perm[n_train + n_val:])}


def fold_videos(videos: Sequence[str], k: int, seed: int = 0) -> list[list[str]]:
    """``k`` disjoint folds of whole videos, covering every video once (seeded, balanced by count)."""
    order = sorted(set(videos))
    if k < 2:
        raise DataError(f"cross-validation needs at least 2 folds, got {k}")
    if k > len(order):
        raise DataError(f"{k} folds asked for but the data has only {len(order)} videos (patients); "
                        f"use --folds {len(order)} for leave-one-patient-out")
    perm = [order[i] for i in np.random.default_rng(seed).permutation(len(order))]
    return [sorted(perm[i::k]) for i in range(k)]


def subset(fs: FrameSet, indices: Sequence[int]) -> FrameSet:
    """The frames of ``fs`` at ``indices`` (copies), with the same skip report and layout."""
    idx = np.asarray(sorted(indices), dtype=np.int64)
    return FrameSet(fs.images[idx], fs.masks[idx], [fs.names[i] for i in idx], [fs.phases[i] for i in idx],
                    fs.skipped, fs.layout)


def every_kth(fs: FrameSet, k: int) -> FrameSet:
    """Every ``k``-th frame of each video (its first, k+1-th, ...): neighbouring frames of one
    video are near-copies, so a screening run can train on a fraction at little cost in signal."""
    if k <= 1:
        return fs
    keep = [i for idx in group_by_video(fs.names).values() for i in idx[::k]]
    return subset(fs, keep)


def pool(sets: Sequence[FrameSet]) -> FrameSet:
    """Several FrameSets as one (e.g. every split of a dataset, for cross-validation)."""
    sets = [s for s in sets if len(s)]
    if not sets:
        raise DataError("no labelled frames to pool")
    return FrameSet(np.concatenate([s.images for s in sets]), np.concatenate([s.masks for s in sets]),
                    [n for s in sets for n in s.names], [p for s in sets for p in s.phases],
                    sets[0].skipped, sets[0].layout)


def fold_sets(fs: FrameSet, k: int, fold: int, seed: int = 0) -> tuple[FrameSet, FrameSet, FrameSet]:
    """(train, val, test) for fold ``fold`` of ``k``: test is that fold's videos, val the next
    fold's (for checkpoint selection), train all the others. No video is in two of them."""
    if not 0 <= fold < k:
        raise DataError(f"fold {fold} is not in 0..{k - 1}")
    groups = group_by_video(fs.names)
    folds = fold_videos(list(groups), k, seed)
    test_v, val_v = set(folds[fold]), set(folds[(fold + 1) % k])
    if k == 2:
        val_v = set()  # two folds: train on one, test on the other, select on the training fold
    pick = {name: [i for v in vids for i in groups[v]] for name, vids in
            (("test", test_v), ("val", val_v), ("train", set(groups) - test_v - val_v))}
    train = subset(fs, pick["train"])
    val = subset(fs, pick["val"]) if pick["val"] else train
    return train, val, subset(fs, pick["test"])
