"""LV area/length, beat detection, ED/ES and the area-length EF estimate (no model, no torch)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from echoseg.data.synthetic import make_video
from echoseg.runtime.cardiac import (analyse, area_length_volume_px3, mask_area_px, mask_length_px,
                                     min_beat_frames, smooth)

EDGE = 5  # extremes this close to either end cannot be placed reliably (the curve is cut there)


def _curves(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return (np.array([mask_area_px(m) for m in masks], float), np.array([mask_length_px(m) for m in masks]))


def _within(found: list[int], truth: list[int], n: int, tol: int = 2) -> None:
    """Every true extreme away from the ends is found within tol, and nothing spurious is found."""
    for t in truth:
        if EDGE <= t < n - EDGE:
            assert any(abs(t - f) <= tol for f in found), f"true frame {t} not found in {found}"
    for f in found:
        if EDGE <= f < n - EDGE:
            assert any(abs(t - f) <= tol for t in truth), f"spurious frame {f}; truth {truth}"


def test_area_and_length_of_rectangles():
    m = np.zeros((100, 100), bool)
    m[20:70, 40:60] = True  # 50 tall, 20 wide
    assert mask_area_px(m) == 1000
    assert mask_length_px(m) == pytest.approx(50.0)
    assert mask_length_px(m.T) == pytest.approx(50.0)
    assert mask_length_px(np.zeros((10, 10), bool)) == 0.0


def test_length_of_a_rotated_bar_is_its_long_side():
    import cv2

    m = np.zeros((200, 200), np.uint8)
    box = cv2.boxPoints(((100.0, 100.0), (80.0, 20.0), 30.0))
    cv2.fillPoly(m, [np.round(box).astype(np.int32)], 1)
    assert mask_length_px(m.astype(bool)) == pytest.approx(80.0, abs=3.0)  # pixelisation of the ends


def test_area_length_volume_formula():
    assert area_length_volume_px3(100.0, 10.0) == pytest.approx(8 * 100.0 ** 2 / (3 * math.pi * 10.0))
    assert area_length_volume_px3(100.0, 0.0) == 0.0


def test_min_beat_spacing_follows_fps_and_max_heart_rate():
    assert min_beat_frames(50.0, 200.0) == 15
    assert min_beat_frames(25.0, 200.0) == 7
    assert min_beat_frames(5.0, 200.0) == 3  # never below 3 frames


def test_smooth_keeps_a_monotonic_curve_monotonic_at_the_ends():
    s = smooth(np.arange(30, dtype=float) ** 1.5, 3.0)
    assert np.all(np.diff(s) > 0)


@pytest.mark.parametrize("seed", [0, 3, 11, 21])
def test_ed_es_and_ef_from_ground_truth_masks(seed):
    v = make_video(seed, frames=110)
    area, length = _curves(v.masks)
    r = analyse(area, length, v.fps)
    _within(r.ed_frames, v.ed_frames, len(area))
    _within(r.es_frames, v.es_frames, len(area))
    assert r.beats, "a 110-frame video at 50 fps holds at least one full beat"
    for b in r.beats:
        assert b.ed_frame < b.es_frame and b.ed_area_px > b.es_area_px
        assert abs(b.ef_estimate_pct - v.ef) < 10
    assert abs(r.ef_estimate_pct - v.ef) < 10


@pytest.mark.parametrize("seed", [5, 12])
def test_beats_survive_mask_noise(seed):
    v = make_video(seed, frames=110)
    area, length = _curves(v.masks)
    rng = np.random.default_rng(seed)
    noisy_area = area * (1 + 0.02 * rng.standard_normal(area.size))
    noisy_length = length * (1 + 0.02 * rng.standard_normal(area.size))
    r = analyse(noisy_area, noisy_length, v.fps)
    _within(r.ed_frames, v.ed_frames, len(area))
    _within(r.es_frames, v.es_frames, len(area))
    assert abs(r.ef_estimate_pct - v.ef) < 10


def test_a_short_spike_is_not_a_beat():
    t = np.arange(120)
    area = 1000 + 300 * np.cos(2 * np.pi * t / 40)  # ED at 0, 40, 80; ES at 20, 60, 100
    area[50] += 400  # one bad frame
    r = analyse(area, np.full(120, 40.0), fps=50.0)
    assert r.ed_frames == [40, 80]
    assert r.es_frames == [20, 60, 100]
    assert [b.ed_frame for b in r.beats] == [40, 80]


def test_flat_or_empty_curve_has_no_beats():
    flat = analyse(np.full(60, 500.0), np.full(60, 30.0), fps=50.0)
    empty = analyse(np.zeros(60), np.zeros(60), fps=50.0)
    for r in (flat, empty):
        assert r.beats == [] and r.ed_frames == [] and r.ef_estimate_pct is None


def test_frame_rate_sets_the_spacing():
    # Two real beats 12 frames apart are kept at 50 fps (250 bpm would be implausible at 50 fps,
    # but at 10 fps 12 frames is 50 bpm): at fps=10, spacing is 3 frames and both EDs stay.
    t = np.arange(60)
    area = 1000 + 300 * np.cos(2 * np.pi * t / 12)
    assert len(analyse(area, np.full(60, 40.0), fps=10.0).ed_frames) == 4
    assert len(analyse(area, np.full(60, 40.0), fps=50.0).ed_frames) < 4
