"""The in-memory form every reader returns, and the record of what was skipped and why."""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from echoseg.errors import EchosegError

log = logging.getLogger("echoseg.data")

#: Called by the readers after each video or file: (done, total).
Progress = Callable[[int, int], None]
#: Without a progress callback, readers log how far they are at most this often (seconds).
PROGRESS_LOG_S = 10.0


def log_progress(what: str, total: int) -> Progress:
    """A Progress that logs "indexed 1200/7465 train videos" at INFO every PROGRESS_LOG_S seconds."""
    last = [time.monotonic()]

    def tick(done: int, n: int) -> None:
        now = time.monotonic()
        if now - last[0] >= PROGRESS_LOG_S or (done == n and n >= 100):
            last[0] = now
            log.info("indexed %d/%d %s", done, n, what)

    return tick


class DataError(EchosegError, ValueError):
    """A dataset that cannot be read at all (wrong layout, missing columns)."""


@dataclass
class SkipReport:
    """One warning line per skipped item, and counts by reason for the summary."""

    reasons: Counter = field(default_factory=Counter)
    messages: list[str] = field(default_factory=list)

    def skip(self, what: str, reason: str) -> None:
        self.reasons[reason] += 1
        msg = f"skipped {what}: {reason}"
        self.messages.append(msg)
        log.warning(msg)

    @property
    def total(self) -> int:
        return sum(self.reasons.values())

    def summary(self) -> str:
        if not self.total:
            return "nothing skipped"
        parts = ", ".join(f"{n} {reason}" for reason, n in self.reasons.most_common())
        return f"skipped {self.total}: {parts}"


@dataclass
class FrameSet:
    """Labelled frames at model size: images N,H,W,3 uint8 (BGR) and masks N,H,W bool."""

    images: np.ndarray
    masks: np.ndarray
    names: list[str]
    phases: list[str]  # "ED", "ES" or "" per frame
    skipped: SkipReport = field(default_factory=SkipReport)
    layout: str = ""

    def __len__(self) -> int:
        return len(self.names)

    @classmethod
    def from_items(cls, items: list[tuple[str, str, np.ndarray, np.ndarray]], size: tuple[int, int],
                   report: SkipReport, layout: str) -> "FrameSet":
        """(name, phase, image, mask) tuples at model size -> one FrameSet (empty arrays if none)."""
        h, w = size
        if not items:
            return cls(np.zeros((0, h, w, 3), np.uint8), np.zeros((0, h, w), bool), [], [], report, layout)
        names, phases, images, masks = zip(*items)
        return cls(np.stack(images), np.stack(masks), list(names), list(phases), report, layout)


class FrameSetBuilder:
    """Fills one preallocated images/masks pair frame by frame (no list of frames, no stack copy).

    ``capacity`` is an upper bound (e.g. the number of traced frames); the pages of unused
    slots are never touched, so they cost address space, not memory.
    """

    def __init__(self, capacity: int, size: tuple[int, int]) -> None:
        h, w = size
        self.images = np.empty((max(0, capacity), h, w, 3), np.uint8)
        self.masks = np.empty((max(0, capacity), h, w), bool)
        self.names: list[str] = []
        self.phases: list[str] = []

    def __len__(self) -> int:
        return len(self.names)

    def add(self, name: str, phase: str, image: np.ndarray, mask: np.ndarray) -> None:
        i = len(self.names)
        if i >= len(self.images):
            raise ValueError(f"FrameSetBuilder: more than the {len(self.images)} frames it was sized for")
        self.images[i] = image
        self.masks[i] = mask
        self.names.append(name)
        self.phases.append(phase)

    def build(self, report: SkipReport, layout: str, order: list[int] | None = None) -> FrameSet:
        """The FrameSet of the frames added (in ``order`` when given: a small reordering copy)."""
        n = len(self.names)
        if order is None:
            return FrameSet(self.images[:n], self.masks[:n], self.names, self.phases, report, layout)
        idx = np.asarray(order, dtype=np.int64)
        return FrameSet(self.images[idx], self.masks[idx], [self.names[i] for i in order],
                        [self.phases[i] for i in order], report, layout)


def resize_pair(image: np.ndarray, mask: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Image (area/linear) and mask (nearest, binarised) resized to (H, W)."""
    import cv2

    h, w = size
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.shape[:2] != (h, w):
        interp = cv2.INTER_AREA if image.shape[0] > h else cv2.INTER_LINEAR
        image = cv2.resize(image, (w, h), interpolation=interp)
    if mask.shape[:2] != (h, w):
        mask = cv2.resize(mask.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
    return image[:, :, :3], mask.astype(bool)
