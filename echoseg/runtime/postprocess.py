"""Mask clean-up before measuring: keep the LV's connected blob, fill its holes (numpy + OpenCV).

A stray blob elsewhere in the image (seen on real clips) would add to the LV area and
stretch the principal-axis length; a hole inside the cavity (a bright papillary muscle or
speckle) would remove area. The LV is one simply connected region in an apical view, so
the measurement uses exactly that: one 8-connected component, its holes filled. Which
component: see :func:`lv_component` (not simply the largest: a second chamber the model
marks too is often the larger one).
"""

from __future__ import annotations

import numpy as np


def bounding_box(m: np.ndarray) -> tuple[slice, slice] | None:
    """The bounding box of a bool mask's pixels (None when empty)."""
    rows = np.flatnonzero(m.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(m.any(axis=0))
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


#: A component is a candidate chamber when it has at least this share of the largest one's area;
#: smaller ones are specks and never chosen over it.
CHAMBER_SHARE = 0.3


def lv_component(mask: np.ndarray) -> np.ndarray:
    """The 8-connected component of a bool mask that is the LV (the mask itself when it has at most one).

    Among the components with at least CHAMBER_SHARE of the largest one's area, the one furthest up
    and to the right (the largest centroid x - y, in pixels). In an apical four-chamber view as the
    models see it (apex at the top, LV on the right: the EchoNet-Dynamic convention; they are trained
    without flips) the LV is the upper right chamber, the RV left of it and the atria below. When a
    model marks one of those as well it is often the larger (a dilated right heart beside a small hazy
    LV), so the largest blob measured the wrong chamber; its position does not change with its size.

    Labelled inside the mask's bounding box only (every component lies there), so a small LV in a
    large frame costs its own size, not the frame's."""
    import cv2

    m = np.asarray(mask, dtype=bool)
    box = bounding_box(m)
    if box is None:
        return m.copy()
    crop = np.ascontiguousarray(m[box], dtype=np.uint8)
    n, labels, stats, centroids = cv2.connectedComponentsWithStats(crop, connectivity=8)
    if n <= 2:  # one component
        return m.copy()
    areas = stats[1:, cv2.CC_STAT_AREA]
    candidates = np.flatnonzero(areas >= CHAMBER_SHARE * areas.max())
    up_right = centroids[1:, 0] - centroids[1:, 1]
    chosen = 1 + int(candidates[np.argmax(up_right[candidates])])
    out = np.zeros_like(m)
    out[box] = labels == chosen
    return out


def fill_holes(mask: np.ndarray, max_fraction: float = 0.5) -> np.ndarray:
    """Background regions not connected to the image border (4-connected) become foreground,
    each only if it is at most ``max_fraction`` of the mask's own area: a papillary muscle or a
    speckle gap inside the cavity is filled, while the inside of a ring (a mask that is really
    a frame around something else) is not turned into a solid LV.

    Computed in the mask's bounding box with a one-pixel background ring around it: the ring is
    connected, so it stands for "the border" exactly (every hole lies inside the box, and all the
    background outside it is one region with the border)."""
    import cv2

    m = np.asarray(mask, dtype=bool)
    box = bounding_box(m)
    if box is None:
        return m.copy()
    inv = np.ones((box[0].stop - box[0].start + 2, box[1].stop - box[1].start + 2), np.uint8)
    inv[1:-1, 1:-1] = ~m[box]
    n, labels, stats, _ = cv2.connectedComponentsWithStats(inv, connectivity=4)
    limit = max_fraction * np.count_nonzero(m)
    border = labels[0, 0]
    fill = np.zeros(n, bool)
    fill[1:] = stats[1:, cv2.CC_STAT_AREA] <= limit
    fill[border] = False
    if not fill.any():
        return m.copy()
    out = m.copy()
    out[box] |= fill[labels[1:-1, 1:-1]]
    return out


def clean_mask(mask: np.ndarray) -> np.ndarray:
    """The LV's connected component (:func:`lv_component`) with its holes filled; an empty mask stays empty."""
    m = np.asarray(mask, dtype=bool)
    if not m.any():
        return m
    return fill_holes(lv_component(m))
