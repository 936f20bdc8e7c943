"""Video decode and encode with OpenCV, with errors that name the file and the cause."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from echoseg.atomic import atomic_path


class VideoError(RuntimeError):
    """A video that is missing, not a video, empty or truncated."""

    def __init__(self, path: str | os.PathLike, cause: str) -> None:
        super().__init__(f"{path}: {cause}")
        self.path = str(path)
        self.cause = cause


@dataclass(frozen=True)
class VideoInfo:
    fps: float
    frame_count: int  # as the container claims; may be 0 or wrong for truncated files
    width: int
    height: int


def _open(path: str | os.PathLike):
    import cv2

    p = Path(path)
    if not p.exists():
        raise VideoError(p, "file not found")
    if not p.is_file():
        raise VideoError(p, "not a file")
    if p.stat().st_size == 0:
        raise VideoError(p, "file is empty (0 bytes)")
    cap = cv2.VideoCapture(str(p))
    if not cap.isOpened():
        cap.release()
        raise VideoError(p, "OpenCV cannot open it as a video (not a video, or an unsupported codec)")
    return cap


def probe(path: str | os.PathLike) -> VideoInfo:
    """Frame rate, claimed frame count and size, without decoding the frames."""
    import cv2

    cap = _open(path)
    try:
        return VideoInfo(
            fps=float(cap.get(cv2.CAP_PROP_FPS) or 0.0),
            frame_count=int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0),
            width=int(cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0),
            height=int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0),
        )
    finally:
        cap.release()


def _as_bgr(frame: np.ndarray) -> np.ndarray:
    if frame.ndim == 2:
        return np.repeat(frame[:, :, None], 3, axis=2)
    if frame.shape[2] == 4:
        return np.ascontiguousarray(frame[:, :, :3])
    if frame.shape[2] == 1:
        return np.repeat(frame, 3, axis=2)
    return frame


def iter_frames(path: str | os.PathLike) -> Iterator[np.ndarray]:
    """Decoded frames (H,W,3 uint8, BGR) one at a time; raises VideoError on a bad file.

    Grey videos come out with three equal channels. A file that opens but yields no frame
    raises "no frames decoded" at the end, so a streaming consumer never hangs on it.
    """
    cap = _open(path)
    n = 0
    try:
        while True:
            ok, frame = cap.read()
            if not ok or frame is None:
                break
            n += 1
            yield _as_bgr(frame)
    finally:
        cap.release()
    if n == 0:
        raise VideoError(path, "no frames could be decoded (empty, truncated or corrupt video)")


def read_video(path: str | os.PathLike) -> np.ndarray:
    """All frames as one F,H,W,3 uint8 array (BGR)."""
    return np.stack(list(iter_frames(path)))


def write_video(path: str | os.PathLike, frames: np.ndarray | list[np.ndarray], fps: float,
                fourcc: str = "MJPG") -> Path:
    """Write frames (F,H,W[,3] uint8) to an AVI/MP4, complete or not at all.

    The file is written under a temporary name in the same folder and renamed when closed.
    """
    import cv2

    out = Path(path)
    if len(frames) == 0:
        raise ValueError(f"{out}: no frames to write")
    h, w = np.asarray(frames[0]).shape[:2]
    with atomic_path(out) as tmp:
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*fourcc), float(fps), (w, h), True)
        if not writer.isOpened():
            raise VideoError(out, f"OpenCV cannot write {fourcc} video here; try a .avi path with MJPG")
        try:
            for f in frames:
                writer.write(_as_bgr(np.asarray(f, dtype=np.uint8)))
        finally:
            writer.release()
    return out
