"""Files echo-run writes per video (overlay video, frames.csv, area plot, summary.json) and across videos.

Everything for one video is written into a hidden temporary folder that is renamed into place
only when complete, so a failed or interrupted video leaves no half-written outputs. Each
folder echo-run creates carries a marker file; a folder without it is never replaced.
"""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from echoseg.atomic import LockHeld, atomic_path, exclusive, remove_stale_temps
from echoseg.errors import EchosegError
from .cardiac import CardiacResult, cm_per_px
from .discs import volume_scale
from .overlay import fit_for_overlay, overlay_frame

FRAMES_CSV = "frames.csv"
SUMMARY_JSON = "summary.json"
AREA_PNG = "area.png"
OVERLAY_VIDEO = "overlay.avi"
SUMMARY_CSV = "summary.csv"
#: Written into every output folder echo-run creates; only such folders are ever replaced.
RUN_MARKER = ".echoseg-run"
SUMMARY_CSV_FIELDS = ("video", "status", "error", "frames", "fps", "processing_fps", "model_fps", "beats",
                      "ef_estimate_mean_pct", "backend", "precision", "out_dir", "ef_estimate_pct", "ef_beat_sd_pct",
                      "ef_flags")
#: Headers of summary.csv files earlier versions wrote (still ours to replace).
_OLD_SUMMARY_HEADERS = (",".join(SUMMARY_CSV_FIELDS[:12]),)


class OverlaySink:
    """A FrameSink writing original | overlay frames to an MJPG AVI at the video's frame rate."""

    def __init__(self, path: Path, fps: float) -> None:
        self.path = path
        self.fps = fps
        self._writer = None

    def __call__(self, index: int, frame: np.ndarray, mask: np.ndarray) -> None:
        import cv2

        out = overlay_frame(*fit_for_overlay(frame, mask))  # a 4K clip's overlay at 1920x1080 a side
        if self._writer is None:
            h, w = out.shape[:2]
            self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"MJPG"), self.fps, (w, h), True)
            if not self._writer.isOpened():
                raise OSError(f"{self.path}: OpenCV cannot write an MJPG video here")
        self._writer.write(out)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None


class OutputRefused(EchosegError, OSError):
    """An output folder echo-run must not write: not its own, or another process is writing it."""


def is_ours(folder: Path) -> bool:
    """Whether ``folder`` was written by echo-run (it holds echo-run's marker file)."""
    return folder.is_dir() and not folder.is_symlink() and (folder / RUN_MARKER).is_file()


def _stale_but_not_ours(p: Path) -> bool:
    """Leave a dead writer's staging folder alone unless it holds the marker (or nothing)."""
    return not (p / RUN_MARKER).is_file() and any(p.iterdir())


def remove_stale_staging(out_root: Path) -> list[Path]:
    """Staging folders (.<video>.part<pid>) and old copies left by echo-runs that were killed."""
    return remove_stale_temps(out_root, keep_dir=_stale_but_not_ours)


class StagingDir:
    """A hidden sibling folder that becomes ``final`` on commit() and vanishes on discard().

    It holds a lock on ``final`` from creation to commit/discard (a second writer of the same
    output is refused with OutputRefused), and writes echo-run's marker into the folder, so a
    later run knows it may replace it. An existing ``final`` without the marker is never
    touched: the staging is refused before any work is done.
    """

    def __init__(self, final: Path) -> None:
        self.final = final
        _refuse_foreign(final)
        final.parent.mkdir(parents=True, exist_ok=True)
        self._lock = exclusive(final.with_name(f".{final.name}.lock"))
        try:
            self._lock.__enter__()
        except LockHeld as exc:
            who = f"pid {exc.pid}" if exc.pid else "another process"
            raise OutputRefused(f"{final}: another echo-run ({who}) is writing this output right now; "
                                "wait for it to finish or pass another --out") from None
        try:
            self.tmp = final.with_name(f".{final.name}.part{os.getpid()}")
            if self.tmp.exists():
                shutil.rmtree(self.tmp)
            self.tmp.mkdir()
            (self.tmp / RUN_MARKER).write_text(f"written by echo-run (echoseg), pid {os.getpid()}\n")
        except BaseException:
            self._release()
            raise

    def commit(self) -> Path:
        """Put the staged folder in place of ``final`` (replacing only an echo-run output)."""
        try:
            _refuse_foreign(self.final)
            if os.path.lexists(self.final):
                old = self.final.with_name(f".{self.final.name}.old{os.getpid()}")
                if os.path.lexists(old):  # left by a killed run that had our pid: ours, under our lock
                    shutil.rmtree(old)
                os.replace(self.final, old)
                try:
                    os.replace(self.tmp, self.final)
                except BaseException:
                    os.replace(old, self.final)
                    raise
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(self.tmp, self.final)
        finally:
            self._release()
        return self.final

    def discard(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
        self._release()

    def _release(self) -> None:
        if self._lock is not None:
            lock, self._lock = self._lock, None
            lock.__exit__(None, None, None)


def _refuse_foreign(final: Path) -> None:
    if os.path.lexists(final) and not is_ours(final):
        kind = "folder" if final.is_dir() else "file"
        raise OutputRefused(f"{final}: an existing {kind} that echo-run did not write (no {RUN_MARKER} marker); "
                            "it is left untouched: move it away or pass another --out")


def write_frames_csv(path: Path, area_px: np.ndarray, length_px: np.ndarray, fps: float,
                     cardiac: CardiacResult, spacing_cm: tuple[float, float] | None = None) -> None:
    """One row per frame: frame, time_s, lv_area_px, lv_length_px, lv_volume_px3 (the read-out's volume method),
    is_ed, is_es, is_outlier (+ lv_area_cm2, lv_length_cm, lv_volume_ml with a pixel spacing)."""
    ed, es, bad = set(cardiac.ed_frames), set(cardiac.es_frames), set(cardiac.outlier_frames)
    cm2, cm = cm_per_px(spacing_cm) if spacing_cm else (0.0, 0.0)
    ml = volume_scale(spacing_cm) if spacing_cm else 0.0
    vol = cardiac.volume_px3 if len(cardiac.volume_px3) == len(area_px) else np.full(len(area_px), np.nan)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["frame", "time_s", "lv_area_px", "lv_length_px", "lv_volume_px3", "is_ed", "is_es", "is_outlier"]
                   + (["lv_area_cm2", "lv_length_cm", "lv_volume_ml"] if spacing_cm else []))
        for i, (a, ln, v) in enumerate(zip(area_px, length_px, vol)):
            w.writerow([i, f"{i / fps:.4f}", int(a), f"{ln:.2f}", f"{v:.1f}", int(i in ed), int(i in es), int(i in bad)]
                       + ([f"{a * cm2:.4f}", f"{ln * cm:.4f}", f"{v * ml:.3f}"] if spacing_cm else []))


def plot_area(path: Path, area_px: np.ndarray, fps: float, cardiac: CardiacResult, title: str) -> None:
    """LV area over time, the smoothed curve, and ED/ES frames marked (drawn with OpenCV: runtime/plot.py)."""
    from .plot import BLUE, GREEN, GREY, RED, Series, line_chart

    area = np.asarray(area_px, dtype=np.float64)
    t = np.arange(len(area)) / fps
    ed, es = list(cardiac.ed_frames), list(cardiac.es_frames)
    series = [Series(t, area, "LV area (mask)", GREY, 1),
              Series(t, np.asarray(cardiac.smoothed_area_px, np.float64), "smoothed", BLUE, 2)]
    if ed:
        series.append(Series(t[ed], area[ed], "ED", RED, 0, "o"))
    if es:
        series.append(Series(t[es], area[es], "ES", GREEN, 0, "v"))
    ef = cardiac.ef_estimate_pct
    line_chart(path, series, title + (f"  (EF estimate {ef:.1f}%, median of {len(cardiac.beats)} beat(s))"
                                      if ef is not None else "  (no beat found)"),
               "time (s)", "LV area (px)")


def write_summary_csv(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    """One row per input video across a run, failed ones included (status, error).

    An existing file of that name that is not an echo-run summary (other header) is left
    untouched: OutputRefused.
    """
    if os.path.lexists(path) and not _is_our_summary(path):
        raise OutputRefused(f"{path}: an existing file that echo-run did not write; it is left untouched: "
                            "move it away or pass another --out")
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(SUMMARY_CSV_FIELDS), extrasaction="ignore")
        w.writeheader()
        for row in rows:
            w.writerow({k: _cell(row.get(k)) for k in SUMMARY_CSV_FIELDS})
    return path


def _is_our_summary(path: Path) -> bool:
    try:
        with open(path, newline="") as fh:
            return fh.readline().strip() in (",".join(SUMMARY_CSV_FIELDS), *_OLD_SUMMARY_HEADERS)
    except (OSError, UnicodeDecodeError):
        return False


def _cell(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return v
