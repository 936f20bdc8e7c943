"""Mask clean-up: largest component, holes filled, before area and length; switchable in the stream and echo-run."""

from __future__ import annotations

import numpy as np

from echoseg.data.synthetic import make_video
from echoseg.data.video import write_video
from echoseg.runtime.cardiac import mask_area_px, mask_length_px
from echoseg.runtime.postprocess import CHAMBER_SHARE, clean_mask, fill_holes, lv_component


def _blob_with_hole_and_stray() -> tuple[np.ndarray, np.ndarray]:
    clean = np.zeros((100, 100), bool)
    clean[20:70, 30:60] = True
    dirty = clean.copy()
    dirty[40:45, 40:45] = False  # a hole inside the cavity
    dirty[85:95, 85:95] = True  # a stray blob far away
    return clean, dirty


def test_clean_mask_drops_the_stray_blob_and_fills_the_hole():
    clean, dirty = _blob_with_hole_and_stray()
    out = clean_mask(dirty)
    np.testing.assert_array_equal(out, clean)
    assert mask_area_px(out) == 1500 and mask_length_px(out) == mask_length_px(clean)
    assert mask_length_px(dirty) > mask_length_px(clean) + 10  # what the stray blob did to the length


def test_edge_cases_keep_their_shape():
    empty = np.zeros((20, 20), bool)
    assert not clean_mask(empty).any()
    full = np.ones((20, 20), bool)
    assert clean_mask(full).all()
    ring = np.zeros((20, 20), bool)
    ring[:, :] = True
    ring[5:15, 5:15] = False  # a hole; the mask touches every border
    assert fill_holes(ring).all()
    touching = np.zeros((20, 20), bool)
    touching[0:10, 0:10] = True  # background touching the border is not a hole
    np.testing.assert_array_equal(fill_holes(touching), touching)
    two = np.zeros((20, 20), bool)
    two[1:4, 1:4] = True
    two[10:18, 10:18] = True
    assert mask_area_px(lv_component(two)) == 64  # a speck up and left of the LV


def _blob(m: np.ndarray, rows: slice, cols: slice) -> np.ndarray:
    m[rows, cols] = True
    return m


def test_the_lv_is_the_upper_right_chamber_not_the_largest():
    """Apical four-chamber, apex up, LV on the right: a larger RV or RA that the model marks too is
    passed over; the LA below the LV is too; a speck (under CHAMBER_SHARE of the largest) never wins."""
    lv = (slice(10, 40), slice(60, 80))  # 600 px, upper right
    rv = (slice(8, 50), slice(20, 50))  # 1260 px, upper left: larger
    ra = (slice(60, 95), slice(15, 50))  # 1225 px, lower left
    la = (slice(60, 100), slice(55, 90))  # 1400 px, lower right: the largest, and further right
    for others in ((rv,), (ra,), (la,), (rv, ra, la)):
        m = _blob(np.zeros((112, 112), bool), *lv)
        for o in others:
            _blob(m, *o)
        np.testing.assert_array_equal(lv_component(m), _blob(np.zeros_like(m), *lv))
        assert mask_area_px(clean_mask(m)) == 600
    speck_share = 0.9 * CHAMBER_SHARE  # up and right of the LV, but too small to be a chamber
    m = _blob(np.zeros((112, 112), bool), *lv)
    side = int((speck_share * 600) ** 0.5)
    _blob(m, slice(2, 2 + side), slice(100, 100 + side))
    np.testing.assert_array_equal(lv_component(m), _blob(np.zeros_like(m), *lv))
    big_enough = _blob(np.zeros((112, 112), bool), *lv)
    _blob(big_enough, slice(2, 17), slice(90, 105))  # 225 px = 0.375 of the LV, further up and right
    assert mask_area_px(lv_component(big_enough)) == 225


def test_stream_measures_cleaned_masks_unless_switched_off(tmp_path):
    from echoseg.runtime.api import run_videos
    from test_runtime_stream import OracleSession

    v = make_video(2, frames=30)
    dirty = v.masks.copy()
    dirty[:, 2:8, 2:8] = True  # a stray blob in the corner of every frame
    avi = write_video(tmp_path / "v.avi", v.frames, v.fps)
    on = run_videos([avi], out=tmp_path / "on", video=False, session=OracleSession(dirty))[0]
    off = run_videos([avi], out=tmp_path / "off", video=False, session=OracleSession(dirty), clean_masks=False)[0]
    area_on = [int(r.split(",")[2]) for r in (tmp_path / "on" / "v" / "frames.csv").read_text().splitlines()[1:]]
    area_off = [int(r.split(",")[2]) for r in (tmp_path / "off" / "v" / "frames.csv").read_text().splitlines()[1:]]
    truth = v.masks.reshape(len(v.masks), -1).sum(1)
    np.testing.assert_array_equal(area_on, truth)
    np.testing.assert_array_equal(np.array(area_off) - truth, 36)
    assert on.summary["clean_masks"] is True and off.summary["clean_masks"] is False


def test_the_inside_of_a_ring_is_not_filled_but_a_small_hole_is():
    from echoseg.runtime.postprocess import clean_mask

    ring = np.zeros((60, 60), bool)
    ring[5:55, 5:55] = True
    ring[8:52, 8:52] = False  # a thin frame around a large empty inside
    assert clean_mask(ring).sum() == ring.sum()
    blob = np.zeros((60, 60), bool)
    blob[10:50, 10:50] = True
    blob[25:30, 25:30] = False  # a papillary muscle
    assert clean_mask(blob).sum() == 40 * 40


def _ref_clean(mask: np.ndarray) -> np.ndarray:
    """The whole-frame clean-up, written plainly: what the bounding-box version must equal."""
    import cv2

    m = mask.astype(bool)
    if not m.any():
        return m
    n, labels, stats, centroids = cv2.connectedComponentsWithStats(m.astype(np.uint8), connectivity=8)
    if n > 2:
        areas = stats[1:, cv2.CC_STAT_AREA]
        best = max((i for i in range(n - 1) if areas[i] >= CHAMBER_SHARE * areas.max()),
                   key=lambda i: (centroids[i + 1, 0] - centroids[i + 1, 1], -i))
        m = labels == 1 + best
    n, labels, stats, _ = cv2.connectedComponentsWithStats((~m).astype(np.uint8), connectivity=4)
    border = set(np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])).tolist())
    fill = [i for i in range(1, n) if i not in border and stats[i, cv2.CC_STAT_AREA] <= 0.5 * m.sum()]
    return m | np.isin(labels, fill)


def _random_masks(seed: int, count: int):
    import cv2

    rng = np.random.default_rng(seed)
    for k in range(count):
        h, w = (int(v) for v in rng.integers(3, 90, 2))
        noise = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), float(rng.uniform(0.5, 4)))
        m = noise > np.quantile(noise, rng.uniform(0.2, 0.97))  # blobs, holes, strays, touching borders
        if k % 9 == 0:
            m[:] = k % 2 == 0  # empty and full frames
        yield rng, m


def test_bounding_box_clean_up_equals_the_whole_frame_one():
    for _, m in _random_masks(0, 600):
        np.testing.assert_array_equal(clean_mask(m), _ref_clean(m))


def test_bounding_box_overlay_equals_the_whole_frame_one():
    import cv2

    from echoseg.runtime.overlay import CONTOUR_BGR, FILL_ALPHA, FILL_BGR, overlay_frame

    for rng, m in _random_masks(1, 300):
        frame = rng.integers(0, 256, m.shape + (3,), dtype=np.uint8)
        right = frame.copy()
        if m.any():
            right[m] = (right[m].astype(np.float32) * (1 - FILL_ALPHA) + np.float32(FILL_BGR) * FILL_ALPHA
                        ).astype(np.uint8)
            contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(right, contours, -1, CONTOUR_BGR, max(1, round(min(m.shape) / 200)), cv2.LINE_AA)
        np.testing.assert_array_equal(overlay_frame(frame, m), np.concatenate([frame, right], axis=1))
