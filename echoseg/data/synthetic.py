"""Synthetic apical four-chamber echo videos in the exact EchoNet-Dynamic layout.

Each video is a fan-shaped sector with speckle and depth attenuation, bright myocardial walls
around a dark LV cavity that beats through cardiac cycles, three other chambers, and a random
pose, size, gain and depth. The LV cavity is a half-ellipse-topped shape cut flat at the
mitral plane, its apex fixed; its size follows a contraction curve c(t) (0 at ED, 1 at ES).
The true EF is the single-plane area-length EF of the exact ED and ES cavities, so runtime
estimates can be checked against it. Everything is deterministic for a seed.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from echoseg.atomic import atomic_path

from .echonet import area_length_volume_px3, polygon_area
from .video import write_video

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


def _render(heart: Heart, c: float, speckle: np.ndarray, rng: np.random.Generator,
            sector: np.ndarray, atten: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import cv2

    img = np.full((SIZE, SIZE), heart.tissue, np.float32)
    d, nrm = heart.frame_axes()
    a, b = heart.axes(c)
    wall_v, blood_v = 0.8, 0.04

    def ellipse(centre: np.ndarray, ax: float, bx: float, value: float) -> None:
        ang = math.degrees(math.atan2(d[1], d[0]))
        cv2.ellipse(img, (int(round(centre[0] * 16)), int(round(centre[1] * 16))),
                    (int(round(ax * 16)), int(round(bx * 16))), ang, 0, 360, value, -1, cv2.LINE_AA, 4)

    # Other chambers (RV left of the LV, atria below the mitral/tricuspid planes).
    mid = heart.apex + d * a * (1 + BASE_CUT)
    rv_c = heart.apex + d * (a * 0.95) + nrm * (b + heart.wall * 2 + 0.55 * b + 2)
    la_c = mid + d * (0.42 * heart.a_ed + heart.wall)
    ra_c = la_c + nrm * (b + 0.55 * b + heart.wall * 2 + 2) + d * 2
    for centre, ax, bx in ((rv_c, 0.85 * a, 0.55 * b), (la_c, 0.42 * heart.a_ed, 0.9 * heart.b_ed),
                           (ra_c, 0.38 * heart.a_ed, 0.8 * heart.b_ed)):
        ellipse(centre, ax + heart.wall, bx + heart.wall, wall_v * 0.85)
        ellipse(centre, ax, bx, blood_v)
    wall = cavity_outline(heart, c, grow=heart.wall * (1 + 0.4 * c))
    cavity = cavity_outline(heart, c)
    cv2.fillPoly(img, [np.round(wall * 16).astype(np.int32)], wall_v, cv2.LINE_AA, 4)
    cv2.fillPoly(img, [np.round(cavity * 16).astype(np.int32)], blood_v, cv2.LINE_AA, 4)
    mask = np.zeros((SIZE, SIZE), np.uint8)
    cv2.fillPoly(mask, [np.round(cavity * 16).astype(np.int32)], 1, cv2.LINE_8, 4)

    img = cv2.GaussianBlur(img, (0, 0), 0.8)
    img = img * speckle * atten * heart.gain + 0.03 * rng.standard_normal(img.shape).astype(np.float32)
    img = np.clip(img, 0, 1) * sector
    return (img * 255).astype(np.uint8), mask.astype(bool)


STYLES = ("classic", "echo", "echo2")


def make_video(seed: int, frames: int = 96, name: str | None = None, ef: float | None = None,
               style: str = "classic") -> SynthVideo:
    """One synthetic video with its exact masks, ED/ES frames, EF and EchoNet tracings.

    ``style`` "classic" is the simple, fast renderer the tests and the demo use; "echo"
    (synth_echo.py) images the scene like a scanner and is what a model meant for real echo
    should learn from (the first bundled model's data); "echo2" is its second version, with
    wider pose, fan, gain and speckle ranges and the scenes that model failed on.
    """
    if style in ("echo", "echo2"):
        from .synth_echo import make_echo_video

        return make_echo_video(seed, frames=frames, name=name, ef=ef, version=2 if style == "echo2" else 1)
    if style != "classic":
        raise ValueError(f"unknown synthetic style {style!r}; use one of {', '.join(STYLES)}")
    rng = np.random.default_rng(seed)
    heart = random_heart(rng, ef)
    # A video must hold at least one whole beat (EchoNet traces one ED and one ES frame in it):
    # very short videos get a faster heart.
    heart.period = min(heart.period, max(6.0, frames - 4.0))
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    dx, dy = xx - heart.sector_apex[0], yy - heart.sector_apex[1]
    r = np.hypot(dx, dy)
    theta = np.arctan2(dx, dy)
    sector = ((np.abs(theta) < heart.sector_half_angle) & (r < heart.depth_px)).astype(np.float32)
    atten = (1.15 * np.exp(-0.9 * r / heart.depth_px)).astype(np.float32)
    base_speckle = _smooth_noise(rng, (SIZE, SIZE), 0.7)
    t = np.arange(frames)
    contraction = heart.contraction(t)
    out = np.empty((frames, SIZE, SIZE, 3), np.uint8)
    masks = np.empty((frames, SIZE, SIZE), bool)
    for i in range(frames):
        fresh = _smooth_noise(rng, (SIZE, SIZE), 0.7)
        sp = 0.7 * base_speckle + 0.3 * fresh
        speckle = np.clip(1 + 0.55 * sp / (sp.std() + 1e-6), 0.05, None)
        grey, masks[i] = _render(heart, float(contraction[i]), speckle, rng, sector, atten)
        out[i] = grey[:, :, None]
    return with_truth(heart, out, masks, name or f"SYN{seed:06d}")


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


def write_dataset(out: str | os.PathLike, videos: int = 40, frames: int = 96, seed: int = 0,
                  splits: tuple[float, float] = (0.7, 0.15),
                  progress: Callable[[int, int], None] | None = None, style: str = "classic") -> Path:
    """Write ``videos`` synthetic videos in the EchoNet-Dynamic layout under ``out``."""
    root = Path(out)
    (root / "Videos").mkdir(parents=True, exist_ok=True)
    file_rows, trace_rows = [], []
    for i in range(videos):
        v = make_video(seed * 100_003 + i, frames=frames, name=f"SYN{seed:03d}_{i:05d}", style=style)
        write_video(root / "Videos" / f"{v.name}.avi", v.frames, FPS)
        split = _split_of(i, videos, splits).upper()
        file_rows.append([v.name, f"{v.ef:.4f}", f"{v.esv_ml:.4f}", f"{v.edv_ml:.4f}", SIZE, SIZE,
                          int(FPS), frames, split])
        for frame, lines in sorted(v.tracings.items()):
            for x1, y1, x2, y2 in lines:
                trace_rows.append([f"{v.name}.avi", f"{x1:.4f}", f"{y1:.4f}", f"{x2:.4f}", f"{y2:.4f}", frame])
        if progress:
            progress(i + 1, videos)
    _write_csv(root / "FileList.csv",
               ["FileName", "EF", "ESV", "EDV", "FrameHeight", "FrameWidth", "FPS", "NumberOfFrames", "Split"],
               file_rows)
    _write_csv(root / "VolumeTracings.csv", ["FileName", "X1", "Y1", "X2", "Y2", "Frame"], trace_rows)
    return root


def _split_of(i: int, videos: int, splits: tuple[float, float]) -> str:
    n_train = max(1, int(round(videos * splits[0])))
    n_val = max(1, int(round(videos * splits[1]))) if videos >= 3 else 0
    return "train" if i < n_train else "val" if i < n_train + n_val else "test"


def write_frames(out: str | os.PathLike, videos: int = 40, frames: int = 48, seed: int = 0, every: int = 4,
                 splits: tuple[float, float] = (0.7, 0.15), style: str = "classic",
                 progress: Callable[[int, int], None] | None = None, workers: int = 1) -> Path:
    """Write every ``every``-th frame of ``videos`` synthetic videos, each with its exact LV mask,
    as the frame-folder layout ``echo-train --data`` reads: OUT/{train,val,test}/{images,masks}/
    <video>_<frame>.png, split by video.

    Everything is written under a staging folder inside OUT and moved into place at the end,
    so OUT holds a complete dataset or none; an OUT that already holds split folders is refused.
    ``workers`` > 1 renders videos in that many processes; each video depends on its seed alone,
    so the files are the same for any number of workers.
    """
    root = Path(out)
    taken = [s for s in ("train", "val", "test") if (root / s).exists()]
    if taken:
        raise FileExistsError(f"{root} already holds {'/'.join(taken)}/; write to a new folder or remove it")
    if every < 1:
        raise ValueError(f"--every must be at least 1 (got {every})")
    if workers < 1:
        raise ValueError(f"--workers must be at least 1 (got {workers})")
    if style not in STYLES:
        raise ValueError(f"unknown synthetic style {style!r}; use one of {', '.join(STYLES)}")
    root.mkdir(parents=True, exist_ok=True)
    stage = root / f".partial-{os.getpid()}"
    jobs = [(stage, seed, i, videos, frames, every, splits, style) for i in range(videos)]
    try:
        if workers == 1:
            for i, job in enumerate(jobs):
                _write_video_frames(job)
                if progress:
                    progress(i + 1, videos)
        else:
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(max_workers=min(workers, videos)) as pool:
                for i, _ in enumerate(pool.map(_write_video_frames, jobs, chunksize=4)):
                    if progress:
                        progress(i + 1, videos)
        for split in sorted(p.name for p in stage.iterdir()):
            os.replace(stage / split, root / split)
    finally:
        import shutil

        shutil.rmtree(stage, ignore_errors=True)
    return root


def _write_video_frames(job: tuple) -> None:
    """Render video ``i`` and write its kept frames and masks under the staging folder."""
    import cv2

    stage, seed, i, videos, frames, every, splits, style = job
    v = make_video(seed * 100_003 + i, frames=frames, name=f"SYN{seed:03d}_{i:05d}", style=style)
    split = _split_of(i, videos, splits)
    for sub in ("images", "masks"):
        (stage / split / sub).mkdir(parents=True, exist_ok=True)
    offset = (seed + i) % every  # the kept frames fall at every phase of the beat across videos
    for f in range(offset, frames, every):
        stem = f"{v.name}_{f:04d}.png"
        if not (cv2.imwrite(str(stage / split / "images" / stem), v.frames[f, :, :, 0])
                and cv2.imwrite(str(stage / split / "masks" / stem), v.masks[f].astype(np.uint8) * 255)):
            raise OSError(f"could not write {stage / split / 'images' / stem}")


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
