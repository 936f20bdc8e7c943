"""Frames without masks that are read when asked for, never all held in memory.

``LazyFrames`` looks like an N,H,W,3 uint8 array to its users (``len``, ``x[i]``, ``x[idx]``
with an integer array or a slice, ``shape``) and reads the frames it is asked for: from
video files by seeking (``video_frames``), from image files (``image_frames``), or from a
memory-mapped cache file (``memmap_frames``). Recently read frames are kept up to a memory
cap, so repeated access to a few frames does not re-decode them.
"""

from __future__ import annotations

import logging
from collections import OrderedDict, defaultdict
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

log = logging.getLogger("echoseg.data")

#: Default memory cap of the recently-read frames kept by a LazyFrames.
DEFAULT_CAP_MB = 32.0

#: Reads the frames at the given positions (sorted, unique) -> position -> H,W,3 uint8 at model size.
ReadMany = Callable[[Sequence[int]], dict[int, np.ndarray]]


class LazyFrames:
    """An N,H,W,3 uint8 frame collection that reads on demand, with a bounded memory of recent frames."""

    def __init__(self, n: int, size: tuple[int, int], read_many: ReadMany, cap_mb: float = DEFAULT_CAP_MB,
                 source: str = "") -> None:
        self._n, self._size, self._read = int(n), (int(size[0]), int(size[1])), read_many
        self._recent: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cap = max(1, int(cap_mb * 2 ** 20 // (self._size[0] * self._size[1] * 3)))
        self.source = source

    def __len__(self) -> int:
        return self._n

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (self._n, self._size[0], self._size[1], 3)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint8)

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            return self._take(np.array([int(key)]))[0]
        if isinstance(key, slice):
            return self._take(np.arange(self._n)[key])
        return self._take(np.asarray(key, dtype=np.int64).reshape(-1))

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self._take(np.arange(self._n))
        return out.astype(dtype) if dtype is not None else out

    def _take(self, idx: np.ndarray) -> np.ndarray:
        idx = np.where(idx < 0, idx + self._n, idx)
        if idx.size and (idx.min() < 0 or idx.max() >= self._n):
            raise IndexError(f"frame index out of range for {self._n} frames")
        missing = sorted({int(i) for i in idx} - self._recent.keys())
        fresh = self._read(missing) if missing else {}
        out = np.empty((len(idx), *self._size, 3), np.uint8)
        for k, i in enumerate(idx):
            i = int(i)
            frame = fresh.get(i)
            if frame is None:
                frame = self._recent[i]
                self._recent.move_to_end(i)
            out[k] = frame
        for i, frame in fresh.items():
            self._recent[i] = frame
        while len(self._recent) > self._cap:
            self._recent.popitem(last=False)
        return out


def _fit(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import cv2

    if frame.shape[:2] != size:
        interp = cv2.INTER_AREA if frame.shape[0] > size[0] else cv2.INTER_LINEAR
        frame = cv2.resize(frame, (size[1], size[0]), interpolation=interp)
    return np.ascontiguousarray(frame[:, :, :3])


def video_frames(index: Sequence[tuple[Path, int]], size: tuple[int, int], cap_mb: float = DEFAULT_CAP_MB) -> LazyFrames:
    """Frames (video path, frame number) read by seeking; a frame that no longer decodes is
    replaced by another frame of the same video (one warning per video)."""
    from .video import VideoError, read_frames

    index = list(index)
    warned: set[Path] = set()

    def read_many(positions: Sequence[int]) -> dict[int, np.ndarray]:
        by_video: dict[Path, list[int]] = defaultdict(list)
        for p in positions:
            by_video[index[p][0]].append(p)
        out = {}
        for path, ps in by_video.items():
            wanted = sorted({index[p][1] for p in ps})
            try:
                got = read_frames(path, wanted)
            except VideoError as exc:
                got = {}
                if path not in warned:
                    warned.add(path)
                    log.warning("unlabelled frames: %s; using black frames for it", exc)
            if len(got) < len(wanted) and path not in warned:
                warned.add(path)
                log.warning("unlabelled frames: %s decodes fewer frames than its header claims; "
                            "using other frames of it", path)
            spare = next(iter(got.values()), None)
            for p in ps:
                frame = got.get(index[p][1], spare)
                out[p] = _fit(frame, size) if frame is not None else np.zeros((*size, 3), np.uint8)
        return out

    return LazyFrames(len(index), size, read_many, cap_mb, source="videos")


def image_frames(paths: Sequence[Path], size: tuple[int, int], cap_mb: float = DEFAULT_CAP_MB) -> LazyFrames:
    """Image files read when asked for (an unreadable one becomes a black frame, with a warning)."""
    import cv2

    paths = list(paths)

    def read_many(positions: Sequence[int]) -> dict[int, np.ndarray]:
        out = {}
        for p in positions:
            img = cv2.imread(str(paths[p]), cv2.IMREAD_COLOR)
            if img is None:
                log.warning("unlabelled frames: cannot read %s; using a black frame", paths[p])
                img = np.zeros((*size, 3), np.uint8)
            out[p] = _fit(img, size)
        return out

    return LazyFrames(len(paths), size, read_many, cap_mb, source="images")


def memmap_frames(array: np.ndarray, cap_mb: float = 0.0) -> LazyFrames:
    """A memory-mapped N,H,W,3 array (a frame cache) behind the same interface."""
    def read_many(positions: Sequence[int]) -> dict[int, np.ndarray]:
        block = np.asarray(array[np.asarray(positions, dtype=np.int64)])
        return {p: block[k] for k, p in enumerate(positions)}

    return LazyFrames(len(array), array.shape[1:3], read_many, cap_mb, source="cache")
