"""The ground floor of video reading, shared by every reader in data/ (video, seek, dicom): the
error and info records, the file checks, opening an OpenCV capture, and the frame-rate and
colour conventions. It imports none of the readers, so they import it and not each other's
private helpers.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from echoseg.errors import EchosegError

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


def open_live(source: str) -> Any:
    import cv2

    cap = cv2.VideoCapture(int(source)) if source.isdigit() else cv2.VideoCapture(source)
    if not cap.isOpened():
        cap.release()
        what = f"capture device {source}" if source.isdigit() else "this stream URL"
        raise VideoError(shown_source(source), f"OpenCV cannot open {what} (no such device, unreachable, or no "
                                               "FFmpeg/GStreamer support for it in this OpenCV)")
    return cap


def check_file(p: Path) -> None:
    if not p.exists():
        raise VideoError(p, "file not found")
    if not p.is_file():
        raise VideoError(p, "not a file")
    if p.stat().st_size == 0:
        raise VideoError(p, "file is empty (0 bytes)")


def head_bytes(p: Path, n: int = 132) -> bytes:
    with open(p, "rb") as fh:
        return fh.read(n)


def is_dicom(path: str | os.PathLike) -> bool:
    """A .dcm/.dicom name, or the DICM prefix after the 128-byte preamble."""
    p = Path(path)
    if p.suffix.lower() in (".dcm", ".dicom"):
        return True
    try:
        return p.is_file() and head_bytes(p)[128:132] == b"DICM"
    except OSError:
        return False


def refuse_still_image(p: Path) -> None:
    head = head_bytes(p, 16)
    for magic, kind in _IMAGE_MAGIC:
        if head.startswith(magic):
            raise VideoError(p, f"a {kind} still image, not a video; give a video (AVI, MP4) or a "
                                "multi-frame DICOM")
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        raise VideoError(p, "a WebP still image, not a video; give a video (AVI, MP4) or a multi-frame DICOM")


def open_capture(path: str | os.PathLike):
    import cv2

    p = Path(path)
    check_file(p)
    refuse_still_image(p)
    cap = cv2.VideoCapture(str(p))
    if not cap.isOpened():
        cap.release()
        raise VideoError(p, "OpenCV cannot open it as a video (not a video, or an unsupported codec)")
    return cap


def believable_fps(fps: float) -> float:
    return float(fps) if math.isfinite(fps) and FPS_RANGE[0] <= fps <= FPS_RANGE[1] else 0.0


def as_bgr(frame: np.ndarray) -> np.ndarray:
    if frame.ndim == 2:
        return np.repeat(frame[:, :, None], 3, axis=2)
    if frame.shape[2] == 4:
        return np.ascontiguousarray(frame[:, :, :3])
    if frame.shape[2] == 1:
        return np.repeat(frame, 3, axis=2)
    return frame


def decoded(cap: Any, path: str | os.PathLike) -> Iterator[np.ndarray]:
    """Every frame an open OpenCV capture still holds, as H,W,3 uint8 BGR; a capture that yields
    none at all is a VideoError ("no frames could be decoded"), so a consumer never hangs on it.
    The caller releases the capture."""
    n = 0
    while True:
        ok, frame = cap.read()
        if not ok or frame is None:
            break
        n += 1
        yield as_bgr(frame)
    if n == 0:
        raise VideoError(path, "no frames could be decoded (empty, truncated or corrupt video)")
