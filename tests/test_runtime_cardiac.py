"""LV area/length, disc and area-length volumes, beats, ED/ES, EF per beat, flags (no model, no torch)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from echoseg.data.synthetic import make_video
from echoseg.runtime.cardiac import (FrameCurves, analyse, area_length_volume_px3, ef_from_masks, mask_area_px,
                                     mask_length_px, measure_mask, min_beat_frames, readout, smooth)

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


# --- method of discs -----------------------------------------------------------------------------

def _ellipse(a: float, b: float, angle_deg: float, size: int = 200) -> np.ndarray:
    """Pixels whose centres lie inside an ellipse of semi-axes a (long) and b, rotated by angle_deg."""
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    x, y = xx - size / 2 - 0.3, yy - size / 2 - 0.7
    c, s = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    return ((c * x + s * y) / a) ** 2 + ((-s * x + c * y) / b) ** 2 <= 1


def _bar(length: float, radius: float, angle_deg: float, size: int = 200) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    x, y = xx - size / 2 - 0.3, yy - size / 2 - 0.7
    c, s = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    return (np.abs(c * x + s * y) < length / 2) & (np.abs(-s * x + c * y) < radius)


@pytest.mark.parametrize("a,b", [(40, 15), (30, 25), (50, 20), (25, 10)])
@pytest.mark.parametrize("angle", [0, 17, 45, 70, 90])
def test_method_of_discs_matches_the_ellipsoid_within_2_percent(a, b, angle):
    from echoseg.runtime.cardiac import disc_volume_px3

    truth = 4 / 3 * math.pi * a * b * b  # the ellipsoid of revolution about the long axis
    assert disc_volume_px3(_ellipse(a, b, angle)) == pytest.approx(truth, rel=0.02)


@pytest.mark.parametrize("angle", [0, 20, 45, 90])
def test_method_of_discs_matches_the_cylinder_within_2_percent_where_area_length_does_not(angle):
    from echoseg.runtime.cardiac import disc_volume_px3

    m = _bar(60, 12, angle)
    truth = math.pi * 12 ** 2 * 60
    assert disc_volume_px3(m) == pytest.approx(truth, rel=0.02)
    # area-length assumes an ellipsoid: 32/(3 pi^2) = 1.08 of a cylinder's volume
    assert area_length_volume_px3(mask_area_px(m), mask_length_px(m)) / truth > 1.05


def test_measure_mask_gives_area_length_disc_volume_and_centre():
    from echoseg.runtime.cardiac import disc_volume_px3, measure_mask

    m = _ellipse(30, 12, 30)
    fm = measure_mask(m)
    assert fm.area_px == mask_area_px(m) and fm.length_px == pytest.approx(mask_length_px(m))
    assert fm.volume_discs_px3 == pytest.approx(disc_volume_px3(m))
    assert (fm.centre_x, fm.centre_y) == pytest.approx((100.3, 100.7), abs=0.2)
    empty = measure_mask(np.zeros((20, 20), bool))
    assert empty.area_px == 0 and empty.volume_discs_px3 == 0 and math.isnan(empty.centre_x)


# --- beats -----------------------------------------------------------------------------------------

def _beat_curve(rr: list[int], ef: list[float], edv: list[float], lead: int = 8) -> tuple[np.ndarray, list, list]:
    """A volume curve: per beat a fast ejection (35% of the RR) from EDV to ESV, then slower filling.

    Starts ``lead`` frames before the first ED, late in filling; returns curve, ED frames, ES frames."""
    vals, eds, ess = [edv[0] * np.linspace(0.95, 1.0, lead, endpoint=False)], [], []
    t0 = lead
    for i, (n, e, v) in enumerate(zip(rr, ef, edv)):
        esv = v * (1 - e / 100)
        nxt = edv[i + 1] if i + 1 < len(edv) else v
        k = int(round(0.35 * n))
        eject = esv + (v - esv) * 0.5 * (1 + np.cos(np.pi * np.arange(k) / k))
        fill = esv + (nxt - esv) * 0.5 * (1 - np.cos(np.pi * np.arange(n - k) / (n - k)))
        vals += [eject, fill]
        eds.append(t0)
        ess.append(t0 + k)
        t0 += n
    return np.concatenate(vals), eds, ess


def test_beats_found_with_irregular_rr_and_their_own_ef_each():
    from echoseg.runtime.beats import find_beats

    rr = [38, 62, 30, 55, 44, 70]  # 79, 48, 100, 55, 68, 43 bpm at 50 fps: atrial fibrillation-like
    efs = [55.0, 62.0, 40.0, 58.0, 50.0, 64.0]
    edv = [30000.0, 36000.0, 26000.0, 34000.0, 31000.0, 37000.0]
    v, eds, ess = _beat_curve(rr, efs, edv)
    found = find_beats(v, 50.0)
    assert found.how == "ed-es" and len(found.pairs) == len(rr)
    for (e, t), e0, t0 in zip(found.pairs, eds, ess):
        assert abs(e - e0) <= 2 and abs(t - t0) <= 2
    r = analyse(FrameCurves(v, np.full(v.size, 60.0), v, np.full((v.size, 2), 50.0)), fps=50.0)
    assert [b.ef_estimate_pct for b in r.beats] == pytest.approx(efs, abs=2.0)
    assert r.ef_estimate_pct == pytest.approx(float(np.median(efs)), abs=1.5)
    assert r.ef_sd_pct == pytest.approx(float(np.std(efs, ddof=1)), abs=1.0)
    assert "beats_disagree" in r.flags  # 40 against 64


def _curves_of(v: np.ndarray) -> "FrameCurves":
    return FrameCurves(v, np.full(v.size, 60.0), v, np.full((v.size, 2), 50.0))


def test_a_one_beat_clip_gets_an_ef_and_a_flag():
    v, eds, ess = _beat_curve([40], [60.0], [30000.0], lead=6)
    v = v[:44]  # ED, ES, filling, cut before the next beat: one beat
    r = analyse(_curves_of(v), fps=50.0)
    assert len(r.beats) == 1 and r.ef_estimate_pct == pytest.approx(60.0, abs=2.0)
    assert r.flags == ["one_beat"] and r.ef_sd_pct is None
    out = readout(r, 50.0)
    assert out["ef_flags"] == ["one_beat"] and out["ef_estimate_pct"]["beats"] == 1


def test_a_clip_cut_at_its_extremes_still_gets_an_ef_flagged_at_the_edge():
    # 20 fps, 14 frames: starts at ED, reaches ES at frame 10 and barely turns back: the old
    # read-out found no beat (extremes on the clip's ends do not count)
    t = np.arange(14)
    v = 20000 - 12000 * 0.5 * (1 - np.cos(np.pi * np.minimum(t, 10) / 10)) + 150 * np.maximum(t - 10, 0)
    r = analyse(_curves_of(v), fps=20.0)
    assert len(r.beats) == 1 and r.beats[0].ed_frame == 0
    assert r.ef_estimate_pct == pytest.approx(60.0, abs=3.0)
    assert set(r.flags) == {"one_beat", "clip_edge"}


def test_a_45_frame_20fps_clip_gives_beats():
    t = np.arange(45) / 20.0
    v = 25000 + 8000 * np.cos(2 * np.pi * t / 0.85 + 1.0)  # 70 bpm, starting mid-cycle
    r = analyse(_curves_of(v), fps=20.0)
    assert len(r.beats) >= 2
    assert r.ef_estimate_pct == pytest.approx(100 * 16000 / 33000, abs=3.0)


def test_outlier_frames_are_repaired_and_counted():
    v, eds, ess = _beat_curve([45, 50, 45], [60.0, 60.0, 60.0], [30000.0] * 3)
    clean = analyse(_curves_of(v), fps=50.0)
    noisy = v.copy()
    for i in (ess[0], eds[1] + 5, ess[2]):  # a mask that collapses for one frame, twice at ES
        noisy[i] *= 0.3
    r = analyse(_curves_of(noisy), fps=50.0)
    assert r.outlier_frames == sorted([ess[0], eds[1] + 5, ess[2]])
    assert r.ef_estimate_pct == pytest.approx(clean.ef_estimate_pct, abs=1.0)
    assert clean.outlier_frames == []  # a real ED/ES is not an outlier


def test_a_mask_that_jumps_elsewhere_is_an_outlier_even_at_the_right_size():
    v, eds, ess = _beat_curve([45, 50], [55.0, 55.0], [30000.0, 30000.0])
    centre = np.full((v.size, 2), 50.0)
    centre[eds[1] + 10] = (85.0, 20.0)  # e.g. the left atrium for one frame
    r = analyse(FrameCurves(v, np.full(v.size, 60.0), v, centre), fps=50.0)
    assert r.outlier_frames == [eds[1] + 10]


def test_readout_names_units_mL_with_a_spacing_and_pixels_without():
    v, _, _ = _beat_curve([45, 50], [55.0, 55.0], [30000.0, 30000.0])
    r = analyse(_curves_of(v), fps=50.0)
    px = readout(r, 50.0)
    assert px["volume_unit"].startswith("px^3") and "edv_ml" not in px and px["edv_px3"] == pytest.approx(30000, rel=0.02)
    ml = readout(r, 50.0, (0.05, 0.05))
    assert ml["volume_unit"] == "mL" and ml["edv_ml"] == pytest.approx(px["edv_px3"] * 0.05 ** 3)
    assert ml["beats"][0]["esv_ml"] == pytest.approx(ml["beats"][0]["esv_px3"] * 0.05 ** 3)
    assert ml["ef_estimate_pct"]["value"] == px["ef_estimate_pct"]["value"]
    with pytest.raises(ValueError, match="unknown volume method"):
        analyse(_curves_of(v), fps=50.0, method="biplane")


def test_ef_from_masks_cleans_measures_and_reads_out_like_echo_run():
    v = make_video(4, frames=110)
    masks = v.masks.astype(np.uint8)
    masks[:, 2:5, 2:5] = 1  # a stray blob the clean-up removes
    out = ef_from_masks(masks, v.fps)
    curves = FrameCurves.from_measures([measure_mask(m) for m in v.masks])
    want = readout(analyse(curves, fps=v.fps), v.fps)
    assert out["ef_estimate_pct"]["value"] == pytest.approx(want["ef_estimate_pct"]["value"])
    assert out["ed_frames"] == want["ed_frames"] and out["frames"] == 110
    assert abs(out["ef_estimate_pct"]["value"] - v.ef) < 10
    al = ef_from_masks(masks, v.fps, method="area-length")
    assert al["ef_estimate_pct"]["volume_method"] == "area-length"


def test_summary_csv_carries_the_median_ef_and_flags_and_replaces_an_older_echo_run_file(tmp_path):
    from echoseg.runtime.outputs import SUMMARY_CSV_FIELDS, write_summary_csv

    path = tmp_path / "summary.csv"
    path.write_text(",".join(SUMMARY_CSV_FIELDS[:12]) + "\n")  # what echo-run wrote before these columns
    write_summary_csv(path, [{"video": "a.avi", "status": "ok", "ef_estimate_pct": 55.25, "ef_estimate_mean_pct": 54.0,
                              "ef_beat_sd_pct": 3.5, "ef_flags": "one_beat"}])
    import csv

    with open(path, newline="") as fh:
        row = next(csv.DictReader(fh))
    assert row["ef_estimate_pct"] == "55.25" and row["ef_beat_sd_pct"] == "3.5" and row["ef_flags"] == "one_beat"


def test_echo_run_summary_equals_ef_from_masks_on_the_same_raw_masks(tmp_path):
    """ef_from_masks is echo-run's read-out: same clean-up, measures, beats and numbers."""
    from test_runtime_stream import OracleSession

    from echoseg.data.video import write_video
    from echoseg.runtime.api import run_videos

    v = make_video(9, frames=120)
    raw = v.masks.copy()
    raw[:, 3:6, 100:104] = True  # a stray blob in every raw mask
    raw[60] = np.roll(raw[60], 25, axis=1)  # one frame where the mask jumped sideways
    video = write_video(tmp_path / "clip.avi", v.frames, 50)
    (r,) = run_videos([video], out=tmp_path / "out", video=False, session=OracleSession(raw))
    assert r.ok, r.error
    want = ef_from_masks(raw.astype(np.uint8), 50.0)
    s = r.summary
    for key in ("ed_frames", "es_frames", "ef_flags", "outlier_frames", "volume_unit"):
        assert s[key] == want[key], key
    assert s["ef_estimate_pct"]["per_beat"] == pytest.approx(want["ef_estimate_pct"]["per_beat"])
    assert s["ef_estimate_pct"]["value"] == pytest.approx(want["ef_estimate_pct"]["value"])
    assert 60 in s["outlier_frames"]["frames"]
