"""Video decode and encode with OpenCV (and multi-frame DICOM through pydicom), with errors
that name the file and the cause.

Readers: ``VideoReader`` (a video opened once: its info, then its frames), ``probe`` (frame
rate, size, pixel spacing where the file says), ``iter_frames`` (every frame, one at a time)
and ``read_frames`` (only some frames, by seeking where seeking has been checked to be exact,
else by a sequential decode that keeps only those frames).
Still images renamed to a video suffix are refused rather than run as a one-frame video.
A capture device index ("0") or a stream URL ("rtsp://...") opens a live source through OpenCV
(``is_live``): no frame count, frames until the source ends or the caller stops reading.
The records, checks and capture opening they share live one floor down in :mod:`.capture`;
DICOM decoding in :mod:`.dicom`, frame-exact seeking in :mod:`.seek`.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from echoseg.atomic import atomic_path

# VideoError, VideoInfo, is_dicom, is_live and shown_source are this module's public names too
from .capture import (VideoError, VideoInfo, as_bgr, believable_fps, check_file, decoded, is_dicom,  # noqa: F401
                      is_live, open_capture, open_live, shown_source)


class VideoReader:
    """One video opened once: ``info`` (what :func:`probe` says) and then its frames, from the same open.

    Raises VideoError on construction for a missing or unreadable file. ``frames()`` yields every
    frame (H,W,3 uint8, BGR) once and raises "no frames decoded" at the end when none came; the
    capture is released when the frames are exhausted, on ``close()`` or on leaving a ``with``.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        import cv2

        self.path = path
        self._cap = None
        self._ds = None
        self._peeked: list[np.ndarray] = []
        self._rest: Iterator[np.ndarray] | None = None
        self.live = is_live(path)
        if self.live:
            self._cap = cap = open_live(str(path))
            fps = believable_fps(float(cap.get(cv2.CAP_PROP_FPS) or 0.0))
            self.info = VideoInfo(fps=fps, frame_count=0, width=int(cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0),
                                  height=int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0),
                                  fps_source="capture" if fps else "none", kind="live")
            return
        if is_dicom(path):
            check_file(Path(path))
            from .dicom import open_dicom

            self._ds, self.info = open_dicom(path)
            return
        self._cap = cap = open_capture(path)
        try:
            fps = believable_fps(float(cap.get(cv2.CAP_PROP_FPS) or 0.0))
            count = cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0
            self.info = VideoInfo(
                fps=fps,
                frame_count=int(count) if math.isfinite(count) and count > 0 else 0,
                width=int(cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0),
                height=int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0),
                fps_source="container" if fps else "none",
            )
        except BaseException:
            self.close()
            raise

    def peek(self, n: int) -> list[np.ndarray]:
        """The first ``n`` frames (fewer if the video has fewer), kept: ``frames()`` yields them first.

        For a live source, whose frames cannot be read twice; it holds them in memory."""
        it = self._raw_frames()
        try:
            while len(self._peeked) < n:
                self._peeked.append(next(it))
        except StopIteration:
            pass
        except VideoError:
            if not self._peeked:
                raise
        self._rest = it
        return list(self._peeked)

    def frames(self) -> Iterator[np.ndarray]:
        rest = self._rest
        if rest is None:
            yield from self._raw_frames()
            return
        peeked, self._peeked, self._rest = self._peeked, [], None
        yield from peeked
        yield from rest

    def _raw_frames(self) -> Iterator[np.ndarray]:
        if self._ds is not None:
            from .dicom import dicom_frames

            ds, self._ds = self._ds, None
            yield from dicom_frames(self.path, ds)
            return
        if self._cap is None:
            raise VideoError(self.path, "frames() was already read or the video was closed")
        try:
            yield from decoded(self._cap, self.path)
        finally:
            self._release()

    def close(self) -> None:
        self._peeked = []
        if self._rest is not None:
            rest, self._rest = self._rest, None
            rest.close()
        self._release()

    def _release(self) -> None:
        self._ds = None
        if self._cap is not None:
            cap, self._cap = self._cap, None
            cap.release()

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def probe(path: str | os.PathLike) -> VideoInfo:
    """Frame rate, claimed frame count, size (and DICOM pixel spacing), without decoding the frames."""
    with VideoReader(path) as reader:
        return reader.info


def iter_frames(path: str | os.PathLike) -> Iterator[np.ndarray]:
    """Decoded frames (H,W,3 uint8, BGR) one at a time; raises VideoError on a bad file.

    Grey videos come out with three equal channels. A file that opens but yields no frame
    raises "no frames decoded" at the end, so a streaming consumer never hangs on it.
    """
    reader = VideoReader(path)
    try:
        yield from reader.frames()
    finally:
        reader.close()


def read_video(path: str | os.PathLike) -> np.ndarray:
    """All frames as one F,H,W,3 uint8 array (BGR)."""
    return np.stack(list(iter_frames(path)))


def read_frames(path: str | os.PathLike, indices: Iterable[int]) -> dict[int, np.ndarray]:
    """Only the frames at ``indices`` (each its own array, no view of a whole video).

    Indices beyond the last decodable frame are absent from the result. Raises VideoError
    for a missing or unreadable file.
    """
    from .seek import read_selected

    return read_selected(path, sorted(set(int(i) for i in indices)))


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
                writer.write(as_bgr(np.asarray(f, dtype=np.uint8)))
        finally:
            writer.release()
    return out
