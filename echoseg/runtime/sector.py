"""Where the echo is in a video frame, and the square crop the model sees (numpy and OpenCV only).

Scanner screens and PACS exports hold more than the imaging sector: UI text, depth rulers, an
ECG trace, black bars. The model was trained on EchoNet-style frames (the sector alone, square,
112x112), so echo-run finds the sector, takes its bounding box, pads it with black to a square
(the aspect is kept: never stretched; the box sits at the bottom, centred across, as EchoNet frames show it) and resizes that to the model's input; the masks are
mapped back onto the input's own pixel grid.

Finding the sector (:func:`find_sector`) uses what sets the image apart from what is drawn
around it: speckle changes from frame to frame everywhere inside the sector, while text, rulers
and marks are static and a moving ECG trace changes only along a thin line. So: the temporal
standard deviation of each pixel (on a copy at most ``ANALYSIS_SIDE`` pixels wide), pixels above
an adaptive threshold that also change in most frames (a median absolute deviation over time above 0), the local density of such pixels in a window several line widths wide
(a thin line never fills it), an opening that removes what is left of lines and digits, the
largest connected region and the pieces next to it (dark blood pools and drop-out split a real
sector), their convex hull (a sector is convex; a dark cavity inside it is still the sector),
its bounding box. A box covering most of the frame (an EchoNet-style clip, where the
sector fills it) means the whole frame: ``auto`` is then the same as ``full``.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from echoseg.data.video import VideoError, VideoReader

log = logging.getLogger(__name__)

#: Frames the sector finder looks at (from the start of the video).
PROBE_FRAMES = 48
#: Those frames are read ahead and kept for the stream (one decode, one open) when they fit in this
#: many bytes; larger frames are looked at through a second open of the file, and nothing is kept.
#: A live source, which cannot be read twice, keeps at least MIN_PROBE_FRAMES * 4 whatever their size.
PEEK_BYTES = 32 * 2 ** 20
#: Fewest frames it needs; with fewer the whole frame is used.
MIN_PROBE_FRAMES = 4
#: Longest side of the copy the statistics are computed on.
ANALYSIS_SIDE = 256
#: A found square at least this fraction of the whole frame's square side means the whole frame.
FULL_SIDE_FRACTION = 0.8
#: A found region smaller than this fraction of the frame's area is not believed.
MIN_AREA_FRACTION = 0.02
#: Share of the pixels in a window that must change over time for the window to count as sector.
DENSITY_CUT = 0.5
#: Pieces of the sector (split by dark areas) are merged when this close (a fraction of the analysis side)
#: and at least MERGE_MIN of the largest piece's area.
MERGE_GAP = 0.04
MERGE_MIN = 0.02
#: The region then grows, by at most GROW of the analysis side, into pixels whose temporal median
#: absolute deviation exceeds GROW_STD grey levels.
GROW = 0.08
GROW_STD = 1.0
#: Temporal standard deviation (grey levels) below which a pixel counts as static, at the least.
MIN_STD = 2.5
#: The threshold also scales with the sector's own variation (a fraction of the 95th percentile).
STD_FRACTION = 0.15

ROI_MODES = ("auto", "full")


class RoiError(ValueError):
    """A --roi value that cannot be used."""


@dataclass(frozen=True)
class Crop:
    """The part of an input frame the model sees: the box x,y,w,h (input pixels), padded to a square.

    ``method``: "full" (the whole frame), "sector" (found by :func:`find_sector`), "dicom-region"
    (SequenceOfUltrasoundRegions) or "given" (``--roi x,y,w,h``); ``reason`` says why, in words.
    """

    x: int
    y: int
    w: int
    h: int
    frame_w: int
    frame_h: int
    method: str = "full"
    reason: str = ""

    @property
    def side(self) -> int:
        """Side of the padded square, in input pixels."""
        return max(self.w, self.h)

    @property
    def pad(self) -> tuple[int, int]:
        """(left, top) black padding: the box is centred across and sits at the bottom of its square.

        EchoNet-style frames show the sector that way: it spans the width and reaches the bottom,
        with a strip of black above the probe's apex. A screen's sector is then seen as the model's
        training frames showed it (measured: the apex kept at the top moved the read-out of real
        clips pasted into a screen by up to 8 EF points)."""
        return (self.side - self.w) // 2, self.side - self.h

    @property
    def identity(self) -> bool:
        """The frame goes to the model as it is (square, whole): nothing to crop or pad."""
        return (self.x, self.y, self.w, self.h) == (0, 0, self.frame_w, self.frame_h) and self.w == self.h

    def apply(self, frame: np.ndarray) -> np.ndarray:
        """Input frame H,W[,C] -> the box padded with black to side x side (the frame itself when identity)."""
        if self.identity:
            return frame
        import cv2

        box = frame[self.y:self.y + self.h, self.x:self.x + self.w]
        px, py = self.pad
        return cv2.copyMakeBorder(box, py, self.side - self.h - py, px, self.side - self.w - px,
                                  cv2.BORDER_CONSTANT, value=0)

    def mask_to_input(self, logits_hw: np.ndarray, cut: float) -> np.ndarray:
        """Model-size logits -> bool mask on the input's pixel grid (frame_h x frame_w); outside the box False."""
        import cv2

        m = np.asarray(logits_hw, dtype=np.float32)
        s = self.side
        if m.shape != (s, s):
            interp = cv2.INTER_LINEAR if s >= m.shape[0] else cv2.INTER_AREA
            m = cv2.resize(m, (s, s), interpolation=interp)
        if self.identity:
            return m > cut
        px, py = self.pad
        out = np.zeros((self.frame_h, self.frame_w), bool)
        np.greater(m[py:py + self.h, px:px + self.w], cut, out=out[self.y:self.y + self.h, self.x:self.x + self.w])
        return out

    def to_dict(self) -> dict[str, Any]:
        """What summary.json records: the box, the square it was padded to, the scale, and why."""
        return {"method": self.method, "x": self.x, "y": self.y, "w": self.w, "h": self.h,
                "square_px": self.side, "pad_left_px": self.pad[0], "pad_top_px": self.pad[1],
                "frame_w": self.frame_w, "frame_h": self.frame_h, "reason": self.reason}


def full_crop(width: int, height: int, reason: str = "the whole frame") -> Crop:
    """The whole frame (padded to a square when it is not one)."""
    return Crop(0, 0, width, height, width, height, "full", reason)


def parse_roi(text: str) -> str | tuple[int, int, int, int]:
    """``auto``, ``full`` or ``x,y,w,h`` (input pixels) -> the mode or the box; RoiError otherwise."""
    t = str(text).strip().lower()
    if t in ROI_MODES:
        return t
    m = re.fullmatch(r"\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*", t)
    if not m:
        raise RoiError(f"--roi {text!r}: expected auto, full or x,y,w,h in the input's pixels (e.g. 120,40,480,420)")
    x, y, w, h = (int(v) for v in m.groups())
    if w < 8 or h < 8:
        raise RoiError(f"--roi {text}: the box is {w}x{h} pixels; give one at least 8x8")
    return x, y, w, h


def given_crop(box: tuple[int, int, int, int], width: int, height: int, method: str = "given",
               reason: str = "--roi x,y,w,h") -> Crop:
    """A box from the user (or a DICOM region) clipped to the frame; RoiError when it misses the frame."""
    x, y, w, h = (int(v) for v in box)
    x0, y0, x1, y1 = max(0, x), max(0, y), min(width, x + w), min(height, y + h)
    if x1 - x0 < 8 or y1 - y0 < 8:
        raise RoiError(f"roi {x},{y},{w},{h} lies outside the {width}x{height} frame (or leaves under 8x8 of it); "
                       "give x,y,w,h inside the frame")
    return Crop(x0, y0, x1 - x0, y1 - y0, width, height, method, reason)


def settle(crop: Crop) -> Crop:
    """A crop whose square is nearly the whole frame's becomes the whole frame (EchoNet-style clips stay as they are)."""
    whole = max(crop.frame_w, crop.frame_h)
    if crop.method != "full" and crop.side >= FULL_SIDE_FRACTION * whole:
        return full_crop(crop.frame_w, crop.frame_h,
                         f"{crop.method} {crop.x},{crop.y},{crop.w},{crop.h} covers most of the frame: whole frame used")
    return crop


def _analysis_grey(frame: np.ndarray, scale: float) -> np.ndarray:
    import cv2

    g = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) if frame.shape[2] == 3 else frame[..., 0]
    if scale < 1.0:
        g = cv2.resize(g, (max(1, round(g.shape[1] * scale)), max(1, round(g.shape[0] * scale))),
                       interpolation=cv2.INTER_AREA)
    return g.astype(np.float32)


def sector_map(frames: Iterable[np.ndarray], max_frames: int = PROBE_FRAMES) -> tuple[np.ndarray, float, int]:
    """(bool map of the sector at analysis scale, analysis scale, frames used); see the module's notes."""
    import cv2

    grey: list[np.ndarray] = []
    scale = 1.0
    for k, f in enumerate(frames):
        if k >= max_frames:
            break
        if k == 0:
            scale = min(1.0, ANALYSIS_SIDE / max(f.shape[:2]))
        grey.append(_analysis_grey(f, scale))
    if len(grey) < MIN_PROBE_FRAMES:
        shape = grey[0].shape if grey else (1, 1)
        return np.zeros(shape, bool), scale, len(grey)
    g = np.stack(grey)
    std = g.std(axis=0)
    tau = max(MIN_STD, STD_FRACTION * float(np.percentile(std, 95)))
    # a trace or a cursor crosses a pixel in a few frames only, speckle changes it in most: the
    # median absolute deviation over time is 0 for the former (the median ignores those frames)
    mad = np.median(np.abs(g - np.median(g, axis=0)), axis=0)
    active = ((std > tau) & (mad > 0)).astype(np.float32)
    side = max(active.shape)
    k = max(5, int(round(side * 0.03)) | 1)
    density = cv2.blur(active, (k, k), borderType=cv2.BORDER_CONSTANT)
    cand = (density >= DENSITY_CUT).astype(np.uint8)
    ell = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    cand = cv2.morphologyEx(cand, cv2.MORPH_OPEN, ell)
    cand = cv2.morphologyEx(cand, cv2.MORPH_CLOSE, ell)
    n, labels, st, _ = cv2.connectedComponentsWithStats(cand, connectivity=8)
    if n <= 1:
        return np.zeros(cand.shape, bool), scale, len(grey)
    keep = _near_largest(st[1:], gap=MERGE_GAP * side)
    region = np.isin(labels, 1 + np.asarray(keep)).astype(np.uint8)
    filled = _hull(region)
    # the sector's dark edges (far field, a dark lateral wall) vary only a little: grow the region
    # into pixels that vary at all, next to it (static text and rulers do not vary; a trace lies apart)
    r = max(3, int(round(GROW * side)))
    zone = cv2.dilate(filled, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
    weak = ((std > GROW_STD) & (mad > 0) & (zone > 0)).astype(np.uint8)
    weak = cv2.morphologyEx(weak, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))) | filled
    n, labels = cv2.connectedComponents(weak, connectivity=8)
    touching = np.unique(labels[filled > 0])
    return _hull(np.isin(labels, touching[touching > 0]).astype(np.uint8)).astype(bool), scale, len(grey)


def _hull(region: np.ndarray) -> np.ndarray:
    import cv2

    filled = np.zeros_like(region)
    cv2.fillConvexPoly(filled, cv2.convexHull(cv2.findNonZero(region)), 1)
    return filled


def _near_largest(stats: np.ndarray, gap: float) -> list[int]:
    """Indices of the largest component and of those (over MERGE_MIN of its area) within ``gap`` of the region so far.

    A real sector falls apart where the image is dark (blood pools, drop-out, the far field); its
    pieces lie next to each other, while a trace or a text block lies apart. The region is then
    the convex hull of the pieces (a sector is convex)."""
    import cv2

    area = stats[:, cv2.CC_STAT_AREA]
    order = [int(i) for i in np.argsort(-area)]
    kept = [order[0]]
    x0, y0 = stats[order[0], 0], stats[order[0], 1]
    x1, y1 = x0 + stats[order[0], 2], y0 + stats[order[0], 3]
    grew = True
    while grew:
        grew = False
        for i in order:
            if i in kept or area[i] < MERGE_MIN * area[order[0]]:
                continue
            bx0, by0, bw, bh = stats[i, :4]
            dx = max(x0 - (bx0 + bw), bx0 - x1, 0)
            dy = max(y0 - (by0 + bh), by0 - y1, 0)
            if max(dx, dy) <= gap:
                kept.append(i)
                x0, y0, x1, y1 = min(x0, bx0), min(y0, by0), max(x1, bx0 + bw), max(y1, by0 + bh)
                grew = True
    return kept


def find_sector(frames: Iterable[np.ndarray], width: int, height: int, max_frames: int = PROBE_FRAMES) -> Crop:
    """The crop ``--roi auto`` uses for frames of ``width`` x ``height``: the sector's box, or the whole frame.

    The whole frame when fewer than MIN_PROBE_FRAMES frames came, nothing varies, the region is
    implausibly small, or its square is nearly the frame's own (:func:`settle`); ``reason`` says which.
    """
    region, scale, used = sector_map(frames, max_frames)
    if used < MIN_PROBE_FRAMES:
        return full_crop(width, height, f"only {used} frame(s) to look at: whole frame used")
    if not region.any():
        return full_crop(width, height, "no region varies over time like an ultrasound sector: whole frame used")
    frac = float(region.mean())
    if frac < MIN_AREA_FRACTION:
        return full_crop(width, height, f"the varying region is {100 * frac:.1f}% of the frame, too small "
                                        "to be the sector: whole frame used")
    ys, xs = np.nonzero(region)
    inv = 1.0 / scale
    lo, hi = float(xs.min()), float(xs.max() + 1)
    x0 = max(0, int(np.floor(lo * inv)))
    y0 = max(0, int(np.floor(ys.min() * inv)))
    x1 = min(width, int(np.ceil(hi * inv)))
    y1 = min(height, int(np.ceil((ys.max() + 1) * inv)))
    crop = Crop(x0, y0, x1 - x0, y1 - y0, width, height, "sector",
                f"varying speckle region over {used} frames ({100 * frac:.0f}% of the frame)")
    return settle(crop)


def resolve_crop(roi: str, reader: VideoReader, path: str | os.PathLike) -> Crop:
    """The crop for ``--roi`` on this input: the whole frame, the given box, the DICOM region or the found sector.

    ``auto`` looks at the first PROBE_FRAMES frames: read ahead and kept for the stream
    (VideoReader.peek) when they fit in PEEK_BYTES or the source is live, else through a second
    open of the file (nothing held)."""
    info = reader.info
    mode = parse_roi(roi)
    width, height = info.width, info.height
    frame_bytes = 3 * width * height
    if mode != "auto":
        wanted = 0 if width and height else 1
    elif reader.live:
        wanted = max(4 * MIN_PROBE_FRAMES, min(PROBE_FRAMES, PEEK_BYTES // max(1, frame_bytes)))
    else:
        wanted = PROBE_FRAMES if 0 < frame_bytes * PROBE_FRAMES <= PEEK_BYTES else 0 if width and height else 1
    first = reader.peek(wanted) if wanted else []
    if first:
        height, width = first[0].shape[:2]
    if not (width and height):
        raise VideoError(path, "the frame size is unknown and no frame could be read")
    if mode == "full":
        return full_crop(width, height)
    if isinstance(mode, tuple):
        return given_crop(mode, width, height)
    if info.region is not None:
        try:
            return settle(given_crop(info.region, width, height, "dicom-region",
                                     "the 2-D region of SequenceOfUltrasoundRegions"))
        except RoiError as exc:
            log.warning("%s: %s; looking for the sector instead", path, exc)
    if first and (reader.live or wanted >= PROBE_FRAMES):
        return find_sector(first, width, height)
    with VideoReader(path) as probe_reader:
        frames = probe_reader.frames()
        try:
            return find_sector(itertools.islice(frames, PROBE_FRAMES), width, height)
        finally:
            frames.close()
