"""The part of an input frame the model sees: a box of the frame, padded with black to a square.

``--roi`` is auto (runtime/sector.py finds the ultrasound sector), full (the whole frame) or a box
x,y,w,h in the input's pixels; a DICOM's ultrasound region gives the box too. The box is never
stretched: it is padded to a square (centred across, at the bottom, as EchoNet-style frames show
the sector) and that square is resized to the model's input; the model's masks come back onto the
input's own pixel grid (:meth:`Crop.mask_to_input`). numpy and OpenCV only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from echoseg.errors import EchosegError

#: A found square at least this fraction of the whole frame's square side means the whole frame.
FULL_SIDE_FRACTION = 0.8
ROI_MODES = ("auto", "full")


class RoiError(EchosegError, ValueError):
    """A --roi value that cannot be used."""


@dataclass(frozen=True)
class Crop:
    """The part of an input frame the model sees: the box x,y,w,h (input pixels), padded to a square.

    ``method``: "full" (the whole frame), "sector" (found by :func:`find_sector`), "dicom-region"
    (SequenceOfUltrasoundRegions) or "given" (``--roi x,y,w,h``); ``reason`` says why, in words.
    """

    x: int
    y: int
    w: int
    h: int
    frame_w: int
    frame_h: int
    method: str = "full"
    reason: str = ""

    @property
    def side(self) -> int:
        """Side of the padded square, in input pixels."""
        return max(self.w, self.h)

    @property
    def pad(self) -> tuple[int, int]:
        """(left, top) black padding: the box is centred across and sits at the bottom of its square.

        EchoNet-style frames show the sector that way: it spans the width and reaches the bottom,
        with a strip of black above the probe's apex. A screen's sector is then seen as the model's
        training frames showed it (measured: the apex kept at the top moved the read-out of real
        clips pasted into a screen by up to 8 EF points)."""
        return (self.side - self.w) // 2, self.side - self.h

    @property
    def identity(self) -> bool:
        """The frame goes to the model as it is (square, whole): nothing to crop or pad."""
        return (self.x, self.y, self.w, self.h) == (0, 0, self.frame_w, self.frame_h) and self.w == self.h

    def apply(self, frame: np.ndarray) -> np.ndarray:
        """Input frame H,W[,C] -> the box padded with black to side x side (the frame itself when identity)."""
        if self.identity:
            return frame
        import cv2

        box = frame[self.y:self.y + self.h, self.x:self.x + self.w]
        px, py = self.pad
        return cv2.copyMakeBorder(box, py, self.side - self.h - py, px, self.side - self.w - px,
                                  cv2.BORDER_CONSTANT, value=0)

    def mask_to_input(self, logits_hw: np.ndarray, cut: float) -> np.ndarray:
        """Model-size logits -> bool mask on the input's pixel grid (frame_h x frame_w); outside the box False."""
        import cv2

        m = np.asarray(logits_hw, dtype=np.float32)
        s = self.side
        if m.shape != (s, s):
            interp = cv2.INTER_LINEAR if s >= m.shape[0] else cv2.INTER_AREA
            m = cv2.resize(m, (s, s), interpolation=interp)
        if self.identity:
            return m > cut
        px, py = self.pad
        out = np.zeros((self.frame_h, self.frame_w), bool)
        np.greater(m[py:py + self.h, px:px + self.w], cut, out=out[self.y:self.y + self.h, self.x:self.x + self.w])
        return out

    def to_dict(self) -> dict[str, Any]:
        """What summary.json records: the box, the square it was padded to, the scale, and why."""
        return {"method": self.method, "x": self.x, "y": self.y, "w": self.w, "h": self.h,
                "square_px": self.side, "pad_left_px": self.pad[0], "pad_top_px": self.pad[1],
                "frame_w": self.frame_w, "frame_h": self.frame_h, "reason": self.reason}


def full_crop(width: int, height: int, reason: str = "the whole frame") -> Crop:
    """The whole frame (padded to a square when it is not one)."""
    return Crop(0, 0, width, height, width, height, "full", reason)


def parse_roi(text: str) -> str | tuple[int, int, int, int]:
    """``auto``, ``full`` or ``x,y,w,h`` (input pixels) -> the mode or the box; RoiError otherwise."""
    t = str(text).strip().lower()
    if t in ROI_MODES:
        return t
    m = re.fullmatch(r"\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*", t)
    if not m:
        raise RoiError(f"--roi {text!r}: expected auto, full or x,y,w,h in the input's pixels (e.g. 120,40,480,420)")
    x, y, w, h = (int(v) for v in m.groups())
    if w < 8 or h < 8:
        raise RoiError(f"--roi {text}: the box is {w}x{h} pixels; give one at least 8x8")
    return x, y, w, h


def given_crop(box: tuple[int, int, int, int], width: int, height: int, method: str = "given",
               reason: str = "--roi x,y,w,h") -> Crop:
    """A box from the user (or a DICOM region) clipped to the frame; RoiError when it misses the frame."""
    x, y, w, h = (int(v) for v in box)
    x0, y0, x1, y1 = max(0, x), max(0, y), min(width, x + w), min(height, y + h)
    if x1 - x0 < 8 or y1 - y0 < 8:
        raise RoiError(f"roi {x},{y},{w},{h} lies outside the {width}x{height} frame (or leaves under 8x8 of it); "
                       "give x,y,w,h inside the frame")
    return Crop(x0, y0, x1 - x0, y1 - y0, width, height, method, reason)


def settle(crop: Crop) -> Crop:
    """A crop whose square is nearly the whole frame's becomes the whole frame (EchoNet-style clips stay as is)."""
    whole = max(crop.frame_w, crop.frame_h)
    if crop.method != "full" and crop.side >= FULL_SIDE_FRACTION * whole:
        box = f"{crop.x},{crop.y},{crop.w},{crop.h}"
        return full_crop(crop.frame_w, crop.frame_h, f"{crop.method} {box} covers most of the frame: whole frame used")
    return crop


