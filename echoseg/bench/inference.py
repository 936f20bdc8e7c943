"""Frames through a session: videos through the shipped streaming loop, labelled frames, mask files.

Shared by the measuring worker and the reference worker, so both produce masks the same way.
Videos go through :func:`echoseg.runtime.stream.stream_video`, the loop echo-run ships, never a
loop of our own; only labelled still frames (ground truth) are batched here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from echoseg.atomic import atomic_path
from echoseg.config import logit_cut


def to_masks(logits: np.ndarray, threshold: float, output: str = "logits") -> np.ndarray:
    """Boolean masks N,H,W from N,1,H,W network output at the artifact's threshold."""
    return np.asarray(logits)[:, 0] > logit_cut(threshold, output)


def fit_batch(sess, batch: int) -> int:
    lo, hi = sess.info.min_batch, sess.info.max_batch
    if hi and batch > hi:
        raise ValueError(f"batch {batch} is larger than {Path(sess.info.path).name} allows ({hi}); "
                         f"use --batch {hi} or rebuild the engine with a larger profile")
    if batch < lo:
        raise ValueError(f"batch {batch} is smaller than {Path(sess.info.path).name} needs ({lo})")
    return batch


def stream_masks(sess, video: str, batch: int):
    """One video through echo-run's own streaming loop (runtime/stream.py): (StreamStats, masks F,H,W).

    The masks are at the video's resolution, as echo-run makes them; the stats carry the
    end-to-end wall time and the time inside Session.run (model only).
    """
    from echoseg.runtime.stream import stream_video

    masks: list[np.ndarray] = []
    stats = stream_video(video, sess, batch=batch, sink=lambda i, frame, mask: masks.append(mask))
    return stats, np.stack(masks)


def infer_frames(sess, images: np.ndarray, batch: int) -> np.ndarray:
    from echoseg.artifacts import preprocess

    meta = sess.info.meta
    # a short last batch is padded (and trimmed) by the session itself (backends.session.BaseSession)
    out = [to_masks(sess.run(preprocess(images[i:i + batch], meta)), meta.threshold, meta.output)
           for i in range(0, len(images), batch)]
    return np.concatenate(out)


def timing_batch(video: str, batch: int, meta) -> np.ndarray:
    from echoseg.data.video import iter_frames
    from echoseg.artifacts import preprocess

    frames = []
    for f in iter_frames(video):
        frames.append(f)
        if len(frames) == batch:
            break
    reps = -(-batch // len(frames))
    return preprocess(np.stack((frames * reps)[:batch]), meta)


def save_masks(path: str, masks: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        np.savez_compressed(tmp, masks=np.packbits(masks, axis=-1), shape=np.asarray(masks.shape))


def load_masks(path: str | Path) -> np.ndarray:
    with np.load(path) as z:
        shape = tuple(int(s) for s in z["shape"])
        return np.unpackbits(z["masks"], axis=-1, count=shape[-1]).astype(bool).reshape(shape)
