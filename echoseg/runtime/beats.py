"""Beats on a per-frame LV volume curve: outlier frames repaired, smoothing, ED (max) / ES (min).

Steps, each for a reason seen on real clips:
1. Outlier frames: a frame whose value (or mask centre) jumps away from its neighbours' median
   by far more than the video's typical frame-to-frame scatter is a segmentation slip, not
   the heart: it is replaced by interpolation between its good neighbours and counted.
2. Smoothing: a Gaussian with sigma a sixth of the shortest plausible beat finds the extremes;
   volumes are read from a curve smoothed by MEASURE_SIGMA_S only, and each ED (ES) frame is the
   largest (smallest) volume of that curve near the extreme found (the clinical definition).
3. Extremes with hysteresis: a maximum or minimum counts when the curve then moves away from it
   by MIN_SWING_FRACTION of its robust range; two of one kind closer than the shortest plausible
   beat are one. No fixed period is assumed, so irregular RR intervals (atrial fibrillation,
   ectopic beats) each keep their own beat.
4. Beats: an ED and the ES before the next ED. A clip without one (shorter than a beat, cut
   mid-systole) uses an ES and the ED after it; failing that, the clip's largest and smallest
   value when they differ by a full swing, with the ends of the clip allowed (flagged: the
   true extreme may lie outside the clip).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Highest heart rate considered plausible; sets the minimum spacing of two ED (or ES) frames.
MAX_HEART_RATE_BPM = 200.0
#: An extreme counts only if the smoothed curve moves at least this fraction of its range.
MIN_SWING_FRACTION = 0.3
#: The last extreme of a video counts if the curve turned back by this fraction of that swing.
END_TURN_FRACTION = 0.25
#: Volumes at ED/ES are read from the curve smoothed with this sigma (seconds; 1 frame at 50 fps).
MEASURE_SIGMA_S = 0.02
#: Outlier frames (repair_outliers): outside their neighbours' range by this many robust SDs of the
#: frame-to-frame change ...
OUTLIER_SDS = 5.0
#: ... and by this fraction of the curve's robust range;
OUTLIER_VALUE_FRACTION = 0.2
#: or a mask centre this fraction of the LV length off its neighbours'.
OUTLIER_CENTRE_FRACTION = 0.2


def min_beat_frames(fps: float, max_hr_bpm: float = MAX_HEART_RATE_BPM) -> int:
    """Fewest frames between two EDs at the highest plausible heart rate (at least 3)."""
    return max(3, int(math.floor(fps * 60.0 / max_hr_bpm)))


def smooth(values: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing with edge-value padding (adds no false extreme at the ends)."""
    v = np.asarray(values, dtype=np.float64)
    if sigma <= 0.3 or v.size < 3:
        return v.copy()
    radius = max(1, int(math.ceil(3 * sigma)))
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    k /= k.sum()
    padded = np.pad(v, radius, mode="edge")
    return np.convolve(padded, k, mode="valid")


def _spikes(v: np.ndarray, floor: float) -> np.ndarray:
    """Frames outside the range of their two neighbours by more than OUTLIER_SDS robust SDs and ``floor``."""
    out = np.zeros(v.size, bool)
    if v.size < 3:
        return out
    a, b, c = v[:-2], v[1:-1], v[2:]
    lo, hi = np.minimum(a, c), np.maximum(a, c)
    jump = np.maximum(lo - b, b - hi).clip(min=0.0)
    scale = 1.4826 * float(np.median(np.abs(np.diff(v))))  # typical frame-to-frame change
    out[1:-1] = jump > max(OUTLIER_SDS * scale, floor)
    return out


def repair_outliers(values: np.ndarray, length_px: np.ndarray | None = None,
                    centre_xy: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(repaired copy of ``values``, bool mask of the frames repaired); see the module docstring.

    A frame is an outlier when its value lies outside the range of its two neighbours by more
    than OUTLIER_SDS robust SDs of the frame-to-frame change and OUTLIER_VALUE_FRACTION of the
    curve's robust range (a real ED or ES is at most a little outside: the curve is smooth there),
    or when its mask centre is more than OUTLIER_CENTRE_FRACTION of the LV length away from the
    middle of its neighbours' centres while those two agree (the mask jumped to another place),
    or when its mask is empty between two non-empty ones."""
    v = np.asarray(values, dtype=np.float64)
    n = v.size
    bad = np.zeros(n, bool)
    if n < 3:
        return v.copy(), bad
    lo, hi = np.percentile(v, [2, 98])
    bad |= _spikes(v, OUTLIER_VALUE_FRACTION * (hi - lo))
    if centre_xy is not None and length_px is not None:
        c = np.asarray(centre_xy, dtype=np.float64).reshape(n, 2)
        known = np.isfinite(c).all(axis=1)
        bad[1:-1] |= ~known[1:-1] & known[:-2] & known[2:]
        if known.sum() >= 3:
            typical_len = float(np.median(np.asarray(length_px, float)[known]))
            mid = (c[:-2] + c[2:]) / 2
            off = np.hypot(*(c[1:-1] - mid).T)
            apart = np.hypot(*(c[:-2] - c[2:]).T)
            jumped = np.nan_to_num(off, nan=0.0) > OUTLIER_CENTRE_FRACTION * typical_len
            bad[1:-1] |= jumped & (np.nan_to_num(apart, nan=np.inf) < off)
    if (~bad).sum() < 2:
        return v.copy(), np.zeros(n, bool)
    good = np.flatnonzero(~bad)
    out = v.copy()
    out[bad] = np.interp(np.flatnonzero(bad), good, v[good])
    return out, bad


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


@dataclass(frozen=True)
class BeatFrames:
    """ED/ES frames found on a curve, the (ED, ES) pairs that make beats, and how they were found."""

    ed_frames: list[int]
    es_frames: list[int]
    pairs: list[tuple[int, int]]
    smoothed: np.ndarray  # the curve the extremes were found on
    measured: np.ndarray  # the curve volumes are read from
    outlier_frames: list[int]
    how: str  # "ed-es" | "es-ed" (clip without a full ejection) | "clip-extremes" | "none"


def find_beats(values: np.ndarray, fps: float, length_px: np.ndarray | None = None,
               centre_xy: np.ndarray | None = None, max_hr_bpm: float = MAX_HEART_RATE_BPM) -> BeatFrames:
    """ED/ES frames and beats on a per-frame volume (or area) curve; see the module docstring."""
    raw = np.asarray(values, dtype=np.float64)
    n = raw.size
    fps = fps if fps and fps > 0 else 50.0
    spacing = min_beat_frames(fps, max_hr_bpm)
    repaired, bad = repair_outliers(raw, length_px, centre_xy)
    s = smooth(repaired, spacing / 6.0)
    measured = smooth(repaired, MEASURE_SIGMA_S * fps)
    outliers = [int(i) for i in np.flatnonzero(bad)]
    none = BeatFrames([], [], [], s, measured, outliers, "none")
    if n < 3:
        return none
    lo, hi = np.percentile(s, [2, 98])
    if hi - lo <= max(1.0, 0.02 * hi):  # flat curve (or no LV at all): no beats to find
        return none
    delta = MIN_SWING_FRACTION * (hi - lo)
    extremes, pending = _alternating_extremes(s, delta)
    if pending is not None:
        i, kind = pending
        turn = (measured[i] - measured[-1]) if kind == "max" else (measured[-1] - measured[i])
        if i < n - 2 and turn >= END_TURN_FRACTION * delta:
            extremes.append(pending)
    picked = _merge_close(extremes, s, spacing)
    picked = [(_refine(measured, i, k, max(1, spacing // 4)), k) for i, k in picked]
    picked = [(i, k) for i, k in picked if 0 < i < n - 1]
    ed = [i for i, k in picked if k == "max"]
    es = [i for i, k in picked if k == "min"]
    pairs = _pairs(ed, es, n)
    how = "ed-es"
    if not pairs:
        pairs = [(e, t) for t, e in _pairs(es, ed, n)]  # an ES and the ED after it: the same volume change
        how = "es-ed"
    if not pairs:
        e, t = int(np.argmax(s)), int(np.argmin(s))
        if s[e] - s[t] >= delta:
            pairs, ed, es, how = [(e, t)], sorted(set(ed) | {e}), sorted(set(es) | {t}), "clip-extremes"
    if not pairs:
        return BeatFrames(ed, es, [], s, measured, outliers, "none")
    return BeatFrames(ed, es, pairs, s, measured, outliers, how)


def _refine(v: np.ndarray, i: int, kind: str, radius: int) -> int:
    """The extreme of the lightly smoothed curve near ``i``: ED the last frame of the largest volume
    (end of diastole), ES the first of the smallest (end of ejection)."""
    lo, hi = max(0, i - radius), min(v.size, i + radius + 1)
    w = v[lo:hi]
    if kind == "max":
        return int(hi - 1 - np.argmax(w[::-1]))
    return int(lo + np.argmin(w))


def _pairs(first: list[int], second: list[int], n: int) -> list[tuple[int, int]]:
    """Each frame of ``first`` with the first frame of ``second`` after it, before the next of ``first``."""
    out = []
    for a in first:
        nxt = min([x for x in first if x > a], default=n)
        cands = [x for x in second if a < x < nxt]
        if cands:
            out.append((a, cands[0]))
    return out
