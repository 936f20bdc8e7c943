"""The cardiac read-out of one video: per-frame LV measurements -> beats -> EF per beat -> summary.

Volumes (runtime/discs.py): method of discs by default (20 discs perpendicular to the long axis,
as clinical single-plane EF is measured), single-plane area-length as an option. Beats
(runtime/beats.py): outlier frames repaired and counted, ED = max volume, ES = min volume per
beat, robust to irregular RR and to clips of one beat. The EF reported is the median of the
per-beat EFs, with their mean, spread and flags beside it.

The EF here is an *estimate* from predicted masks, not a clinical measurement. Volumes are in
px^3 (named so) or, with a pixel spacing (DICOM), in mL.

``ef_from_masks`` is the read-out of a saved mask sequence, exactly as echo-run computes it from
its own masks (clean-up included).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np

from .beats import MAX_HEART_RATE_BPM, MEASURE_SIGMA_S, find_beats, min_beat_frames, smooth
from .discs import (FrameMeasure, area_length_volume_px3, disc_volume_px3, mask_area_px, mask_length_px,
                    measure_mask, volume_scale)

__all__ = ["Beat", "CardiacResult", "FrameCurves", "METHODS", "MAX_HEART_RATE_BPM", "analyse", "beat_in_cm",
           "cm_per_px", "describe_ef", "disc_volume_px3", "ef_from_masks", "area_length_volume_px3", "mask_area_px",
           "mask_length_px", "measure_mask", "min_beat_frames", "readout", "smooth"]

#: Volume methods: method of discs (default) and single-plane area-length.
METHODS = ("discs", "area-length")
#: Per-beat EFs further apart than this (max - min, EF points) are flagged as disagreeing.
BEATS_DISAGREE_POINTS = 10.0
#: More repaired outlier frames than this fraction of the video is flagged.
OUTLIER_FLAG_FRACTION = 0.1
METHOD_TEXT = {
    "discs": "method of discs (single plane, 20 discs perpendicular to the mask's long axis)",
    "area-length": "single-plane area-length V = 8 A^2 / (3 pi L)",
}
FLAG_TEXT = {
    "one_beat": "EF from a single beat",
    "clip_edge": "ED or ES on the first or last frame: the true extreme may lie outside the clip",
    "beats_disagree": f"per-beat EFs differ by more than {BEATS_DISAGREE_POINTS:g} points",
    "many_outlier_frames": f"over {OUTLIER_FLAG_FRACTION:.0%} of frames were segmentation outliers (repaired)",
    "no_beat": "no beat found",
}


@dataclass
class FrameCurves:
    """Per-frame measurements of a video's cleaned masks (what the read-out needs)."""

    area_px: np.ndarray
    length_px: np.ndarray
    volume_discs_px3: np.ndarray
    centre_xy: np.ndarray  # F x 2, NaN for an empty mask

    @classmethod
    def from_measures(cls, measures: Sequence[FrameMeasure]) -> "FrameCurves":
        m = np.asarray(measures, dtype=np.float64).reshape(-1, len(FrameMeasure._fields))
        return cls(m[:, 0].astype(np.int64), m[:, 1].copy(), m[:, 2].copy(), m[:, 3:5].copy())

    @classmethod
    def from_area_length(cls, area_px: np.ndarray, length_px: np.ndarray) -> "FrameCurves":
        """Curves from area and length only (no disc volumes: area-length read-outs, old callers)."""
        a = np.asarray(area_px, dtype=np.float64)
        return cls(a, np.asarray(length_px, dtype=np.float64), np.full(a.size, np.nan), np.full((a.size, 2), np.nan))

    def volume_px3(self, method: str) -> np.ndarray:
        if method not in METHODS:
            raise ValueError(f"unknown volume method {method!r}; use one of {', '.join(METHODS)}")
        if method == "area-length":
            return np.array([area_length_volume_px3(a, ln) for a, ln in zip(self.area_px, self.length_px)])
        if np.isnan(self.volume_discs_px3).any():
            raise ValueError("these curves carry no disc volumes; measure the masks (measure_mask) or use area-length")
        return np.asarray(self.volume_discs_px3, dtype=np.float64)


@dataclass(frozen=True)
class Beat:
    """One cardiac cycle: ED (max volume) and ES (min volume); volumes in px^3."""

    ed_frame: int
    es_frame: int
    ed_area_px: float
    es_area_px: float
    ed_length_px: float
    es_length_px: float
    edv_px3: float
    esv_px3: float
    ef_estimate_pct: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CardiacResult:
    ed_frames: list[int]
    es_frames: list[int]
    beats: list[Beat]
    smoothed_area_px: np.ndarray
    method: str = "discs"
    outlier_frames: list[int] = field(default_factory=list)
    how: str = "ed-es"
    frames: int = 0
    volume_px3: np.ndarray = field(default_factory=lambda: np.zeros(0))  # per frame, raw (before repair)

    @property
    def per_beat(self) -> list[float]:
        return [b.ef_estimate_pct for b in self.beats]

    @property
    def ef_estimate_pct(self) -> float | None:
        """The EF reported: median of the per-beat EF estimates (None when no beat was found)."""
        return float(np.median(self.per_beat)) if self.beats else None

    @property
    def ef_mean_pct(self) -> float | None:
        return float(np.mean(self.per_beat)) if self.beats else None

    @property
    def ef_sd_pct(self) -> float | None:
        """Beat-to-beat standard deviation (None with fewer than two beats)."""
        return float(np.std(self.per_beat, ddof=1)) if len(self.beats) > 1 else None

    @property
    def flags(self) -> list[str]:
        out = []
        if not self.beats:
            out.append("no_beat")
        elif len(self.beats) == 1:
            out.append("one_beat")
        if self.how == "clip-extremes":
            out.append("clip_edge")
        if len(self.beats) > 1 and max(self.per_beat) - min(self.per_beat) > BEATS_DISAGREE_POINTS:
            out.append("beats_disagree")
        if self.frames and len(self.outlier_frames) > OUTLIER_FLAG_FRACTION * self.frames:
            out.append("many_outlier_frames")
        return out


def analyse(curves: FrameCurves | np.ndarray, length_px: np.ndarray | None = None, fps: float = 50.0,
            method: str = "discs", max_hr_bpm: float = MAX_HEART_RATE_BPM) -> CardiacResult:
    """ED/ES frames and per-beat EF estimates from a video's per-frame curves.

    ``curves``: FrameCurves; or, for an area-length read-out, the area curve with ``length_px``."""
    if not isinstance(curves, FrameCurves):
        curves = FrameCurves.from_area_length(curves, length_px)
        if method == "discs":
            method = "area-length"  # nothing else can be computed from area and length
    vol = curves.volume_px3(method)
    area = np.asarray(curves.area_px, dtype=np.float64)
    length = np.asarray(curves.length_px, dtype=np.float64)
    fps = fps if fps and fps > 0 else 50.0
    found = find_beats(vol, fps, length, curves.centre_xy, max_hr_bpm)
    spacing = min_beat_frames(fps, max_hr_bpm)
    keep = np.ones(area.size, bool)
    keep[found.outlier_frames] = False
    a_meas, l_meas = (_repaired_smooth(x, keep, fps) for x in (area, length))
    beats = []
    for e, t in found.pairs:
        edv, esv = float(found.measured[e]), float(found.measured[t])
        if edv <= 0:
            continue
        beats.append(Beat(ed_frame=e, es_frame=t, ed_area_px=float(a_meas[e]), es_area_px=float(a_meas[t]),
                          ed_length_px=float(l_meas[e]), es_length_px=float(l_meas[t]),
                          edv_px3=edv, esv_px3=esv, ef_estimate_pct=100.0 * (edv - esv) / edv))
    smoothed_area = smooth(_repaired_smooth(area, keep, 0.0), spacing / 6.0)
    return CardiacResult(found.ed_frames, found.es_frames, beats, smoothed_area, method,
                         found.outlier_frames, found.how, int(area.size), vol)


def _repaired_smooth(x: np.ndarray, keep: np.ndarray, fps: float) -> np.ndarray:
    """``x`` with the outlier frames interpolated, lightly smoothed as volumes are (fps 0: not smoothed)."""
    v = np.asarray(x, dtype=np.float64).copy()
    if (~keep).any() and keep.sum() >= 2:
        idx = np.flatnonzero(keep)
        v[~keep] = np.interp(np.flatnonzero(~keep), idx, v[idx])
    return smooth(v, MEASURE_SIGMA_S * fps) if fps > 0 else v


def cm_per_px(spacing_cm: tuple[float, float]) -> tuple[float, float]:
    """(cm^2 per pixel, cm per pixel of length) for a (dx, dy) spacing in cm."""
    dx, dy = (float(v) for v in spacing_cm)
    return dx * dy, float(np.sqrt(dx * dy))


def beat_in_cm(beat: Beat, spacing_cm: tuple[float, float]) -> dict[str, float]:
    """A beat's ED/ES areas (cm^2), lengths (cm) and volumes (mL) for a pixel spacing in cm."""
    a, ln = cm_per_px(spacing_cm)
    ml = volume_scale(spacing_cm)
    return {"ed_area_cm2": beat.ed_area_px * a, "es_area_cm2": beat.es_area_px * a,
            "ed_length_cm": beat.ed_length_px * ln, "es_length_cm": beat.es_length_px * ln,
            "edv_ml": beat.edv_px3 * ml, "esv_ml": beat.esv_px3 * ml}


def readout(result: CardiacResult, fps: float, spacing_cm: tuple[float, float] | None = None) -> dict[str, Any]:
    """The EF part of summary.json: EF (median over beats), per beat, spread, flags, ED/ES, volumes.

    Volumes are in mL (``edv_ml``/``esv_ml``) when the pixel spacing is known, and always in
    px^3 (``edv_px3``/``esv_px3``); ``volume_unit`` names the unit of the headline EDV/ESV."""
    beats = [b.to_dict() | (beat_in_cm(b, spacing_cm) if spacing_cm else {}) for b in result.beats]
    ed = result.ed_frames
    hr = 60.0 * fps * (len(ed) - 1) / (ed[-1] - ed[0]) if len(ed) > 1 and fps > 0 else None
    unit = "ml" if spacing_cm else "px3"
    per = result.per_beat
    vols = {f"{k}_{unit}": (float(np.median([b[f"{k}_{unit}"] for b in beats])) if beats else None)
            for k in ("edv", "esv")}
    return {
        "ed_frames": list(ed), "es_frames": list(result.es_frames), "heart_rate_bpm": hr, "beats": beats,
        "ef_estimate_pct": {
            "value": result.ef_estimate_pct, "median": result.ef_estimate_pct, "mean": result.ef_mean_pct,
            "sd": result.ef_sd_pct, "range": [min(per), max(per)] if per else None, "per_beat": per,
            "beats": len(per), "method": "estimate from predicted masks: " + METHOD_TEXT[result.method]
            + "; ED = max, ES = min volume per beat; median over beats; not a clinical measurement",
            "volume_method": result.method, "max_heart_rate_bpm": MAX_HEART_RATE_BPM, "beats_found_by": result.how,
        },
        "ef_flags": result.flags, "ef_flag_text": [FLAG_TEXT[f] for f in result.flags],
        "outlier_frames": {"count": len(result.outlier_frames), "frames": list(result.outlier_frames)},
        "volume_unit": "mL" if spacing_cm else "px^3 (pixel units: no pixel spacing known)", **vols,
    }


def describe_ef(summary: dict[str, Any]) -> str:
    """One line for the console from a readout dict: EF, beats, spread, flags."""
    ef = summary.get("ef_estimate_pct") or {}
    if ef.get("value") is None:
        return "no beat found (no EF)"
    n = ef.get("beats", 0)
    spread = f", beats {ef['range'][0]:.0f}-{ef['range'][1]:.0f}%" if n > 1 else ""
    flags = summary.get("ef_flags") or []
    return (f"EF estimate {ef['value']:.1f}% ({ef.get('volume_method', 'discs')}, median of {n} beat(s){spread})"
            + (f" [flags: {', '.join(flags)}]" if flags else ""))


def ef_from_masks(masks: np.ndarray | Sequence[np.ndarray], fps: float,
                  spacing_cm: tuple[float, float] | None = None, method: str = "discs") -> dict[str, Any]:
    """The read-out of a raw (binary, before clean-up) F x H x W mask sequence, as echo-run computes it.

    Each mask is cleaned as echo-run cleans it (the LV's blob, holes filled), measured
    (measure_mask), and the curves analysed at ``fps``; returns ``readout``'s dict with
    ``frames`` and ``fps`` added."""
    from .postprocess import clean_mask

    measures = [measure_mask(clean_mask(np.asarray(m) > 0)) for m in masks]
    result = analyse(FrameCurves.from_measures(measures), fps=fps, method=method)
    return {"frames": len(measures), "fps": fps, **readout(result, fps, spacing_cm)}
