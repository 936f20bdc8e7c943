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

from .cache import EntryWriter, cache_dir, fingerprint, load_entry
from .frameset import DataError, FrameSet, FrameSetBuilder, Progress, SkipReport, log, log_progress, resize_pair
from .video import VideoError, read_frames

FILELIST_COLUMNS = ("FileName", "EF", "ESV", "EDV", "FrameHeight", "FrameWidth", "FPS", "NumberOfFrames", "Split")
FILELIST_REQUIRED = ("FileName", "Split")
TRACING_COLUMNS = ("FileName", "X1", "Y1", "X2", "Y2", "Frame")
SPLITS = {"train": "TRAIN", "val": "VAL", "test": "TEST"}
#: A tracing whose rasterised mask loses more than this fraction of its pixels to the frame edge is skipped.
CLIP_TOLERANCE = 0.05
OFF_FRAME = f"tracing off the frame (empty, or clipped by more than {CLIP_TOLERANCE:.0%})"


@dataclass(frozen=True)
class VideoRecord:
    name: str  # without extension
    split: str  # TRAIN / VAL / TEST
    ef: float
    height: int
    width: int
    fps: float
    frames: int = 0  # NumberOfFrames as FileList.csv says (0 when it does not)


def video_key(name: str) -> str:
    """FileList names lack the .avi that VolumeTracings names carry: compare without it."""
    name = name.strip()
    return name[:-4] if name.lower().endswith(".avi") else name


#: why a FileList / VolumeTracings name is refused (it would reach outside Videos/)
OUTSIDE_VIDEOS = "name does not stay inside Videos/ (a path, not a file name)"


def name_problem(name: str) -> str | None:
    """None when ``name`` is a plain file name that stays inside the dataset's Videos/ folder;
    otherwise why not: ``../../x``, an absolute path, ``a/b`` or a drive letter would make a row
    read (train on, score) a file from anywhere on the machine."""
    n = name.strip()
    if not n:
        return "empty file name"
    if "/" in n or "\\" in n or "\0" in n or n in (".", "..") or Path(n).is_absolute():
        return OUTSIDE_VIDEOS
    return None


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


def _count(v: float) -> int:
    return int(v) if math.isfinite(v) and v > 0 else 0


_REFUSED: set[str] = set()


def read_filelist(root: Path) -> list[VideoRecord]:
    """FileList.csv's rows; a row whose FileName would leave Videos/ is refused in one warning line."""
    records = []
    for i, row in enumerate(_read_csv(root / "FileList.csv", FILELIST_COLUMNS, FILELIST_REQUIRED), start=2):
        bad = name_problem(row["FileName"])
        if bad:
            line = f"skipped {root / 'FileList.csv'} line {i} ({row['FileName']!r}): {bad}"
            if line not in _REFUSED:  # once per process: every split reads the file list
                _REFUSED.add(line)
                log.warning("%s", line)
            continue
        h, w = _num(row, "FrameHeight", 112), _num(row, "FrameWidth", 112)
        records.append(VideoRecord(
            name=video_key(row["FileName"]), split=row["Split"].upper(), ef=_num(row, "EF"),
            height=int(h) if h == h and h > 0 else 112, width=int(w) if w == w and w > 0 else 112,
            fps=_num(row, "FPS", 50.0), frames=_count(_num(row, "NumberOfFrames", 0)),
        ))
    return records


def read_tracings(root: Path, report: SkipReport) -> dict[str, OrderedDict[int, list[tuple[float, ...]]]]:
    """video key -> frame -> rows (X1, Y1, X2, Y2) in file order; bad rows skipped and counted."""
    out: dict[str, OrderedDict[int, list[tuple[float, ...]]]] = defaultdict(OrderedDict)
    refused: set[str] = set()
    for i, row in enumerate(_read_csv(root / "VolumeTracings.csv", TRACING_COLUMNS, TRACING_COLUMNS), start=2):
        bad = name_problem(row["FileName"])
        if bad:
            if row["FileName"] not in refused:  # one line per name, not per row
                refused.add(row["FileName"])
                what = f"VolumeTracings.csv line {i} ({row['FileName']!r})"
                key = f"{root}: {what}"
                if key in _REFUSED:  # said already (another split read the tracings): counted, not repeated
                    report.reasons[bad] += 1
                    report.messages.append(f"skipped {what}: {bad}")
                else:
                    _REFUSED.add(key)
                    report.skip(what, bad)
            continue
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


def video_path(root: Path, rec: VideoRecord) -> Path:
    return root / "Videos" / f"{rec.name}.avi"


def split_records(root: Path, split: str) -> list[VideoRecord]:
    """The FileList rows of one split; ``all``: every row, whatever its split."""
    if split.lower() == "all":
        return read_filelist(root)
    want = SPLITS.get(split.lower())
    if want is None:
        raise DataError(f"unknown split {split!r}; use one of {', '.join(SPLITS)} or all")
    return [r for r in read_filelist(root) if r.split == want]


def load_echonet(root: str | Path, split: str, size: tuple[int, int] = (112, 112),
                 report: SkipReport | None = None, progress: Progress | None = None,
                 max_frames: int = 0, cache: bool | str | Path | None = None) -> FrameSet:
    """The traced frames of one split, with masks, names and ED/ES phases.

    Only the traced frames are decoded and kept (each its own array). ``max_frames`` > 0
    reads only enough videos, spread over the split, for that many frames (calibration,
    benchmarks). ``cache`` (or ECHOSEG_FRAME_CACHE): reuse a memory-mapped copy of the
    split from an earlier run while its source files are unchanged (see data/cache.py).
    ``progress(done, total)`` is called after each video.
    """
    root = Path(root)
    report = report if report is not None else SkipReport()
    records = split_records(root, split)
    sources = [root / "FileList.csv", root / "VolumeTracings.csv", *(video_path(root, r) for r in records)]
    entry = cache_dir(root, cache) if not max_frames else None
    key = fingerprint(sources, kind="labelled", split=split.lower(), size=list(size)) if entry else ""
    if entry:
        entry = entry / f"labelled-{split.lower()}-{size[0]}x{size[1]}"
        cached = load_entry(entry, key)
        if cached is not None:
            return _from_cache(cached, report)
    tracings = read_tracings(root, report)
    order = list(range(len(records)))
    if max_frames:
        order = [int(i) for i in np.random.default_rng(0).permutation(len(records))]
    per_video = [len(tracings.get(r.name) or ()) for r in records]
    capacity = min(sum(per_video), max_frames + max(per_video, default=0)) if max_frames else sum(per_video)
    built = FrameSetBuilder(capacity, size)
    record_of: list[int] = []
    tick = progress or log_progress(f"{split} videos", len(order))
    for done, k in enumerate(order, start=1):
        rec = records[k]
        for item in _load_video_frames(root, rec, tracings.get(rec.name), size, report):
            built.add(*item)
            record_of.append(k)
        tick(done, len(order))
        if max_frames and len(built) >= max_frames:
            break
    keep = sorted(range(len(built)), key=lambda i: record_of[i])[:max_frames] if max_frames else None
    fs = built.build(report, "echonet", keep)
    _require_lv_pixels(fs, split, report)
    if entry:
        _to_cache(entry, key, fs)
    return fs


def _require_lv_pixels(fs: FrameSet, split: str, report: SkipReport) -> None:
    off = report.reasons.get(OFF_FRAME, 0)
    if (len(fs) == 0 and off) or (len(fs) and not fs.masks.any()):
        raise DataError(f"no traced frame of the {split} split has any LV pixel inside the frame "
                        f"({off} tracing(s) off the frame); check VolumeTracings.csv X/Y against "
                        "FrameWidth/FrameHeight in FileList.csv")


def _from_cache(cached, report: SkipReport) -> FrameSet:
    arrays, meta = cached
    for msg in meta["skipped"]["messages"]:
        log.warning("%s", msg)
    report.reasons.update(meta["skipped"]["reasons"])
    report.messages.extend(meta["skipped"]["messages"])
    return FrameSet(arrays["images"], arrays["masks"], meta["names"], meta["phases"], report, "echonet")


def _to_cache(entry: Path, key: str, fs: FrameSet) -> None:
    try:
        w = EntryWriter(entry, key)
    except OSError as exc:
        log.warning("frame cache %s cannot be written (%s); going on without it", entry, exc)
        return
    try:
        w.save("images", fs.images)
        w.save("masks", fs.masks)
        w.commit({"names": fs.names, "phases": fs.phases,
                  "skipped": {"reasons": dict(fs.skipped.reasons), "messages": fs.skipped.messages}})
    except OSError as exc:
        w.discard()
        log.warning("frame cache %s cannot be written (%s); going on without it", entry, exc)


def _raster_pixels(poly: np.ndarray) -> int:
    """Pixels of the polygon rasterised on a canvas that holds all of it (no frame to clip it)."""
    lo = np.floor(poly.min(axis=0)) - 1
    hi = np.ceil(poly.max(axis=0)) + 2
    w, h = (hi - lo).astype(int)
    return int(polygon_mask(poly - lo, int(h), int(w)).sum())


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
    try:
        frames = read_frames(video_path(root, rec), polys)
    except VideoError as exc:
        report.skip(what, f"missing or unreadable video ({exc.cause})")
        return []
    if not frames:
        report.skip(what, "missing or unreadable video (no traced frame could be decoded)")
        return []
    vh, vw = next(iter(frames.values())).shape[:2]
    scale = np.array([vw / rec.width, vh / rec.height])
    phase_of = label_ed_es(polys)
    out = []
    for frame, poly in polys.items():
        if frame not in frames:
            report.skip(f"{what} frame {frame}", "traced frame beyond the video's last decodable frame")
            continue
        mask = polygon_mask(poly * scale, vh, vw)
        inside, whole = int(mask.sum()), _raster_pixels(poly * scale)
        if inside == 0 or inside < (1.0 - CLIP_TOLERANCE) * whole:
            report.skip(f"{what} frame {frame} ({100.0 * (1 - inside / max(whole, 1)):.0f}% of the tracing "
                        f"outside the {vw}x{vh} frame)", OFF_FRAME)
            continue
        img, mask = resize_pair(frames.pop(frame), mask, size)
        out.append((f"{rec.name}#{frame}", phase_of[frame], img, mask))
    return out
