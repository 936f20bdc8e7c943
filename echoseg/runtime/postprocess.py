"""Mask clean-up before measuring: keep the largest connected blob, fill its holes (numpy + OpenCV).

A stray blob elsewhere in the image (seen on real clips) would add to the LV area and
stretch the principal-axis length; a hole inside the cavity (a bright papillary muscle or
speckle) would remove area. The LV is one simply connected region in an apical view, so
the measurement uses exactly that: the largest 8-connected component, its holes filled.
"""

from __future__ import annotations

import numpy as np


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a bool mask (the mask itself when it has at most one)."""
    import cv2

    m = np.ascontiguousarray(mask, dtype=np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
    if n <= 2:  # background only, or one component
        return m.astype(bool)
    biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return labels == biggest


def fill_holes(mask: np.ndarray, max_fraction: float = 0.5) -> np.ndarray:
    """Background regions not connected to the image border (4-connected) become foreground,
    each only if it is at most ``max_fraction`` of the mask's own area: a papillary muscle or a
    speckle gap inside the cavity is filled, while the inside of a ring (a mask that is really
    a frame around something else) is not turned into a solid LV."""
    import cv2

    m = mask.astype(bool)
    inv = np.ascontiguousarray(~m, dtype=np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(inv, connectivity=4)
    if n <= 1:
        return m
    border = set(np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])).tolist())
    limit = max_fraction * m.sum()
    fill = [i for i in range(1, n) if i not in border and stats[i, cv2.CC_STAT_AREA] <= limit]
    return m | np.isin(labels, fill) if fill else m


def clean_mask(mask: np.ndarray) -> np.ndarray:
    """Largest connected component with its holes filled; an empty mask stays empty."""
    m = np.asarray(mask, dtype=bool)
    if not m.any():
        return m
    return fill_holes(largest_component(m))
