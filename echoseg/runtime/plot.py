"""A small line chart drawn with OpenCV: echo-run's area.png without importing matplotlib.

matplotlib costs the streaming runtime about 30 MB of resident memory and a quarter of a second
the first time a video is plotted (measured: README, "echo-run"), for one chart per video. This
draws the same chart (lines, markers, grid, ticks at round numbers, title, axis labels, legend)
with the OpenCV the runtime already has.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

FONT = 0  # cv2.FONT_HERSHEY_SIMPLEX
INK, GRID, BG = (40, 40, 40), (225, 225, 225), (255, 255, 255)
#: matplotlib's C0, C2, C3 (blue, green, red) in BGR, so the chart looks as it did
BLUE, GREEN, RED, GREY = (180, 119, 31), (44, 160, 44), (40, 39, 214), (150, 150, 150)


@dataclass
class Series:
    x: np.ndarray
    y: np.ndarray
    label: str
    color: tuple[int, int, int]
    width: int = 1  # a line this many pixels wide; 0: markers only
    marker: str = ""  # "", "o" (dot) or "v" (triangle down)


def nice_ticks(lo: float, hi: float, target: int = 6) -> list[float]:
    """Round tick values covering [lo, hi]: steps of 1, 2, 2.5 or 5 times a power of ten."""
    lo = lo if math.isfinite(lo) else 0.0
    if not math.isfinite(hi) or hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(1, target)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    return [round(first + i * step, 10) for i in range(int((hi - first) / step + 1e-9) + 1)]


def _label(v: float) -> str:
    return f"{v:g}" if abs(v) < 1e6 else f"{v:.3g}"


def line_chart(path: str | Path, series: Sequence[Series], title: str, xlabel: str, ylabel: str,
               size: tuple[int, int] = (800, 320)) -> Path:
    """Draw ``series`` into a PNG at ``path`` (width, height ``size``); returns the path."""
    import cv2

    w, h = size
    img = np.full((h, w, 3), BG, np.uint8)
    left, right, top, bottom = 72, 16, 30, 44
    xs = np.concatenate([np.asarray(s.x, float) for s in series if len(s.x)] or [np.zeros(1)])
    ys = np.concatenate([np.asarray(s.y, float) for s in series if len(s.y)] or [np.zeros(1)])
    x0, x1 = float(np.nanmin(xs)), float(np.nanmax(xs))
    y0, y1 = float(np.nanmin(ys)), float(np.nanmax(ys))
    pad = (y1 - y0) * 0.05 or max(1.0, abs(y0) * 0.05)
    y0, y1 = y0 - pad, y1 + pad
    if x1 <= x0:
        x1 = x0 + 1.0

    def px(x, y):
        u = left + (np.asarray(x, float) - x0) / (x1 - x0) * (w - left - right)
        v = h - bottom - (np.asarray(y, float) - y0) / (y1 - y0) * (h - top - bottom)
        return np.stack([u, v], -1)

    def text(s: str, org, scale=0.4, color=INK, anchor="left"):
        (tw, th), _ = cv2.getTextSize(s, FONT, scale, 1)
        x, y = org
        x = x - tw // 2 if anchor == "center" else x - tw if anchor == "right" else x
        cv2.putText(img, s, (int(x), int(y)), FONT, scale, color, 1, cv2.LINE_AA)
        return tw, th

    for v in nice_ticks(y0, y1, 5):
        (_, yy), = px([x0], [v]).astype(int)
        cv2.line(img, (left, yy), (w - right, yy), GRID, 1)
        text(_label(v), (left - 6, yy + 4), anchor="right")
    for v in nice_ticks(x0, x1, 8):
        (xx, _), = px([v], [y0]).astype(int)
        cv2.line(img, (xx, top), (xx, h - bottom), GRID, 1)
        text(_label(v), (xx, h - bottom + 15), anchor="center")
    cv2.rectangle(img, (left, top), (w - right, h - bottom), INK, 1)
    for s in series:
        if not len(s.x):
            continue
        pts = px(s.x, s.y)
        if s.width:
            cv2.polylines(img, [np.round(pts * 16).astype(np.int32)], False, s.color, s.width, cv2.LINE_AA, shift=4)
        for u, v in np.round(pts).astype(int) if s.marker else ():
            _marker(img, s.marker, (int(u), int(v)), s.color)
    text(title, (w // 2, top - 10), scale=0.42, anchor="center")
    text(xlabel, ((left + w - right) // 2, h - 8), anchor="center")
    (tw, th), _ = cv2.getTextSize(ylabel, FONT, 0.4, 1)
    strip = np.full((th + 8, tw + 4, 3), BG, np.uint8)
    cv2.putText(strip, ylabel, (2, th + 2), FONT, 0.4, INK, 1, cv2.LINE_AA)
    strip = cv2.rotate(strip, cv2.ROTATE_90_COUNTERCLOCKWISE)
    y_at = max(0, (top + h - bottom) // 2 - strip.shape[0] // 2)
    img[y_at:y_at + strip.shape[0], 4:4 + strip.shape[1]] = strip[: h - y_at]
    _legend(img, series, (w - right - 8, top + 8))
    if not cv2.imwrite(str(path), img):
        raise OSError(f"{path}: could not write the PNG")
    return Path(path)


def _marker(img, kind: str, at: tuple[int, int], color) -> None:
    import cv2

    u, v = at
    if kind == "v":
        tri = np.array([[u - 5, v - 4], [u + 5, v - 4], [u, v + 5]], np.int32)
        cv2.fillPoly(img, [tri], color, cv2.LINE_AA)
    else:
        cv2.circle(img, (u, v), 4, color, -1, cv2.LINE_AA)


def _legend(img, series: Sequence[Series], top_right: tuple[int, int]) -> None:
    import cv2

    rows = [s for s in series if s.label]
    if not rows:
        return
    widths = [cv2.getTextSize(s.label, FONT, 0.36, 1)[0][0] for s in rows]
    bw, bh = max(widths) + 40, 16 * len(rows) + 8
    x1, y0 = top_right
    x0 = x1 - bw
    overlay = img[y0:y0 + bh, x0:x1].astype(np.float32)
    img[y0:y0 + bh, x0:x1] = (overlay * 0.35 + 255 * 0.65).astype(np.uint8)  # translucent white box
    cv2.rectangle(img, (x0, y0), (x1, y0 + bh), (200, 200, 200), 1)
    for i, s in enumerate(rows):
        yy = y0 + 12 + 16 * i
        if s.width:
            cv2.line(img, (x0 + 6, yy - 3), (x0 + 26, yy - 3), s.color, s.width, cv2.LINE_AA)
        if s.marker:
            _marker(img, s.marker, (x0 + 16, yy - 3), s.color)
        cv2.putText(img, s.label, (x0 + 32, yy), FONT, 0.36, INK, 1, cv2.LINE_AA)
