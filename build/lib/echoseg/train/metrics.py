"""The one definition of Dice, IoU and pixel accuracy (per frame, then averaged as the paper does).

Pure numpy, so the runtime, the exporter's parity gate and the benchmark use the same numbers
as training without importing torch.
"""

from __future__ import annotations

import numpy as np

METRICS = ("dice", "iou", "pixel_accuracy")


def per_frame(pred: np.ndarray, truth: np.ndarray) -> dict[str, np.ndarray]:
    """Per-frame Dice, IoU and pixel accuracy of boolean masks N,H,W (or H,W).

    A frame where both masks are empty scores 1 (nothing to find, nothing found).
    """
    p = np.asarray(pred).astype(bool)
    t = np.asarray(truth).astype(bool)
    if p.shape != t.shape:
        raise ValueError(f"prediction shape {p.shape} does not match truth shape {t.shape}")
    if p.ndim == 2:
        p, t = p[None], t[None]
    axes = tuple(range(1, p.ndim))
    inter = np.logical_and(p, t).sum(axes).astype(np.float64)
    ps, ts = p.sum(axes).astype(np.float64), t.sum(axes).astype(np.float64)
    union = ps + ts - inter
    both_empty = (ps + ts) == 0
    dice = np.where(both_empty, 1.0, 2 * inter / np.maximum(ps + ts, 1))
    iou = np.where(both_empty, 1.0, inter / np.maximum(union, 1))
    acc = (p == t).mean(axis=axes)
    return {"dice": dice, "iou": iou, "pixel_accuracy": acc}


def summarize(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Frame-averaged Dice, IoU and pixel accuracy, plus the frame count."""
    scores = per_frame(pred, truth)
    out = {k: float(v.mean()) for k, v in scores.items()}
    out["frames"] = int(len(scores["dice"]))
    return out


def bootstrap_ci(values: np.ndarray, n: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values``."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(n, v.size))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def mask_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Dice between two sets of masks pooled over all frames (parity gates, backend agreement)."""
    a, b = np.asarray(a).astype(bool), np.asarray(b).astype(bool)
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2 * np.logical_and(a, b).sum() / total)
