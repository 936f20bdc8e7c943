"""Frames for calibration and parity: the checkpoint's own data where it can be read, else synthetic.

A checkpoint records the data directory it was trained on (``train_config.data``). When that
directory exists and the data loader is available, calibration uses its TRAIN split and
parity its VAL split; otherwise both use synthetic echo frames (different seeds, so parity
never sees the calibration frames).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

#: Synthetic seeds: calibration and parity never share a video.
CALIB_SEED = 1000
PARITY_SEED = 2000
SYNTH_FRAMES_PER_VIDEO = 24


def synthetic_frames(n: int, seed: int, size: tuple[int, int] = (112, 112)) -> np.ndarray:
    """``n`` uint8 BGR frames N,H,W,3 from synthetic echo videos, spread over several hearts."""
    import cv2

    from echoseg.data.synthetic import make_video

    out: list[np.ndarray] = []
    video = 0
    while sum(len(f) for f in out) < n:
        frames = make_video(seed + video, frames=SYNTH_FRAMES_PER_VIDEO).frames
        out.append(frames)
        video += 1
    frames = np.concatenate(out)[:n]
    if frames.shape[1:3] != size:
        frames = np.stack([cv2.resize(f, (size[1], size[0]), interpolation=cv2.INTER_AREA) for f in frames])
    return frames


def _split_frames(data_dir: str, split: str, n: int, size: tuple[int, int], seed: int) -> np.ndarray | None:
    try:
        from echoseg.data.dataset import load_split
    except ImportError:
        log.info("echoseg.data.dataset is not available; using synthetic frames")
        return None
    try:
        # only n frames, from videos spread over the split: never the whole split in memory
        images = np.asarray(load_split(data_dir, split, size=size, max_frames=n).images)
    except Exception as exc:  # any data problem: fall back to synthetic, say why
        log.warning("cannot read the %s split of %s (%s); using synthetic frames", split, data_dir,
                    str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__)
        return None
    if len(images) == 0:
        return None
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(images), size=min(n, len(images)), replace=False))
    return images[idx]


def checkpoint_frames(ckpt, split: str, n: int, seed: int) -> tuple[np.ndarray, str]:
    """(uint8 frames N,H,W,3 at the model's size, where they came from) for a checkpoint."""
    spec = ckpt.input_spec
    size = (spec.height, spec.width)
    data = ckpt.train_config.data if ckpt.train_config else ""
    if data and Path(data).is_dir():
        frames = _split_frames(data, split, n, size, seed)
        if frames is not None:
            return frames, f"{split} split of {data}"
    return synthetic_frames(n, seed, size), "synthetic"
