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


ERROR_SITES = ("beside", "past_base", "missed")


def error_sites(pred: np.ndarray, truth: np.ndarray) -> dict[str, np.ndarray]:
    """Per frame, where a mask errs, in pixels: marked ``beside`` the label (outside it, in its rows
    or above), marked ``past_base`` (below the label's lowest row: in an apex-up apical view, past
    the valve plane into the atrium) and ``missed`` (label pixels not marked). Boolean masks N,H,W;
    a frame with an empty label counts every marked pixel as beside it."""
    p = np.asarray(pred).astype(bool)
    t = np.asarray(truth).astype(bool)
    if p.shape != t.shape or p.ndim != 3:
        raise ValueError(f"masks N,H,W of one shape expected, got {p.shape} and {t.shape}")
    rows = np.arange(t.shape[1])[None, :]
    has = t.any(2)  # N,H: rows the label reaches
    base = np.where(has.any(1), np.where(has, rows, -1).max(1), t.shape[1] - 1)  # lowest label row
    below = rows > base[:, None]  # N,H
    fp = p & ~t
    past = (fp & below[:, :, None]).sum((1, 2))
    return {"beside": fp.sum((1, 2)) - past, "past_base": past, "missed": (t & ~p).sum((1, 2))}


def error_sites_by_third(sites: dict[str, np.ndarray], truth_area: np.ndarray, groups: dict) -> dict:
    """Each video's frames in thirds by the label's area (largest: near ED; smallest: near ES), and
    in each the pooled shares of the label's area marked beside it, past its base and missed.
    ``groups``: video -> frame indices. A video of one or two frames gives each of them to the
    third its area puts it in (one frame: both)."""
    pick = {"largest": [], "smallest": []}
    for ix in groups.values():
        ix = np.asarray(ix)
        a = truth_area[ix].astype(np.float64)
        lo, hi = np.quantile(a, [1 / 3, 2 / 3])
        pick["largest"] += list(ix[a >= hi])
        pick["smallest"] += list(ix[a <= lo])
    out = {}
    for third, ix in pick.items():
        ix = np.asarray(ix, dtype=int)
        area = float(truth_area[ix].sum())
        out[third] = {k: (float(sites[k][ix].sum()) / area if area else float("nan")) for k in ERROR_SITES}
        out[third]["frames"] = int(len(ix))
    return out


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
