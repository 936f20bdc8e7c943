"""EchoNet-Dynamic reader: FileList.csv, VolumeTracings.csv and Videos/*.avi.

Masks come from the tracings: per traced frame the first line is the long axis (skipped),
the others are chords; the LV polygon runs down their X1/Y1 ends and back up their X2/Y2
ends. ED and ES are the frames with the larger and smaller traced area (never CSV order).
Coordinates are in FrameWidth x FrameHeight space and are scaled when the decoded video has
another size. Anything unusable is skipped with one warning line and counted.
"""

from __future__ import annotations

import csv
import math
from collections import OrderedDict, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .frameset import DataError, FrameSet, SkipReport, resize_pair
from .video import VideoError, read_video

FILELIST_COLUMNS = ("FileName", "EF", "ESV", "EDV", "FrameHeight", "FrameWidth", "FPS", "NumberOfFrames", "Split")
FILELIST_REQUIRED = ("FileName", "Split")
TRACING_COLUMNS = ("FileName", "X1", "Y1", "X2", "Y2", "Frame")
SPLITS = {"train": "TRAIN", "val": "VAL", "test": "TEST"}


@dataclass(frozen=True)
class VideoRecord:
    name: str  # without extension
    split: str  # TRAIN / VAL / TEST
    ef: float
    height: int
    width: int
    fps: float


def video_key(name: str) -> str:
    """FileList names lack the .avi that VolumeTracings names carry: compare without it."""
    name = name.strip()
    return name[:-4] if name.lower().endswith(".avi") else name


def _read_csv(path: Path, expected: tuple[str, ...], required: tuple[str, ...]) -> list[dict[str, str]]:
    if not path.is_file():
        raise DataError(f"{path}: not found; an EchoNet-Dynamic folder needs FileList.csv, "
                        "VolumeTracings.csv and Videos/")
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in required if c not in header]
        if missing:
            raise DataError(f"{path.name}: missing columns {missing}; expected columns {list(expected)}, "
                            f"found {header}")
        return [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]


def _num(row: dict[str, str], key: str, default: float = float("nan")) -> float:
    try:
        return float(row.get(key, ""))
    except ValueError:
        return default


def read_filelist(root: Path) -> list[VideoRecord]:
    records = []
    for row in _read_csv(root / "FileList.csv", FILELIST_COLUMNS, FILELIST_REQUIRED):
        h, w = _num(row, "FrameHeight", 112), _num(row, "FrameWidth", 112)
        records.append(VideoRecord(
            name=video_key(row["FileName"]), split=row["Split"].upper(), ef=_num(row, "EF"),
            height=int(h) if h == h and h > 0 else 112, width=int(w) if w == w and w > 0 else 112,
            fps=_num(row, "FPS", 50.0),
        ))
    return records


def read_tracings(root: Path, report: SkipReport) -> dict[str, OrderedDict[int, list[tuple[float, ...]]]]:
    """video key -> frame -> rows (X1, Y1, X2, Y2) in file order; bad rows skipped and counted."""
    out: dict[str, OrderedDict[int, list[tuple[float, ...]]]] = defaultdict(OrderedDict)
    for i, row in enumerate(_read_csv(root / "VolumeTracings.csv", TRACING_COLUMNS, TRACING_COLUMNS), start=2):
        try:
            coords = tuple(float(row[c]) for c in ("X1", "Y1", "X2", "Y2"))
            frame = int(float(row["Frame"]))
            if not all(math.isfinite(c) for c in coords) or frame < 0:
                raise ValueError("non-finite coordinate or negative frame")
        except (ValueError, KeyError):
            report.skip(f"VolumeTracings.csv line {i}", "bad tracing row")
            continue
        out[video_key(row["FileName"])].setdefault(frame, []).append(coords)
    return out


def tracing_polygon(rows: list[tuple[float, ...]]) -> np.ndarray:
    """LV polygon (K,2) from one frame's tracing rows: skip the long axis, down X1/Y1, up X2/Y2."""
    chords = np.asarray(rows[1:], dtype=np.float64).reshape(-1, 4)
    return np.concatenate([chords[:, 0:2], chords[::-1, 2:4]])


def polygon_area(poly: np.ndarray) -> float:
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def area_length_volume_px3(area_px: float, length_px: float) -> float:
    """Single-plane area-length volume V = 8 A^2 / (3 pi L), in cubic pixels (0 if L is 0).

    The one definition: the synthetic truth and the runtime's EF estimate both use it.
    """
    if length_px <= 0:
        return 0.0
    return 8.0 * float(area_px) ** 2 / (3.0 * math.pi * float(length_px))


def polygon_mask(poly: np.ndarray, height: int, width: int) -> np.ndarray:
    """Filled polygon as a bool mask (sub-pixel vertices, pixel centres inside)."""
    import cv2

    mask = np.zeros((height, width), np.uint8)
    cv2.fillPoly(mask, [np.round(poly * 16).astype(np.int32)], 1, cv2.LINE_8, 4)
    return mask.astype(bool)


def label_ed_es(polys: dict[int, np.ndarray]) -> dict[int, str]:
    """ED = frame with the largest traced area, ES = the smallest; others unlabelled."""
    areas = {f: polygon_area(p) for f, p in polys.items()}
    ed = max(areas, key=areas.get)
    es = min(areas, key=areas.get)
    return {f: ("ED" if f == ed else "ES" if f == es else "") for f in polys}


def load_echonet(root: str | Path, split: str, size: tuple[int, int] = (112, 112),
                 report: SkipReport | None = None) -> FrameSet:
    """The traced frames of one split, with masks, names and ED/ES phases."""
    root = Path(root)
    report = report if report is not None else SkipReport()
    want = SPLITS.get(split.lower())
    if want is None:
        raise DataError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    records = [r for r in read_filelist(root) if r.split == want]
    tracings = read_tracings(root, report)
    items = []
    for rec in records:
        items += _load_video_frames(root, rec, tracings.get(rec.name), size, report)
    return FrameSet.from_items(items, size, report, "echonet")


def _load_video_frames(root: Path, rec: VideoRecord, traced, size, report: SkipReport) -> list:
    what = f"video {rec.name}"
    if not traced or len(traced) < 2:
        report.skip(what, "fewer than 2 traced frames")
        return []
    polys = {}
    for frame, rows in traced.items():
        poly = tracing_polygon(rows) if len(rows) >= 3 else None
        if poly is None or polygon_area(poly) < 1.0:
            report.skip(f"{what} frame {frame}", "degenerate tracing polygon")
            continue
        polys[frame] = poly
    if len(polys) < 2:
        report.skip(what, "fewer than 2 usable traced frames")
        return []
    path = root / "Videos" / f"{rec.name}.avi"
    try:
        video = read_video(path)
    except VideoError as exc:
        report.skip(what, f"missing or unreadable video ({exc.cause})")
        return []
    vh, vw = video.shape[1:3]
    scale = np.array([vw / rec.width, vh / rec.height])
    phase_of = label_ed_es(polys)
    out = []
    for frame, poly in polys.items():
        if frame >= len(video):
            report.skip(f"{what} frame {frame}", f"traced frame beyond the video's {len(video)} frames")
            continue
        mask = polygon_mask(poly * scale, vh, vw)
        img, mask = resize_pair(video[frame], mask, size)
        out.append((f"{rec.name}#{frame}", phase_of[frame], img, mask))
    return out


def load_echonet_unlabelled(root: str | Path, split: str = "train", size: tuple[int, int] = (112, 112),
                            max_frames: int = 20000, seed: int = 0) -> np.ndarray:
    """Every frame of the split's videos (evenly subsampled to ``max_frames``), for the autoencoder."""
    import cv2

    root = Path(root)
    want = SPLITS[split.lower()]
    names = [r.name for r in read_filelist(root) if r.split == want]
    frames = []
    for name in names:
        try:
            video = read_video(root / "Videos" / f"{name}.avi")
        except VideoError:
            continue  # already reported by the labelled pass
        frames.extend(cv2.resize(f, (size[1], size[0]), interpolation=cv2.INTER_AREA)
                      if f.shape[:2] != size else f for f in video)
    if not frames:
        return np.zeros((0, size[0], size[1], 3), np.uint8)
    arr = np.stack(frames)
    if len(arr) > max_frames:
        idx = np.sort(np.random.default_rng(seed).choice(len(arr), max_frames, replace=False))
        arr = arr[idx]
    return arr
