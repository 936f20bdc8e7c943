"""The synthetic heart: its geometry over the cardiac cycle and the truth a rendered video carries.

Shared by both renderers (synthetic.py's classic one and synth_echo.py's scanner-like one), which
import it downward.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .echonet import area_length_volume_px3, polygon_area


SIZE = 112
FPS = 50.0
N_CHORDS = 20
BASE_CUT = 0.7  # the mitral plane sits at this fraction of the semi-long-axis past the centre


@dataclass
class Heart:
    """Pose and shape of one synthetic heart (pixels, radians)."""

    apex: np.ndarray  # LV apex (x, y)
    axis_angle: float  # direction apex -> base, from +y
    a_ed: float  # semi-long-axis at ED
    b_ed: float  # semi-short-axis at ED
    ka: float  # long-axis shortening ratio at ES
    kb: float  # short-axis ratio at ES
    wall: float  # myocardial thickness
    period: float  # frames per beat
    phase0: float
    gain: float
    depth_px: float
    sector_half_angle: float
    sector_apex: np.ndarray
    tissue: float
    cm_per_px: float
    # The echo style's LV shape (empty for the classic half-ellipse): relative bumps of the septal
    # and lateral half-widths along the axis, their phases, and the apex profile exponent.
    septal: tuple = ()
    lateral: tuple = ()
    phases: tuple = ()
    apex_power: float = 0.5

    def contraction(self, t: np.ndarray | float) -> np.ndarray:
        phi = 2 * math.pi * (np.asarray(t, dtype=float) / self.period) + self.phase0
        return 0.5 * (1 - np.cos(phi))

    def axes(self, c: float) -> tuple[float, float]:
        return self.a_ed * (1 - c * (1 - self.ka)), self.b_ed * (1 - c * (1 - self.kb))

    def frame_axes(self) -> tuple[np.ndarray, np.ndarray]:
        d = np.array([math.sin(self.axis_angle), math.cos(self.axis_angle)])  # apex -> base
        n = np.array([-d[1], d[0]])  # points to image-left when the axis points down
        return d, n


@dataclass
class SynthVideo:
    """One synthetic video and its truth."""

    name: str
    frames: np.ndarray  # F,H,W,3 uint8
    masks: np.ndarray  # F,H,W bool, exact LV cavity
    contraction: np.ndarray  # F, 0 at ED, 1 at ES
    ed_frames: list[int]
    es_frames: list[int]
    ef: float  # percent, area-length from the exact ED/ES cavities
    edv_ml: float
    esv_ml: float
    tracings: dict[int, np.ndarray] = field(default_factory=dict)  # frame -> (21, 4) X1,Y1,X2,Y2
    fps: float = FPS


def lv_halfwidths(heart: Heart, c: float, us: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Septal and lateral half-widths of the cavity at distances ``us`` from the apex along its axis."""
    a, b = heart.axes(c)
    us = np.asarray(us, dtype=float)
    base = b * np.clip(1 - ((us - a) / a) ** 2, 0, 1) ** heart.apex_power
    s = us / (a * (1 + BASE_CUT))
    widths = []
    for coeffs, phases in ((heart.septal, heart.phases[:3]), (heart.lateral, heart.phases[3:])):
        bump = sum(k * np.sin(math.pi * (i + 1) * s + ph) for i, (k, ph) in enumerate(zip(coeffs, phases)))
        widths.append(base * np.clip(1 + bump, 0.5, 1.6))
    return widths[0], widths[1]


def cavity_outline(heart: Heart, c: float, grow: float = 0.0, n: int = 48) -> np.ndarray:
    """Closed outline (K,2) of the LV cavity (grow > 0: the epicardial outline)."""
    if heart.septal:
        return _shaped_outline(heart, c, grow, n)
    a, b = heart.axes(c)
    a, b = a + grow, b + grow
    d, nrm = heart.frame_axes()
    centre = heart.apex + d * (a - grow)
    u_end = BASE_CUT * a
    t_end = math.acos(-u_end / a)  # parameter where u = a*cos(t)... measured from the apex
    ts = np.linspace(0, t_end, n)
    u = -a * np.cos(ts)
    v = b * np.sin(ts)
    left = centre + np.outer(u, d) + np.outer(v, nrm)
    right = centre + np.outer(u, d) - np.outer(v, nrm)
    return np.concatenate([left, right[::-1]])


def _shaped_outline(heart: Heart, c: float, grow: float, n: int) -> np.ndarray:
    a, _ = heart.axes(c)
    d, nrm = heart.frame_axes()
    us = a * (1 + BASE_CUT) * np.linspace(0, 1, n) ** 2  # dense near the apex, where the width turns fastest
    ws, wl = lv_halfwidths(heart, c, us)
    axis = heart.apex + np.outer(us, d)
    left = axis + np.outer(ws + grow, nrm)
    right = axis - np.outer(wl + grow, nrm)
    return np.concatenate([left, right[::-1]])


def tracing_lines(heart: Heart, c: float) -> np.ndarray:
    """EchoNet-style tracing: long axis, then N_CHORDS chords from base to apex (X1,Y1,X2,Y2)."""
    if heart.septal:
        a, _ = heart.axes(c)
        d, nrm = heart.frame_axes()
        u_c = a * (1 + BASE_CUT)
        us = np.linspace(u_c, 0, N_CHORDS + 2)[1:-1]
        ws, wl = lv_halfwidths(heart, c, us)
        axis = heart.apex + np.outer(us, d)
        chords = np.concatenate([axis + np.outer(ws, nrm), axis - np.outer(wl, nrm)], axis=1)
        return np.concatenate([np.concatenate([heart.apex, heart.apex + d * u_c])[None], chords])
    a, b = heart.axes(c)
    d, nrm = heart.frame_axes()
    centre = heart.apex + d * a
    base_u = BASE_CUT * a
    rows = [np.concatenate([heart.apex, centre + d * base_u])]
    for u in np.linspace(base_u, -a, N_CHORDS + 2)[1:-1]:
        half = b * math.sqrt(max(0.0, 1 - (u / a) ** 2))
        p = centre + d * u
        rows.append(np.concatenate([p + nrm * half, p - nrm * half]))
    return np.array(rows)


def _cavity_volume(heart: Heart, c: float) -> float:
    a, _ = heart.axes(c)
    return area_length_volume_px3(polygon_area(cavity_outline(heart, c, n=400)), a * (1 + BASE_CUT))


def random_heart(rng: np.random.Generator, ef: float | None = None) -> Heart:
    ef = float(rng.uniform(25, 75)) if ef is None else float(ef)
    scale = rng.uniform(0.85, 1.15)
    heart = Heart(
        apex=np.array([SIZE / 2 + rng.uniform(2, 12), rng.uniform(12, 20)]),
        axis_angle=math.radians(rng.uniform(-18, 6)),
        a_ed=32 * scale * rng.uniform(0.92, 1.08),
        b_ed=17 * scale * rng.uniform(0.9, 1.1),
        ka=rng.uniform(0.86, 0.95),
        kb=1.0,
        wall=rng.uniform(4.0, 7.0),
        period=FPS * 60 / rng.uniform(55, 100),
        phase0=rng.uniform(0, 2 * math.pi),
        gain=rng.uniform(0.75, 1.25),
        depth_px=rng.uniform(100, 112),
        sector_half_angle=math.radians(rng.uniform(36, 44)),
        sector_apex=np.array([SIZE / 2 + rng.uniform(-3, 3), rng.uniform(-2, 3)]),
        tissue=rng.uniform(0.18, 0.32),
        cm_per_px=rng.uniform(0.12, 0.16),
    )
    solve_kb(heart, ef)
    return heart


def solve_kb(heart: Heart, ef: float) -> None:
    """Set the short-axis ratio at ES so that the area-length EF of ES vs ED is ``ef``."""
    target = 1 - ef / 100
    lo, hi = 0.2, 1.0
    edv = _cavity_volume(heart, 0.0)
    for _ in range(40):
        heart.kb = (lo + hi) / 2
        if _cavity_volume(heart, 1.0) / edv > target:
            hi = heart.kb
        else:
            lo = heart.kb


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    import cv2

    noise = rng.standard_normal(shape).astype(np.float32)
    return cv2.GaussianBlur(noise, (0, 0), sigma)


def with_truth(heart: Heart, frames: np.ndarray, masks: np.ndarray, name: str) -> SynthVideo:
    """A rendered video with its truth: ED/ES (the extremes of the contraction curve within the
    video), the area-length EF and volumes of the exact cavities, and ED/ES tracings."""
    n = len(frames)
    t = np.arange(n)
    contraction = heart.contraction(t)
    phi = 2 * math.pi * t / heart.period + heart.phase0
    beat = np.floor(phi / (2 * math.pi))
    ed, es = _extremes(phi, beat, n)
    ed = ed or [int(np.argmin(contraction))]
    es = es or [int(np.argmax(contraction))]
    edv = _cavity_volume(heart, 0.0) * heart.cm_per_px ** 3
    esv = _cavity_volume(heart, 1.0) * heart.cm_per_px ** 3
    video = SynthVideo(
        name=name, frames=frames, masks=masks, contraction=contraction,
        ed_frames=ed, es_frames=es, ef=100 * (1 - esv / edv), edv_ml=edv, esv_ml=esv,
    )
    video.tracings[ed[0]] = tracing_lines(heart, float(contraction[ed[0]]))
    video.tracings[es[0]] = tracing_lines(heart, float(contraction[es[0]]))
    return video


def _extremes(phi: np.ndarray, beat: np.ndarray, frames: int) -> tuple[list[int], list[int]]:
    """Frames nearest each phase 0 (ED) and pi (ES) that falls inside the video."""
    ed, es = [], []
    two_pi = 2 * math.pi
    for k in range(int(beat.min()), int(beat.max()) + 2):
        for target, bucket in ((k * two_pi, ed), (k * two_pi + math.pi, es)):
            if phi[0] - 0.5 <= target <= phi[-1] + 0.5:
                i = int(np.argmin(np.abs(phi - target)))
                if abs(phi[i] - target) < (phi[1] - phi[0]) and 0 < i < frames - 1:
                    bucket.append(i)
    return sorted(set(ed)), sorted(set(es))
