"""Side-by-side overlay frames: the original on the left, the LV mask drawn over it on the right."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .postprocess import bounding_box

FILL_BGR = (0, 200, 0)
CONTOUR_BGR = (0, 255, 255)
FILL_ALPHA = 0.35


@lru_cache(maxsize=8)
def _blend_table(alpha: float, fill_bgr: tuple[int, int, int]) -> np.ndarray:
    """256x1x3 uint8: uint8(v * (1 - alpha) + fill * alpha) per channel, in float32 as a per-pixel blend is."""
    v = np.arange(256, dtype=np.float32)[:, None]
    return (v * (1 - alpha) + np.asarray(fill_bgr, np.float32) * alpha).astype(np.uint8)[:, None, :]


def overlay_frame(frame: np.ndarray, mask: np.ndarray, alpha: float = FILL_ALPHA,
                  fill_bgr: tuple[int, int, int] = FILL_BGR,
                  contour_bgr: tuple[int, int, int] = CONTOUR_BGR) -> np.ndarray:
    """uint8 H,W,3 frame and H,W bool mask (same size) -> H,2W,3: original | filled contour."""
    import cv2

    if frame.shape[:2] != mask.shape[:2]:
        raise ValueError(f"overlay: frame {frame.shape[:2]} and mask {mask.shape[:2]} differ in size")
    out = np.empty((frame.shape[0], 2 * frame.shape[1], 3), np.uint8)
    w = frame.shape[1]
    out[:, :w] = frame
    out[:, w:] = frame
    m = mask.astype(bool, copy=False)
    bb = bounding_box(m)
    if bb is not None:
        # only the mask's bounding box is touched (padded by one background pixel for the contour
        # tracer), and the contour points are shifted back: the same pixels as on the whole frame
        right = out[:, w:]
        box, mb = right[bb], m[bb]
        np.copyto(box, cv2.LUT(box, _blend_table(alpha, tuple(fill_bgr))), where=mb[:, :, None])
        padded = np.zeros((mb.shape[0] + 2, mb.shape[1] + 2), np.uint8)
        padded[1:-1, 1:-1] = mb
        contours, _ = cv2.findContours(padded, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE,
                                       offset=(int(bb[1].start) - 1, int(bb[0].start) - 1))
        thickness = max(1, round(min(frame.shape[:2]) / 200))
        cv2.drawContours(right, contours, -1, contour_bgr, thickness, cv2.LINE_AA)
    return out
