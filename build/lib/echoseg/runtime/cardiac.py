"""LV measurements from masks: area, length, beats on the area curve, ED/ES, area-length EF.

Length choice: the LV long axis is the principal axis of the mask's pixels (largest second
moment), and ``length_px`` is the mask's extent along it, i.e. the distance from the apex to
the mitral plane measured along the long axis (the plane is roughly perpendicular to it in an
apical four-chamber view). This needs no landmark detection and is stable from frame to frame.

With a pixel spacing (DICOM), areas are also given in cm^2, lengths in cm and volumes in mL
(cm^3): a pixel is dx*dy cm^2, and a length is scaled by sqrt(dx*dy), exact for the square
pixels of ultrasound scan conversion and an approximation otherwise.

The EF here is an *estimate*: single-plane area-length volumes V = 8 A^2 / (3 pi L) from the
predicted masks, per beat, in pixel units (the ratio makes the unit cancel). It is not a
clinical measurement.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from echoseg.data.echonet import area_length_volume_px3

#: Highest heart rate considered plausible; sets the minimum spacing of two ED (or ES) frames.
MAX_HEART_RATE_BPM = 200.0
#: An extreme counts only if the smoothed area moves at least this fraction of its range.
MIN_SWING_FRACTION = 0.3
#: The last extreme of a video counts if the curve turned back by this fraction of that swing.
END_TURN_FRACTION = 0.25
#: Areas and lengths at ED/ES are read from curves smoothed with this sigma (frames).
MEASURE_SIGMA = 1.0


def mask_area_px(mask: np.ndarray) -> int:
    """Number of LV pixels."""
    return int(np.count_nonzero(mask))


def mask_length_px(mask: np.ndarray) -> float:
    """Extent of the mask along its principal (long) axis, in pixels; 0 for an empty mask."""
    ys, xs = np.nonzero(mask)
    if xs.size < 2:
        return float(xs.size)
    pts = np.stack([xs, ys], axis=1).astype(np.float64)
    pts -= pts.mean(axis=0)
    cov = pts.T @ pts / len(pts)
    _, vecs = np.linalg.eigh(cov)
    axis = vecs[:, -1]  # eigenvector of the largest eigenvalue
    proj = pts @ axis
    return float(proj.max() - proj.min() + 1.0)  # + one pixel: extents of pixel squares, not centres


@dataclass(frozen=True)
class Beat:
    """One cardiac cycle on the area curve: ED (max area), then ES (min area)."""

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

    @property
    def ef_estimate_pct(self) -> float | None:
        """Mean of the per-beat EF estimates (None when no beat was found)."""
        if not self.beats:
            return None
        return float(np.mean([b.ef_estimate_pct for b in self.beats]))


def min_beat_frames(fps: float, max_hr_bpm: float = MAX_HEART_RATE_BPM) -> int:
    """Fewest frames between two EDs at the highest plausible heart rate (at least 3)."""
    return max(3, int(math.floor(fps * 60.0 / max_hr_bpm)))


def smooth(values: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing with edge-value padding (adds no false extreme at the ends)."""
    v = np.asarray(values, dtype=np.float64)
    if sigma <= 0 or v.size < 3:
        return v.copy()
    radius = max(1, int(math.ceil(3 * sigma)))
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    k /= k.sum()
    padded = np.pad(v, radius, mode="edge")
    return np.convolve(padded, k, mode="valid")


def _alternating_extremes(s: np.ndarray, delta: float) -> tuple[list[tuple[int, str]], tuple[int, str] | None]:
    """Maxima and minima that stand out by ``delta`` from the opposite extreme (hysteresis).

    Also returns the extreme still pending at the end of the curve (no full swing after it).
    """
    out: list[tuple[int, str]] = []
    hi_i = lo_i = 0
    looking = ""  # "" until the first swing decides the direction
    for i in range(1, len(s)):
        if s[i] > s[hi_i]:
            hi_i = i
        if s[i] < s[lo_i]:
            lo_i = i
        if looking in ("", "max") and s[hi_i] - s[i] >= delta and hi_i < i:
            out.append((hi_i, "max"))
            looking, lo_i = "min", i
        elif looking in ("", "min") and s[i] - s[lo_i] >= delta and lo_i < i:
            out.append((lo_i, "min"))
            looking, hi_i = "max", i
    pending = (hi_i, "max") if looking == "max" else (lo_i, "min") if looking == "min" else None
    return out, pending


def _merge_close(picked: list[tuple[int, str]], values: np.ndarray, spacing: int) -> list[tuple[int, str]]:
    """Two extremes of one kind closer than a plausible beat are one: keep the more extreme.

    The opposite extreme between them is dropped too, so maxima and minima still alternate.
    """
    picked = list(picked)
    i = 0
    while i + 2 < len(picked):
        (a, kind), _, (c, _) = picked[i:i + 3]
        if c - a < spacing:
            a_wins = values[a] >= values[c] if kind == "max" else values[a] <= values[c]
            picked[i:i + 3] = [(a if a_wins else c, kind)]
            i = max(0, i - 1)
        else:
            i += 1
    return picked


def analyse(area_px: np.ndarray, length_px: np.ndarray, fps: float,
            max_hr_bpm: float = MAX_HEART_RATE_BPM) -> CardiacResult:
    """ED/ES frames and per-beat area-length EF estimates from per-frame area and length.

    The area curve is smoothed (sigma a sixth of the shortest plausible beat), extremes are
    found with a hysteresis of MIN_SWING_FRACTION of the curve's robust range, extremes closer
    than one plausible beat to another of the same kind are merged, and extremes on the first
    or last frame are dropped (the true extreme may lie outside the video). A beat is an ED
    followed by the ES before the next ED; a video with no such pair (shorter than a beat,
    ES first) uses each ES and the ED after it instead, so its ED frame follows its ES.
    """
    area = np.asarray(area_px, dtype=np.float64)
    length = np.asarray(length_px, dtype=np.float64)
    n = area.size
    spacing = min_beat_frames(fps if fps and fps > 0 else 50.0, max_hr_bpm)
    s = smooth(area, spacing / 6.0)
    empty = CardiacResult([], [], [], s)
    if n < 3:
        return empty
    lo, hi = np.percentile(s, [2, 98])
    if hi - lo <= max(1.0, 0.02 * hi):  # flat curve (or no LV at all): no beats to find
        return empty
    delta = MIN_SWING_FRACTION * (hi - lo)
    extremes, pending = _alternating_extremes(s, delta)
    lightly = smooth(area, MEASURE_SIGMA)
    if pending is not None:
        # The last extreme of the video counts if the curve clearly turned back after it.
        i, kind = pending
        turn = (lightly[i] - lightly[-1]) if kind == "max" else (lightly[-1] - lightly[i])
        if i < n - 2 and turn >= END_TURN_FRACTION * delta:
            extremes.append(pending)
    picked = _merge_close(extremes, s, spacing)
    picked = [(i, k) for i, k in picked if 0 < i < n - 1]
    ed = [i for i, k in picked if k == "max"]
    es = [i for i, k in picked if k == "min"]
    # Volumes from lightly smoothed curves: one noisy frame should not make the EF.
    a_meas, l_meas = lightly, smooth(length, MEASURE_SIGMA)
    pairs = []
    for e in ed:
        nxt_ed = min([x for x in ed if x > e], default=n)
        cands = [x for x in es if e < x < nxt_ed]
        if cands:
            pairs.append((e, cands[0]))
    if not pairs:
        # No ED followed by its ES (a clip shorter than a beat, cut mid-systole): an ES and the
        # ED that follows it bound the same volume change (filling), so they give the EF too.
        for t in es:
            nxt_es = min([x for x in es if x > t], default=n)
            cands = [x for x in ed if t < x < nxt_es]
            if cands:
                pairs.append((cands[0], t))
    beats = []
    for e, t in pairs:
        edv = area_length_volume_px3(a_meas[e], l_meas[e])
        esv = area_length_volume_px3(a_meas[t], l_meas[t])
        if edv <= 0:
            continue
        beats.append(Beat(ed_frame=e, es_frame=t, ed_area_px=float(a_meas[e]), es_area_px=float(a_meas[t]),
                          ed_length_px=float(l_meas[e]), es_length_px=float(l_meas[t]),
                          edv_px3=edv, esv_px3=esv, ef_estimate_pct=100.0 * (edv - esv) / edv))
    return CardiacResult(ed, es, beats, s)


def cm_per_px(spacing_cm: tuple[float, float]) -> tuple[float, float]:
    """(cm^2 per pixel, cm per pixel of length) for a (dx, dy) spacing in cm."""
    dx, dy = (float(v) for v in spacing_cm)
    return dx * dy, math.sqrt(dx * dy)


def beat_in_cm(beat: Beat, spacing_cm: tuple[float, float]) -> dict[str, float]:
    """A beat's ED/ES areas (cm^2), lengths (cm) and volumes (mL) for a pixel spacing in cm."""
    a, ln = cm_per_px(spacing_cm)
    return {"ed_area_cm2": beat.ed_area_px * a, "es_area_cm2": beat.es_area_px * a,
            "ed_length_cm": beat.ed_length_px * ln, "es_length_cm": beat.es_length_px * ln,
            "edv_ml": area_length_volume_px3(beat.ed_area_px * a, beat.ed_length_px * ln),
            "esv_ml": area_length_volume_px3(beat.es_area_px * a, beat.es_length_px * ln)}
