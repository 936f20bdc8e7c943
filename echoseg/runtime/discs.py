"""LV volume from one mask: method of discs (the default) and single-plane area-length.

Long axis: the principal axis of the mask's pixels (largest second moment). In an apical
four-chamber view it runs from the apex to the middle of the mitral annulus, where the mask
is cut flat by the valve plane, so the mask's extent along it is the apex-to-annulus length
with no landmark detection, stable from frame to frame.

Method of discs (Simpson's rule, single plane, as the clinical tracings are measured): the
long axis is cut into ``n_discs`` (20) slabs of equal height h perpendicular to it; each slab
is a disc whose diameter is the mask's mean chord width in it (its pixel area / h), and
V = sum(pi/4 d_i^2 h). Each pixel is spread over one pixel of length along the axis before it
is cut into slabs, so slabs thinner than a pixel or aligned with the pixel rows do not alias.

Area-length: V = 8 A^2 / (3 pi L), an ellipsoid's volume from its area and length.

Units are pixels (px^3); with a pixel spacing (dx, dy) in cm a volume scales by (dx dy)^1.5,
exact for the square pixels of ultrasound scan conversion.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

#: Discs of the method of discs (the clinical convention, EchoNet-Dynamic's tracings too).
N_DISCS = 20
#: Sub-bins per pixel of length when pixels are spread along the axis.
_FINE = 8


class FrameMeasure(NamedTuple):
    """What the read-out needs of one (cleaned) mask."""

    area_px: int
    length_px: float
    volume_discs_px3: float
    centre_x: float
    centre_y: float


def area_length_volume_px3(area_px: float, length_px: float) -> float:
    """Single-plane area-length volume 8 A^2 / (3 pi L) (0 for a zero length)."""
    if length_px <= 0:
        return 0.0
    return 8.0 * float(area_px) ** 2 / (3.0 * math.pi * float(length_px))


def _axis_coords(mask: np.ndarray) -> tuple[np.ndarray, float, float] | None:
    """Pixel-centre coordinates along the principal axis, and the mask's centroid (x, y)."""
    ys, xs = np.nonzero(mask)
    if xs.size < 2:
        return None
    pts = np.stack([xs, ys], axis=1).astype(np.float64)
    centre = pts.mean(axis=0)
    pts -= centre
    cov = pts.T @ pts / len(pts)
    _, vecs = np.linalg.eigh(cov)
    return pts @ vecs[:, -1], float(centre[0]), float(centre[1])


def _length(t: np.ndarray) -> float:
    return float(t.max() - t.min() + 1.0)  # + one pixel: extents of pixel squares, not centres


def _discs_from_axis(t: np.ndarray, n_discs: int) -> float:
    start = t - t.min()  # each pixel covers [start, start + 1) along the axis
    j = np.floor(start * _FINE).astype(np.int64)
    per_bin = np.convolve(np.bincount(j), np.ones(_FINE) / _FINE)  # pixel mass per sub-bin of 1/_FINE px
    cum = np.concatenate([[0.0], np.cumsum(per_bin)])
    m = len(per_bin)
    edges = np.linspace(0.0, m, n_discs + 1)
    mass = np.diff(np.interp(edges, np.arange(m + 1), cum))  # pixel area in each slab
    h = m / _FINE / n_discs
    diam = mass / h
    return float(np.sum(math.pi / 4.0 * diam ** 2) * h)


def mask_area_px(mask: np.ndarray) -> int:
    """Number of LV pixels."""
    return int(np.count_nonzero(mask))


def mask_length_px(mask: np.ndarray) -> float:
    """Extent of the mask along its principal (long) axis, in pixels; 0 for an empty mask."""
    ax = _axis_coords(mask)
    if ax is None:
        return float(np.count_nonzero(mask))
    return _length(ax[0])


def disc_volume_px3(mask: np.ndarray, n_discs: int = N_DISCS) -> float:
    """Method-of-discs volume of a mask (px^3; see the module docstring); 0 for fewer than 2 pixels."""
    ax = _axis_coords(mask)
    return 0.0 if ax is None else _discs_from_axis(ax[0], n_discs)


def measure_mask(mask: np.ndarray) -> FrameMeasure:
    """Area, long-axis length, disc volume and centroid of one mask, from one pass over its pixels."""
    ax = _axis_coords(mask)
    area = mask_area_px(mask)
    if ax is None:
        ys, xs = np.nonzero(mask)
        cx, cy = (float(xs[0]), float(ys[0])) if xs.size else (float("nan"), float("nan"))
        return FrameMeasure(area, float(area), 0.0, cx, cy)
    t, cx, cy = ax
    return FrameMeasure(area, _length(t), _discs_from_axis(t, N_DISCS), cx, cy)


def volume_scale(spacing_cm: tuple[float, float]) -> float:
    """mL per px^3 for a (dx, dy) pixel spacing in cm."""
    dx, dy = (float(v) for v in spacing_cm)
    return (dx * dy) ** 1.5
