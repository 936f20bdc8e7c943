"""Synthetic scanner screens: an echo clip pasted into a larger canvas with UI text, depth ticks,
a moving ECG trace and a changing frame counter (what a scanner or a PACS export shows)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Screen:
    frames: np.ndarray  # F,H,W,3 uint8 BGR
    masks: np.ndarray  # F,H,W bool: the clip's masks on the screen's pixel grid
    box: tuple[int, int, int, int]  # x,y,w,h of the pasted clip on the screen


def _ecg(t: np.ndarray, period: float) -> np.ndarray:
    """A crude ECG: P wave, QRS spike, T wave per beat; t and period in frames."""
    ph = (t % period) / period
    return (0.15 * np.exp(-((ph - 0.15) / 0.03) ** 2) + 1.0 * np.exp(-((ph - 0.3) / 0.012) ** 2)
            - 0.25 * np.exp(-((ph - 0.33) / 0.01) ** 2) + 0.3 * np.exp(-((ph - 0.6) / 0.05) ** 2))


def make_screen(clip: np.ndarray, masks: np.ndarray, size: tuple[int, int] = (800, 600), scale: float = 3.0,
                at: tuple[int, int] = (300, 70), letterbox: int = 40, period: float = 40.0,
                sweep: bool = True) -> Screen:
    """``clip`` F,h,w[,3] uint8 scaled by ``scale`` (aspect kept) and pasted at ``at`` on a ``size`` (W,H) screen.

    The screen has black bars ``letterbox`` pixels high at top and bottom, a grey panel with static
    text, a depth ruler with ticks and numbers beside the echo, a green ECG trace that sweeps (or
    scrolls) across the bottom, and a frame counter that changes every frame.
    """
    import cv2

    W, H = size
    n = len(clip)
    h, w = clip.shape[1:3]
    cw, ch = int(round(w * scale)), int(round(h * scale))
    x0, y0 = at
    base = np.zeros((H, W, 3), np.uint8)
    base[letterbox:H - letterbox] = (28, 24, 22)
    cv2.rectangle(base, (10, letterbox + 10), (200, H - letterbox - 110), (60, 60, 60), -1)
    for i, text in enumerate(["ECHO LAB 3", "Adult Cardiac", "A4C", "MI 1.2  TIS 0.7", "Gain 54", "DR 60",
                              "FR 50 Hz", "Depth 16 cm", "P  Low", "HGen"]):
        cv2.putText(base, text, (18, letterbox + 36 + 26 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (230, 230, 230), 1,
                    cv2.LINE_AA)
    cv2.putText(base, "PATIENT, TEST  ID 0000  04-Dec-2026 10:31", (220, letterbox + 22), cv2.FONT_HERSHEY_SIMPLEX,
                0.5, (255, 255, 255), 1, cv2.LINE_AA)
    rx = min(W - 30, x0 + cw + 12)
    for d in range(0, 17):
        yy = y0 + int(round(d * ch / 16))
        if yy >= H - letterbox:
            break
        cv2.line(base, (rx, yy), (rx + (10 if d % 5 == 0 else 5), yy), (200, 200, 200), 1)
        if d % 5 == 0:
            cv2.putText(base, str(d), (rx + 12, yy + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (200, 200, 200), 1, cv2.LINE_AA)
    ecg_top, ecg_h = H - letterbox - 95, 70
    xs = np.arange(20, W - 20)
    frames = np.empty((n, H, W, 3), np.uint8)
    out_masks = np.zeros((n, H, W), bool)
    for i in range(n):
        f = base.copy()
        c = clip[i] if clip.ndim == 4 else np.repeat(clip[i][:, :, None], 3, axis=2)
        big = cv2.resize(c, (cw, ch), interpolation=cv2.INTER_LINEAR)
        pw, ph = min(cw, W - x0), min(ch, H - letterbox - y0)
        f[y0:y0 + ph, x0:x0 + pw] = big[:ph, :pw]
        m = cv2.resize(masks[i].astype(np.uint8), (cw, ch), interpolation=cv2.INTER_NEAREST).astype(bool)
        out_masks[i, y0:y0 + ph, x0:x0 + pw] = m[:ph, :pw]
        # the ECG: 4 px of trace per frame; sweep writes over the old trace behind a gap, scroll moves it
        span = (W - 40) // 4  # samples across the screen
        t = (xs - 20) / 4.0 + (i // span) * span if sweep else (xs - 20) / 4.0 + i
        keep = np.ones_like(xs, bool)
        if sweep:  # the head writes the current sweep; behind a gap the previous sweep is still shown
            head = 20 + 4 * (i % span)
            older = xs > head + 12
            t = np.where(older, t - span, t)
            keep = (xs <= head) | older
        ys = (ecg_top + ecg_h * (0.8 - 0.7 * _ecg(t, period))).astype(np.int32)
        pts = np.stack([xs, ys], 1)[keep]
        if len(pts) > 1:
            breaks = np.nonzero(np.diff(pts[:, 0]) > 1)[0] + 1
            for seg in np.split(pts, breaks):
                if len(seg) > 1:
                    cv2.polylines(f, [seg.reshape(-1, 1, 2)], False, (0, 230, 0), 2, cv2.LINE_AA)
        cv2.putText(f, f"{i:04d}  {math.floor(i / 50):02d}:{(2 * i) % 100:02d}", (W - 180, letterbox + 22),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
        frames[i] = f
    return Screen(frames, out_masks, (x0, y0, min(cw, W - x0), min(ch, H - letterbox - y0)))
