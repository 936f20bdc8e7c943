"""Frames without masks for the autoencoder: sampled from the split's videos, read on demand.

Nothing here holds every frame. The frames to use (all of them, or ``max_frames`` drawn
without replacement for a seed) are chosen from the frame counts alone; they are then read
by seeking when asked for (``LazyFrames``), or, with the frame cache on, decoded once into
a memory-mapped file that later epochs and runs read from.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .cache import EntryWriter, cache_dir, fingerprint, load_entry
from .echonet import split_records, video_path
from .frameset import Progress, log, log_progress
from .lazy import LazyFrames, _fit, image_frames, memmap_frames, video_frames
from .video import VideoError, probe, read_frames


def _frame_counts(root: Path, split: str) -> list[tuple[Path, int]]:
    """(video, frame count) per readable video of the split: FileList's count, else the container's."""
    out = []
    for rec in split_records(root, split):
        path = video_path(root, rec)
        try:
            info = probe(path)
        except VideoError:
            continue  # already reported by the labelled pass
        n = rec.frames or info.frame_count
        if n > 0:
            out.append((path, n))
    return out


def sample_index(counts: list[tuple[Path, int]], max_frames: int, seed: int) -> list[tuple[Path, int]]:
    """(video, frame) pairs: every frame, or ``max_frames`` of them drawn uniformly, in file order."""
    sizes = np.array([n for _, n in counts], dtype=np.int64)
    total = int(sizes.sum())
    chosen = np.arange(total)
    if max_frames and total > max_frames:
        chosen = np.sort(np.random.default_rng(seed).choice(total, max_frames, replace=False))
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]) if len(sizes) else np.zeros(0, np.int64)
    video = np.searchsorted(starts, chosen, side="right") - 1
    return [(counts[v][0], int(g - starts[v])) for v, g in zip(video, chosen)]


def load_echonet_unlabelled(root: str | Path, split: str = "train", size: tuple[int, int] = (112, 112),
                            max_frames: int = 20000, seed: int = 0, cache: bool | str | Path | None = None,
                            progress: Progress | None = None) -> LazyFrames:
    """Frames of the split's videos (``max_frames`` drawn at random when there are more), lazily read."""
    root = Path(root)
    index = sample_index(_frame_counts(root, split), max_frames, seed)
    entry = cache_dir(root, cache)
    if entry is None:
        return video_frames(index, size)
    videos = sorted({p for p, _ in index})
    key = fingerprint([root / "FileList.csv", *videos], kind="unlabelled", split=split.lower(),
                      size=list(size), max_frames=max_frames, seed=seed)
    entry = entry / f"unlabelled-{split.lower()}-{size[0]}x{size[1]}"
    cached = load_entry(entry, key)
    if cached is None:
        try:
            _build(entry, key, index, size, progress or log_progress(f"{split} videos cached", len(videos)))
        except OSError as exc:
            log.warning("frame cache %s cannot be written (%s); reading frames from the videos", entry, exc)
            return video_frames(index, size)
        cached = load_entry(entry, key)
    return memmap_frames(cached[0]["frames"])


def _build(entry: Path, key: str, index: list[tuple[Path, int]], size: tuple[int, int], tick: Progress) -> None:
    """Decode the chosen frames video by video into a memory-mapped file (one video in memory at a time)."""
    w = EntryWriter(entry, key)
    try:
        frames = w.array("frames", (len(index), size[0], size[1], 3), np.uint8)
        by_video: dict[Path, list[int]] = {}
        for pos, (path, _) in enumerate(index):
            by_video.setdefault(path, []).append(pos)
        short = 0
        for done, (path, positions) in enumerate(by_video.items(), start=1):
            try:
                got = read_frames(path, [index[p][1] for p in positions])
            except VideoError:
                got = {}
            spare = next(iter(got.values()), None)
            for p in positions:
                f = got.get(index[p][1], spare)
                short += f is not None and index[p][1] not in got
                frames[p] = _fit(f, size) if f is not None else 0
            tick(done, len(by_video))
        frames.flush()
        del frames
        if short:
            log.warning("frame cache: %d frame(s) did not decode (videos shorter than their header); "
                        "other frames of those videos stand in", short)
        w.commit({"frames": len(index)})
    except BaseException:
        w.discard()
        raise


def load_frames_unlabelled(root: str | Path, split: str = "train", size: tuple[int, int] = (112, 112),
                           max_frames: int = 0) -> LazyFrames:
    """Training images plus DIR/train/unlabelled/ of a frame-folder dataset, read on demand."""
    from .frames import unlabelled_paths

    paths = unlabelled_paths(root, split)
    if max_frames and len(paths) > max_frames:
        paths = [paths[int(i)] for i in np.linspace(0, len(paths) - 1, max_frames).round()]
    return image_frames(paths, size)


__all__ = ["LazyFrames", "load_echonet_unlabelled", "load_frames_unlabelled", "sample_index"]
