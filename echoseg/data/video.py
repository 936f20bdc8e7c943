"""Video decode and encode with OpenCV (and multi-frame DICOM through pydicom), with errors
that name the file and the cause.

Readers: ``VideoReader`` (a video opened once: its info, then its frames), ``probe`` (frame
rate, size, pixel spacing where the file says), ``iter_frames`` (every frame, one at a time)
and ``read_frames`` (only some frames, by seeking where seeking has been checked to be exact,
else by a sequential decode that keeps only those frames).
Still images renamed to a video suffix are refused rather than run as a one-frame video.
A capture device index ("0") or a stream URL ("rtsp://...") opens a live source through OpenCV
(``is_live``): no frame count, frames until the source ends or the caller stops reading.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from echoseg.atomic import atomic_path
from echoseg.errors import EchosegError

log = logging.getLogger(__name__)

#: FFmpeg's own log lines (decoder warnings, "No space left on device" floods) are replaced
#: by our one-line errors; "-8" is AV_LOG_QUIET. Set before OpenCV opens its first capture.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

#: A container's frame rate outside this range is not believed (0, NaN, 90000 time bases).
FPS_RANGE = (0.5, 1000.0)

#: Leading bytes of still-image formats OpenCV's FFmpeg backend would open as a one-frame "video".
_IMAGE_MAGIC = ((b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"GIF87a", "GIF"),
                (b"GIF89a", "GIF"), (b"BM", "BMP"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"))


class VideoError(EchosegError, RuntimeError):
    """A video that is missing, not a video, empty or truncated."""

    def __init__(self, path: str | os.PathLike, cause: str) -> None:
        super().__init__(f"{path}: {cause}")
        self.path = str(path)
        self.cause = cause


@dataclass(frozen=True)
class VideoInfo:
    fps: float  # 0 when the file does not say (the caller assumes a rate and says so)
    frame_count: int  # as the container claims; may be 0 or wrong for truncated files
    width: int
    height: int
    spacing_cm: tuple[float, float] | None = None  # (x, y) cm per pixel, where the file says (DICOM)
    fps_source: str = "container"  # which tag or property the frame rate came from
    kind: str = "video"  # "video" (OpenCV), "dicom" or "live" (capture device or stream URL)
    region: tuple[int, int, int, int] | None = None  # x,y,w,h of the image region, where the file says (DICOM)


def is_live(source: str | os.PathLike | int) -> bool:
    """A capture device index ("0", "1") or a stream URL ("rtsp://", "http://", ...), not a file."""
    s = str(source)
    return "://" in s or (s.isdigit() and not Path(s).exists())


def shown_source(source: str | os.PathLike) -> str:
    """The source as it may be printed and recorded: a URL without its user:password@ part."""
    s = str(source)
    if "://" not in s:
        return s
    scheme, rest = s.split("://", 1)
    host, slash, tail = rest.partition("/")
    return f"{scheme}://{host.rpartition('@')[2]}{slash}{tail}"


def _open_live(source: str) -> Any:
    import cv2

    cap = cv2.VideoCapture(int(source)) if source.isdigit() else cv2.VideoCapture(source)
    if not cap.isOpened():
        cap.release()
        what = f"capture device {source}" if source.isdigit() else "this stream URL"
        raise VideoError(shown_source(source), f"OpenCV cannot open {what} (no such device, unreachable, or no "
                                               "FFmpeg/GStreamer support for it in this OpenCV)")
    return cap


def _check_file(p: Path) -> None:
    if not p.exists():
        raise VideoError(p, "file not found")
    if not p.is_file():
        raise VideoError(p, "not a file")
    if p.stat().st_size == 0:
        raise VideoError(p, "file is empty (0 bytes)")


def _head(p: Path, n: int = 132) -> bytes:
    with open(p, "rb") as fh:
        return fh.read(n)


def is_dicom(path: str | os.PathLike) -> bool:
    """A .dcm/.dicom name, or the DICM prefix after the 128-byte preamble."""
    p = Path(path)
    if p.suffix.lower() in (".dcm", ".dicom"):
        return True
    try:
        return p.is_file() and _head(p)[128:132] == b"DICM"
    except OSError:
        return False


def _refuse_still_image(p: Path) -> None:
    head = _head(p, 16)
    for magic, kind in _IMAGE_MAGIC:
        if head.startswith(magic):
            raise VideoError(p, f"a {kind} still image, not a video; give a video (AVI, MP4) or a "
                                "multi-frame DICOM")
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        raise VideoError(p, "a WebP still image, not a video; give a video (AVI, MP4) or a multi-frame DICOM")


def _open(path: str | os.PathLike):
    import cv2

    p = Path(path)
    _check_file(p)
    _refuse_still_image(p)
    cap = cv2.VideoCapture(str(p))
    if not cap.isOpened():
        cap.release()
        raise VideoError(p, "OpenCV cannot open it as a video (not a video, or an unsupported codec)")
    return cap


def _believable_fps(fps: float) -> float:
    return float(fps) if math.isfinite(fps) and FPS_RANGE[0] <= fps <= FPS_RANGE[1] else 0.0


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
            self._cap = cap = _open_live(str(path))
            fps = _believable_fps(float(cap.get(cv2.CAP_PROP_FPS) or 0.0))
            self.info = VideoInfo(fps=fps, frame_count=0, width=int(cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0),
                                  height=int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0),
                                  fps_source="capture" if fps else "none", kind="live")
            return
        if is_dicom(path):
            _check_file(Path(path))
            from .dicom import open_dicom

            self._ds, self.info = open_dicom(path)
            return
        self._cap = cap = _open(path)
        try:
            fps = _believable_fps(float(cap.get(cv2.CAP_PROP_FPS) or 0.0))
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
        cap = self._cap
        if cap is None:
            raise VideoError(self.path, "frames() was already read or the video was closed")
        n = 0
        try:
            while True:
                ok, frame = cap.read()
                if not ok or frame is None:
                    break
                n += 1
                yield _as_bgr(frame)
        finally:
            self._release()
        if n == 0:
            raise VideoError(self.path, "no frames could be decoded (empty, truncated or corrupt video)")

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
                writer.write(_as_bgr(np.asarray(f, dtype=np.uint8)))
        finally:
            writer.release()
    return out
