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
from pathlib import Path
from typing import Callable

import numpy as np

from echoseg.atomic import atomic_path

from .heart import BASE_CUT, FPS, SIZE, Heart, SynthVideo, _smooth_noise, cavity_outline, random_heart, with_truth
from .video import write_video


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


ECHO_VERSIONS = {"echo": 1, "echo2": 2, "echo3": 3, "echo4": 4, "echo5": 5}  # the scanner-like styles and their generator versions
STYLES = ("classic", *ECHO_VERSIONS)


def make_video(seed: int, frames: int = 96, name: str | None = None, ef: float | None = None,
               style: str = "classic") -> SynthVideo:
    """One synthetic video with its exact masks, ED/ES frames, EF and EchoNet tracings.

    ``style`` "classic" is the simple, fast renderer the tests and the demo use; "echo"
    (synth_echo.py) images the scene like a scanner and is what a model meant for real echo
    should learn from (the first bundled model's data); "echo2" is its second version, with
    wider pose, fan, gain and speckle ranges and the scenes that model failed on; "echo3" is the
    first with atria that can be larger than the LV; "echo4" is echo3 with the haze in a hazy LV
    reaching from the apex only part of the way to the valve; "echo5" is echo3 with a grey inner
    wall, outside the mask, that widens as the LV contracts (an experiment; see synth_echo._scene_v5).
    """
    if style in ECHO_VERSIONS:
        from .synth_echo import make_echo_video

        return make_echo_video(seed, frames=frames, name=name, ef=ef, version=ECHO_VERSIONS[style])
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
