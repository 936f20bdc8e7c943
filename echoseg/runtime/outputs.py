"""Files echo-run writes per video (overlay video, frames.csv, area plot, summary.json) and across videos.

Everything for one video is written into a hidden temporary folder that is renamed into place
only when complete, so a failed or interrupted video leaves no half-written outputs.
"""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from echoseg.atomic import atomic_path
from .cardiac import CardiacResult, cm_per_px
from .overlay import overlay_frame

FRAMES_CSV = "frames.csv"
SUMMARY_JSON = "summary.json"
AREA_PNG = "area.png"
OVERLAY_VIDEO = "overlay.avi"
SUMMARY_CSV = "summary.csv"
SUMMARY_CSV_FIELDS = ("video", "status", "error", "frames", "fps", "processing_fps", "model_fps", "beats",
                      "ef_estimate_mean_pct", "backend", "precision", "out_dir")


class OverlaySink:
    """A FrameSink writing original | overlay frames to an MJPG AVI at the video's frame rate."""

    def __init__(self, path: Path, fps: float) -> None:
        self.path = path
        self.fps = fps
        self._writer = None

    def __call__(self, index: int, frame: np.ndarray, mask: np.ndarray) -> None:
        import cv2

        out = overlay_frame(frame, mask)
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


class StagingDir:
    """A hidden sibling folder that becomes ``final`` on commit() and vanishes on discard()."""

    def __init__(self, final: Path) -> None:
        self.final = final
        self.tmp = final.with_name(f".{final.name}.part{os.getpid()}")
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        self.tmp.mkdir(parents=True)

    def commit(self) -> Path:
        old = self.final.with_name(f".{self.final.name}.old{os.getpid()}")
        if self.final.exists():
            os.replace(self.final, old)
        os.replace(self.tmp, self.final)
        if old.exists():
            shutil.rmtree(old, ignore_errors=True)
        return self.final

    def discard(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def write_frames_csv(path: Path, area_px: np.ndarray, length_px: np.ndarray, fps: float,
                     cardiac: CardiacResult, spacing_cm: tuple[float, float] | None = None) -> None:
    """One row per frame: frame, time_s, lv_area_px, lv_length_px, is_ed, is_es (+ lv_area_cm2, lv_length_cm)."""
    ed, es = set(cardiac.ed_frames), set(cardiac.es_frames)
    cm2, cm = cm_per_px(spacing_cm) if spacing_cm else (0.0, 0.0)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["frame", "time_s", "lv_area_px", "lv_length_px", "is_ed", "is_es"]
                   + (["lv_area_cm2", "lv_length_cm"] if spacing_cm else []))
        for i, (a, ln) in enumerate(zip(area_px, length_px)):
            w.writerow([i, f"{i / fps:.4f}", int(a), f"{ln:.2f}", int(i in ed), int(i in es)]
                       + ([f"{a * cm2:.4f}", f"{ln * cm:.4f}"] if spacing_cm else []))


def plot_area(path: Path, area_px: np.ndarray, fps: float, cardiac: CardiacResult, title: str) -> None:
    """LV area over time, the smoothed curve, and ED/ES frames marked."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    t = np.arange(len(area_px)) / fps
    fig = Figure(figsize=(8, 3.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(t, area_px, color="0.6", lw=1, label="LV area (mask)")
    ax.plot(t, cardiac.smoothed_area_px, color="C0", lw=1.5, label="smoothed")
    if cardiac.ed_frames:
        ax.scatter(t[cardiac.ed_frames], np.asarray(area_px)[cardiac.ed_frames], color="C3", zorder=3, label="ED")
    if cardiac.es_frames:
        ax.scatter(t[cardiac.es_frames], np.asarray(area_px)[cardiac.es_frames], color="C2", marker="v",
                   zorder=3, label="ES")
    ef = cardiac.ef_estimate_pct
    ax.set_title(title + (f"  (EF estimate {ef:.1f}%)" if ef is not None else "  (no full beat found)"), fontsize=9)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("LV area (px)")
    ax.legend(fontsize=7, loc="best", framealpha=0.6)
    fig.tight_layout()
    fig.savefig(path)


def write_summary_csv(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    """One row per input video across a run, failed ones included (status, error)."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(SUMMARY_CSV_FIELDS), extrasaction="ignore")
        w.writeheader()
        for row in rows:
            w.writerow({k: _cell(row.get(k)) for k in SUMMARY_CSV_FIELDS})
    return path


def _cell(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return v
