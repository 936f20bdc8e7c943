"""Where the echo is in a video frame: ``--roi auto`` (numpy and OpenCV only).

Scanner screens and PACS exports hold more than the imaging sector: UI text, depth rulers, an
ECG trace, black bars. The model was trained on EchoNet-style frames (the sector alone, square),
so echo-run finds the sector and hands its box to runtime/roi.py (padded to a square, never
stretched; masks mapped back onto the input's pixel grid).

Finding it (:func:`find_sector`) uses what sets the image apart from what is drawn around it:
speckle changes from frame to frame everywhere inside the sector, while text, rulers and marks
are static, and a moving ECG trace changes only along a thin line and any one pixel only in the
few frames the trace crosses it. So, on a copy at most ANALYSIS_SIDE pixels wide: pixels whose
temporal standard deviation is above an adaptive threshold and that change in most frames (a
temporal median absolute deviation above 0); the local density of such pixels in a window
several line widths wide (a thin line never fills it); an opening that removes what is left of
lines and digits; the largest connected region and the pieces next to it (dark blood pools and
drop-out split a real sector); their convex hull (a sector is convex; a dark cavity inside it is
still the sector), grown a little into weakly varying pixels next to it; its bounding box. A box
whose square is most of the frame's (an EchoNet-style clip, whose sector fills it) means the
whole frame: ``auto`` is then the same as ``full`` (roi.settle).
"""

from __future__ import annotations

import itertools
import logging
import os
from typing import Iterable

import numpy as np

from echoseg.data.video import VideoError, VideoReader

from .roi import Crop, RoiError, full_crop, given_crop, parse_roi, settle

__all__ = ["PROBE_FRAMES", "Crop", "RoiError", "find_sector", "parse_roi", "resolve_crop", "sector_map"]

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
#: A found region smaller than this fraction of the frame's area is not believed.
MIN_AREA_FRACTION = 0.02
#: Share of the pixels in a window that must change over time for the window to count as sector.
DENSITY_CUT = 0.5
#: Pieces of the sector (split by dark areas) are merged when this close (a fraction of the analysis side)
#: and at least MERGE_MIN of the largest piece's area.
MERGE_GAP = 0.04
MERGE_MIN = 0.02
#: The region then grows, by at most GROW of the analysis side, into pixels whose temporal standard
#: deviation exceeds GROW_STD grey levels and that change in most frames.
GROW = 0.08
GROW_STD = 1.0
#: Temporal standard deviation (grey levels) below which a pixel counts as static, at the least.
MIN_STD = 2.5
#: The threshold also scales with the sector's own variation (a fraction of the 95th percentile).
STD_FRACTION = 0.15

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
