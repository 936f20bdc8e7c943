"""Reading a few frames of a video without decoding (or keeping) the rest.

OpenCV seeks with CAP_PROP_POS_FRAMES, which is exact for intra-only codecs (MJPG, the
synthetic and many research AVIs) and can land on a nearby key frame for inter-coded ones
(H.264 in MP4). So seeking is trusted per container+codec only after a check: the first
video of each kind is read both ways (seek, and a sequential decode up to its last wanted
frame) and the frames compared; a mismatch makes every later video of that kind decode
sequentially. Each read also checks the position the capture reports, and any seek that
fails or lands elsewhere falls back to the sequential decode for that video. Either way
only the wanted frames are kept, each as its own array.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from .capture import as_bgr, decoded, is_dicom, open_capture

log = logging.getLogger(__name__)

#: (suffix, fourcc) -> whether seeking was verified exact for that kind of file.
_SEEK_TRUSTED: dict[tuple[str, str], bool] = {}


def _kind(path: Path, cap) -> tuple[str, str]:
    import cv2

    code = int(cap.get(cv2.CAP_PROP_FOURCC) or 0)
    fourcc = "".join(chr((code >> (8 * i)) & 0xFF) for i in range(4)) if code > 0 else "?"
    return path.suffix.lower(), fourcc


def _sequential(path: Path, wanted: list[int]) -> dict[int, np.ndarray]:
    want, last, out = set(wanted), max(wanted), {}
    cap = open_capture(path)
    try:
        frames = decoded(cap, path)
        for i, frame in enumerate(frames):
            if i in want:
                out[i] = frame.copy()
            if i >= last:
                break
        frames.close()
    finally:
        cap.release()
    return out


def _seeked(cap, wanted: list[int], frame_count: int) -> dict[int, np.ndarray] | None:
    """Frames by seeking; None when a seek fails or lands elsewhere (the caller decodes instead)."""
    import cv2

    out = {}
    for i in wanted:
        if frame_count and i >= frame_count:
            return None  # beyond what the header claims: let the sequential decode decide
        if not cap.set(cv2.CAP_PROP_POS_FRAMES, float(i)):
            return None
        if int(round(cap.get(cv2.CAP_PROP_POS_FRAMES))) != i:
            return None
        ok, frame = cap.read()
        if not ok or frame is None:
            return None
        out[i] = as_bgr(frame).copy()
    return out


def read_selected(path: str | os.PathLike, wanted: list[int]) -> dict[int, np.ndarray]:
    """index -> BGR frame for the ``wanted`` (sorted, unique) indices that exist in the video."""
    import cv2

    p = Path(path)
    if not wanted:
        return {}
    if is_dicom(p):
        from .dicom import read_dicom_frames

        return read_dicom_frames(p, wanted)
    cap = open_capture(p)
    try:
        kind = _kind(p, cap)
        count = int(max(0.0, cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0.0))
        trusted = _SEEK_TRUSTED.get(kind)
        got = _seeked(cap, wanted, count) if trusted is not False else None
    finally:
        cap.release()
    if got is not None and trusted:
        return got
    seq = _sequential(p, wanted)
    if got is not None and trusted is None:
        same = got.keys() == seq.keys() and all(np.array_equal(got[i], seq[i]) for i in seq)
        _SEEK_TRUSTED[kind] = same
        if not same:
            log.info("seeking in %s %s files is not frame-exact; decoding them sequentially", *kind)
    return seq
