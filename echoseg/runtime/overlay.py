"""Side-by-side overlay frames: the original on the left, the LV mask drawn over it on the right."""

from __future__ import annotations

import numpy as np

FILL_BGR = (0, 200, 0)
CONTOUR_BGR = (0, 255, 255)
FILL_ALPHA = 0.35


def overlay_frame(frame: np.ndarray, mask: np.ndarray, alpha: float = FILL_ALPHA,
                  fill_bgr: tuple[int, int, int] = FILL_BGR,
                  contour_bgr: tuple[int, int, int] = CONTOUR_BGR) -> np.ndarray:
    """uint8 H,W,3 frame and H,W bool mask (same size) -> H,2W,3: original | filled contour."""
    import cv2

    if frame.shape[:2] != mask.shape[:2]:
        raise ValueError(f"overlay: frame {frame.shape[:2]} and mask {mask.shape[:2]} differ in size")
    right = frame.copy()
    m = mask.astype(bool)
    if m.any():
        tint = np.asarray(fill_bgr, np.float32)
        right[m] = (right[m].astype(np.float32) * (1 - alpha) + tint * alpha).astype(np.uint8)
        contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        thickness = max(1, round(min(frame.shape[:2]) / 200))
        cv2.drawContours(right, contours, -1, contour_bgr, thickness, cv2.LINE_AA)
    return np.concatenate([frame, right], axis=1)
