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


#: Largest half (original, or overlay) of an overlay video frame: a 4K clip's side-by-side video
#: would be 7680x2160, which OpenCV's MJPG writer alone holds ~200 MB for and few players show.
OVERLAY_MAX_W, OVERLAY_MAX_H = 1920, 1080


def fit_for_overlay(frame: np.ndarray, mask: np.ndarray, max_w: int = OVERLAY_MAX_W,
                    max_h: int = OVERLAY_MAX_H) -> tuple[np.ndarray, np.ndarray]:
    """Frame and mask scaled down together to fit max_w x max_h (as they are when they fit already).

    Only the picture is scaled: areas and lengths are measured on the mask at the original size."""
    h, w = frame.shape[:2]
    scale = min(1.0, max_w / w, max_h / h)
    if scale >= 1.0:
        return frame, mask
    import cv2

    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
    m = cv2.resize(np.asarray(mask, np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)
    return small, m


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
