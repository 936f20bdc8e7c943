"""Multi-frame ultrasound DICOM (cine loops) as video: frames, frame rate and pixel spacing.

pydicom is an optional dependency (``pip install 'echoseg[dicom]'``). Frames come out as
OpenCV does them, H,W,3 uint8 BGR. The frame rate comes from the timing tags, in this
order: FrameTime (0018,1063, ms per frame), FrameTimeVector (0018,1065, ms between
frames), CineRate (0018,0040) and RecommendedDisplayFrameRate (0008,2144). The spacing is
PixelSpacing (0028,0030, mm, row then column) or else the 2-D region of
SequenceOfUltrasoundRegions (0018,6011) whose PhysicalDeltaX/Y are in cm (units code 3).
A file without pixel data, or whose transfer syntax pydicom cannot decode here, raises one
VideoError naming what is missing.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .capture import VideoError, VideoInfo, believable_fps

log = logging.getLogger(__name__)

#: PhysicalUnitsX/YDirection code for centimetres (DICOM PS3.3 C.8.5.5.1.15).
UNITS_CM = 3
#: RegionSpatialFormat code for a 2-D (B-mode) region.
REGION_2D = 1
PHOTOMETRIC_OK = ("MONOCHROME1", "MONOCHROME2", "RGB", "YBR_FULL", "YBR_FULL_422", "PALETTE COLOR")


def _pydicom():
    try:
        import pydicom
        import pydicom.pixels  # noqa: F401  (pydicom >= 3)
    except ImportError as exc:
        raise ImportError("reading DICOM needs pydicom >= 3: pip install 'echoseg[dicom]'") from exc
    return pydicom


@contextmanager
def _quiet() -> Iterator[None]:
    """pydicom's own logging (a decoder plugin's failure is logged with its traceback, ~20 lines) and
    its warnings kept out of the terminal: what went wrong reaches the user as one VideoError line."""
    logger = logging.getLogger("pydicom")
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _why(exc: BaseException) -> str:
    """An exception's text in one line (pydicom puts each plugin's reason on a line of its own)."""
    text = " ".join(part.strip() for part in str(exc).splitlines() if part.strip())
    text = re.sub(r"<_io\.BytesIO object at 0x[0-9a-fA-F]+>", "the frame", text)
    return (text or type(exc).__name__)[:300]


def _dataset(path: str | os.PathLike) -> Any:
    """The dataset with its pixel data deferred (not read into memory), checked for decodability;
    NumberOfFrames set to the frames the pixel data holds (see :func:`_frames_held`)."""
    try:
        pydicom = _pydicom()
    except ImportError as exc:
        raise VideoError(path, str(exc)) from None
    from pydicom.errors import InvalidDicomError

    try:
        with _quiet():
            ds = pydicom.dcmread(str(path), defer_size="1 KB")
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError) as exc:
        raise VideoError(path, f"not a readable DICOM file ({_why(exc)})") from None
    if "PixelData" not in ds:
        what = "float pixel data, which is not supported" if ("FloatPixelData" in ds or "DoubleFloatPixelData" in ds) \
            else "no pixel data (7FE0,0010)"
        raise VideoError(path, f"DICOM has {what}; give a DICOM cine with image frames")
    _check_transfer_syntax(path, ds)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric not in PHOTOMETRIC_OK:
        raise VideoError(path, f"DICOM photometric interpretation {photometric} is not supported "
                               f"(supported: {', '.join(PHOTOMETRIC_OK)})")
    said = int(ds.get("NumberOfFrames") or 1)
    held = _frames_held(path, ds, said)
    if held != said:
        _warn_once(f"{path}: NumberOfFrames says {said} but the pixel data holds {held} frame(s); "
                   f"using the {held} present")
        ds.NumberOfFrames = held
    return ds


_WARNED: set[str] = set()


def _warn_once(line: str) -> None:
    if line not in _WARNED:  # probing and decoding both read the header
        _WARNED.add(line)
        log.warning("%s", line)


def _frames_held(path: str | os.PathLike, ds: Any, said: int) -> int:
    """How many whole frames the pixel data holds, read from its length (native) or its items
    (encapsulated) without decoding it; ``said`` where that cannot be told. A file that holds not
    even one frame of the Rows x Columns it declares is a one-line VideoError."""
    rows, cols = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
    if rows <= 0 or cols <= 0:
        raise VideoError(path, f"DICOM Rows x Columns is {rows} x {cols}; a cine needs both above 0")
    raw = dict.get(ds._dict, 0x7FE00010)  # the element as read: a deferred value is not loaded for this
    length = getattr(raw, "length", None)
    if length is None:
        value = getattr(raw, "value", None)
        length = len(value) if isinstance(value, (bytes, bytearray)) else None
    if length is None:
        return said
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if length == 0xFFFFFFFF or (syntax is not None and syntax.is_compressed):
        return _encapsulated_frames(ds, said)
    samples = int(ds.get("SamplesPerPixel") or 1)
    bits = int(ds.get("BitsAllocated") or 8)
    if str(ds.get("PhotometricInterpretation", "")).upper() == "YBR_FULL_422":
        samples = 2  # chroma shared by pixel pairs: two samples a pixel as stored
    frame_bits = rows * cols * samples * bits
    held = (8 * int(length)) // frame_bits
    if held < 1:
        raise VideoError(path, f"DICOM pixel data holds {length} bytes, less than one {cols}x{rows} frame "
                               f"({frame_bits // 8} bytes at {samples} sample(s) of {bits} bits); the file is "
                               "cut short or its Rows/Columns/BitsAllocated are wrong")
    return held


def _encapsulated_frames(ds: Any, said: int) -> int:
    """Frames of compressed pixel data: the basic offset table's entries, else (each frame at least
    one fragment) fewer fragments than NumberOfFrames bound it; ``said`` where nothing tells."""
    from io import BytesIO

    from pydicom.encaps import parse_basic_offsets, parse_fragments

    try:
        with _quiet():
            buf = BytesIO(ds.PixelData)
            offsets = parse_basic_offsets(buf)
            fragments, _ = parse_fragments(buf)
    except (ValueError, TypeError, KeyError, EOFError, OSError):
        return said
    if offsets:
        return len(offsets)
    return fragments if 0 < fragments < said else said


def _check_transfer_syntax(path: str | os.PathLike, ds: Any) -> None:
    from pydicom.pixels import get_decoder

    meta = getattr(ds, "file_meta", None)
    uid = meta.get("TransferSyntaxUID") if meta is not None else None
    if uid is None:
        return  # pydicom infers the encoding of a file without file meta; uncompressed then
    name = f"{uid.name} ({uid})" if uid.name != str(uid) else f"{uid} (unknown)"
    try:
        decoder = get_decoder(uid)
    except NotImplementedError:
        raise VideoError(path, f"DICOM transfer syntax {name} is not supported; convert it to an "
                               "uncompressed or JPEG transfer syntax") from None
    if not decoder.is_available:
        needs = "; ".join(decoder.missing_dependencies) or "a pixel data plugin"
        raise VideoError(path, f"DICOM transfer syntax {name} cannot be decoded here: install one of: {needs}")


def frame_rate(ds: Any) -> tuple[float, str]:
    """(frames per second, the tag it came from); (0, "none") when no tag gives a usable rate."""
    if ds.get("FrameTime") not in (None, ""):
        ft = float(ds.FrameTime)
        if ft > 0 and believable_fps(1000.0 / ft):
            return 1000.0 / ft, "FrameTime"
    vec = ds.get("FrameTimeVector")
    if vec not in (None, ""):
        values = list(vec) if isinstance(vec, Sequence) and not isinstance(vec, str) else [vec]
        steps = np.asarray([float(v) for v in values])
        steps = steps[1:] if len(steps) > 1 and steps[0] == 0 else steps
        steps = steps[steps > 0]
        if steps.size and believable_fps(1000.0 / float(steps.mean())):
            return 1000.0 / float(steps.mean()), "FrameTimeVector"
    for tag in ("CineRate", "RecommendedDisplayFrameRate"):
        if ds.get(tag) not in (None, ""):
            fps = believable_fps(float(ds.get(tag)))
            if fps:
                return fps, tag
    return 0.0, "none"


def pixel_spacing_cm(ds: Any) -> tuple[tuple[float, float] | None, str]:
    """((x, y) cm per pixel, the tag it came from), or (None, "none")."""
    ps = ds.get("PixelSpacing")
    if ps is not None and len(ps) == 2 and float(ps[0]) > 0 and float(ps[1]) > 0:
        return (float(ps[1]) / 10.0, float(ps[0]) / 10.0), "PixelSpacing"
    best, best_area = None, -1.0
    for r in ds.get("SequenceOfUltrasoundRegions") or []:
        if r.get("PhysicalUnitsXDirection") != UNITS_CM or r.get("PhysicalUnitsYDirection") != UNITS_CM:
            continue
        dx, dy = abs(float(r.get("PhysicalDeltaX") or 0)), abs(float(r.get("PhysicalDeltaY") or 0))
        if dx <= 0 or dy <= 0:
            continue
        w = float(r.get("RegionLocationMaxX1", 0)) - float(r.get("RegionLocationMinX0", 0))
        h = float(r.get("RegionLocationMaxY1", 0)) - float(r.get("RegionLocationMinY0", 0))
        area = w * h + (1e12 if r.get("RegionSpatialFormat") == REGION_2D else 0.0)
        if area > best_area:
            best, best_area = (dx, dy), area
    return (best, "SequenceOfUltrasoundRegions") if best else (None, "none")


def image_region(ds: Any) -> tuple[int, int, int, int] | None:
    """x,y,w,h of the largest 2-D (B-mode) region of SequenceOfUltrasoundRegions, or None."""
    best, best_area = None, 0
    for r in ds.get("SequenceOfUltrasoundRegions") or []:
        if r.get("RegionSpatialFormat") != REGION_2D:
            continue
        try:
            x0, y0 = int(r.get("RegionLocationMinX0")), int(r.get("RegionLocationMinY0"))
            x1, y1 = int(r.get("RegionLocationMaxX1")), int(r.get("RegionLocationMaxY1"))
        except (TypeError, ValueError):
            continue
        w, h = x1 - x0 + 1, y1 - y0 + 1  # Max is the last pixel inside the region
        if w > 0 and h > 0 and w * h > best_area:
            best, best_area = (x0, y0, w, h), w * h
    return best


def open_dicom(path: str | os.PathLike) -> tuple[Any, VideoInfo]:
    """(the dataset, its VideoInfo): read once, then handed to :func:`dicom_frames`."""
    ds = _dataset(path)
    fps, source = frame_rate(ds)
    spacing, _ = pixel_spacing_cm(ds)
    return ds, VideoInfo(fps=fps, frame_count=int(ds.get("NumberOfFrames") or 1), width=int(ds.Columns),
                         height=int(ds.Rows), spacing_cm=spacing, fps_source=source, kind="dicom",
                         region=image_region(ds))


def _to_bgr8(frame: np.ndarray, ds: Any) -> np.ndarray:
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        frame = apply_color_lut(frame, ds)
    a = np.asarray(frame)
    if a.dtype != np.uint8:
        bits = int(ds.get("BitsStored") or 8 * a.dtype.itemsize)
        if photometric == "PALETTE COLOR":
            bits = 16 if a.max(initial=0) > 255 else 8
        lo = -(2 ** (bits - 1)) if int(ds.get("PixelRepresentation") or 0) == 1 else 0
        a = np.clip((a.astype(np.float64) - lo) * (255.0 / (2 ** bits - 1)), 0, 255).astype(np.uint8)
    if photometric == "MONOCHROME1":
        a = 255 - a
    if a.ndim == 2:
        return np.repeat(a[:, :, None], 3, axis=2)
    return np.ascontiguousarray(a[:, :, 2::-1])  # pydicom gives RGB (YBR converted): to BGR


def _frames(path: str | os.PathLike, indices: list[int] | None, ds: Any = None) -> Iterator[tuple[int, np.ndarray]]:
    from pydicom.pixels import iter_pixels

    ds = _dataset(path) if ds is None else ds
    n = int(ds.get("NumberOfFrames") or 1)
    wanted = list(range(n)) if indices is None else [i for i in indices if 0 <= i < n]
    if not wanted:
        return
    try:
        with _quiet():  # no library traceback in the terminal: the one line below says what failed
            for i, frame in zip(wanted, iter_pixels(str(path), indices=wanted, number_of_frames=n)):
                yield i, _to_bgr8(frame, ds)
    except (ValueError, RuntimeError, NotImplementedError, OSError, EOFError, KeyError, TypeError) as exc:
        raise VideoError(path, f"DICOM pixel data cannot be decoded ({_why(exc)})") from None


def dicom_frames(path: str | os.PathLike, ds: Any = None) -> Iterator[np.ndarray]:
    """Every frame, with the header ``ds`` already read by :func:`open_dicom` (read here when None)."""
    for _, frame in _frames(path, None, ds):
        yield frame


def read_dicom_frames(path: str | os.PathLike, wanted: list[int]) -> dict[int, np.ndarray]:
    return dict(_frames(Path(path), wanted))
