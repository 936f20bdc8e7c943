"""echo-synth's ``echo`` style (scanner-like rendering) and its frame-folder layout."""

from __future__ import annotations

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from echoseg.data.echonet import polygon_mask, tracing_polygon  # noqa: E402
from echoseg.data.folds import video_of  # noqa: E402
from echoseg.data.synthetic import make_video, write_frames  # noqa: E402


def test_echo_style_is_deterministic_per_seed_and_differs_between_seeds():
    a, b, c = (make_video(s, frames=10, style="echo") for s in (4, 4, 5))
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.masks, b.masks)
    assert not np.array_equal(a.frames, c.frames)


def test_echo_style_hits_the_requested_ef_and_its_tracings_match_its_masks():
    v = make_video(8, frames=60, style="echo", ef=42.0)
    assert abs(v.ef - 42.0) < 0.5
    assert v.ed_frames and v.es_frames
    for frame, lines in v.tracings.items():
        traced = polygon_mask(tracing_polygon([tuple(r) for r in lines]), 112, 112)
        exact = v.masks[frame]
        dice = 2 * (traced & exact).sum() / (traced.sum() + exact.sum())
        assert dice > 0.95, (frame, dice)
    # the cavity is larger at ED than at ES
    assert v.masks[v.ed_frames[0]].sum() > v.masks[v.es_frames[0]].sum()


def test_echo_style_draws_a_dark_cavity_inside_brighter_walls_with_speckle():
    darker, textured = 0, 0
    for seed in range(12):
        v = make_video(seed, frames=4, style="echo")
        img, lv = v.frames[0, :, :, 0].astype(float), v.masks[0]
        assert 150 < lv.sum() < 5000  # a plausible LV on a 112x112 frame
        ring = (cv2.dilate(lv.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0) & ~lv
        darker += img[lv].mean() < img[ring].mean()
        # speckle: neighbouring pixels in the walls differ (the classic-style blur would not do this)
        textured += np.abs(np.diff(img, axis=1))[ring[:, 1:]].mean() > 3
    assert darker >= 11 and textured >= 10


def test_echo_style_varies_pose_size_and_fan():
    centres, areas, fans = [], [], []
    for seed in range(16):
        v = make_video(seed, frames=2, style="echo")
        ys, xs = np.nonzero(v.masks[0])
        centres.append((xs.mean(), ys.mean()))
        areas.append(v.masks[0].sum())
        fans.append((v.frames[0, :, :, 0] > 0).sum())
    assert np.ptp(np.array(centres)[:, 0]) > 8 and np.ptp(np.array(centres)[:, 1]) > 8
    assert max(areas) > 1.8 * min(areas)
    assert max(fans) > 1.15 * min(fans)


def test_unknown_style_is_refused():
    with pytest.raises(ValueError, match="unknown synthetic style"):
        make_video(0, frames=4, style="cartoon")


def test_write_frames_splits_by_video_and_is_read_by_the_frame_loader(tmp_path):
    from echoseg.data.frames import load_frames

    root = write_frames(tmp_path / "syn", videos=8, frames=12, seed=2, every=4, style="echo")
    assert not list(root.glob(".partial-*"))
    seen = {}
    for split in ("train", "val", "test"):
        names = sorted(p.stem for p in (root / split / "images").iterdir())
        assert names == sorted(p.stem for p in (root / split / "masks").iterdir())
        for n in names:
            assert seen.setdefault(video_of(n), split) == split  # one video, one split
    assert len(seen) == 8
    fs = load_frames(root, "train")
    assert len(fs.images) == 3 * 6  # 70% of 8 videos -> 6, every 4th of 12 frames -> 3 each
    assert fs.masks.any(axis=(1, 2)).all()


def test_write_frames_refuses_a_folder_that_already_holds_a_dataset(tmp_path):
    write_frames(tmp_path / "syn", videos=3, frames=8, seed=1, every=4)
    before = sorted(p.name for p in (tmp_path / "syn" / "train" / "images").iterdir())
    with pytest.raises(FileExistsError, match="already holds"):
        write_frames(tmp_path / "syn", videos=5, frames=8, seed=9, every=2)
    assert sorted(p.name for p in (tmp_path / "syn" / "train" / "images").iterdir()) == before


def test_echo_synth_cli_styles_and_layouts(tmp_path):
    from typer.testing import CliRunner

    from echoseg.data.cli import app

    runner = CliRunner()
    r = runner.invoke(app, [str(tmp_path / "a"), "--videos", "3", "--frames", "8", "--style", "echo"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "a" / "FileList.csv").is_file() and len(list((tmp_path / "a" / "Videos").iterdir())) == 3
    r = runner.invoke(app, [str(tmp_path / "b"), "--videos", "3", "--frames", "8", "--layout", "frames"])
    assert r.exit_code == 0, r.output
    assert any((tmp_path / "b" / "train" / "masks").iterdir())
    r = runner.invoke(app, [str(tmp_path / "b"), "--videos", "3", "--frames", "8", "--layout", "frames"])
    assert r.exit_code == 2 and "already holds" in r.output
    r = runner.invoke(app, [str(tmp_path / "c"), "--style", "cartoon"])
    assert r.exit_code == 2 and "unknown style" in r.output


def test_echo_eval_clean_masks_scores_what_echo_run_measures(tmp_path, monkeypatch):
    """--clean-masks drops the stray blob echo-run's clean-up drops (a second chamber taken for
    the LV): a prediction that is the truth plus a far blob scores 1.0 cleaned, less raw."""
    from echoseg.data.frames import load_frames
    from echoseg.train import eval as ev

    root = write_frames(tmp_path / "syn", videos=7, frames=8, seed=3, every=4, style="echo")
    truth = load_frames(root, "test").masks
    assert len(truth) and not truth[:, 100:108, 2:10].any()

    def predict(images, g):
        out = truth.copy()
        out[:, 100:108, 2:10] = True  # a blob far from any LV
        return out

    fake = ev.Scorer("unet", 8, "fake", (112, 112), (1.0,), predict, lambda g: 0.0, tmp_path)
    monkeypatch.setattr(ev, "scorer_for", lambda target, device="auto", backend="auto", tta="none": fake)
    raw = ev.evaluate("fake", root, "test", tmp_path / "raw")
    clean = ev.evaluate("fake", root, "test", tmp_path / "clean", clean=True)
    assert raw["dice"] < 0.99 and clean["dice"] == pytest.approx(1.0)
    assert clean["clean_masks"] is True and raw["clean_masks"] is False


# --- the echo2 style (generator version 2) ---------------------------------------------------------


def test_echo2_is_deterministic_per_seed_differs_from_echo_and_keeps_shapes():
    a, b, c = (make_video(s, frames=10, style="echo2") for s in (4, 4, 5))
    assert a.frames.shape == (10, 112, 112, 3) and a.frames.dtype == np.uint8
    assert a.masks.shape == (10, 112, 112) and a.masks.dtype == bool
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.masks, b.masks)
    assert not np.array_equal(a.frames, c.frames)
    assert not np.array_equal(a.frames, make_video(4, frames=10, style="echo").frames)


def test_echo_style_still_draws_what_version_1_drew():
    """The shipped model's recipe (--style echo) must mean what it meant: version 2's extra scene
    keys never reach it, and its ranges are the first ones."""
    from echoseg.data.synth_echo import random_echo_heart

    h1, s1 = random_echo_heart(np.random.default_rng([3, 0xEC40]), None, 1)
    h2, s2 = random_echo_heart(np.random.default_rng([3, 0xEC40]), None, 2)
    assert "haze_reach" not in s1 and "tilt" not in s1 and "la_pump" not in s1
    assert {"haze_reach", "tilt", "la_pump", "rv_db", "chords"} <= set(s2)
    for seed in range(40):
        h, s = random_echo_heart(np.random.default_rng([seed, 0xEC40]), None, 1)
        assert 34 <= np.degrees(h.sector_half_angle) <= 48 and -24 <= s["septum_db"] <= -6
    with pytest.raises(ValueError, match="unknown echo generator version"):
        random_echo_heart(np.random.default_rng(0), None, 7)


def test_echo2_masks_lie_inside_the_fan_at_every_phase():
    from echoseg.data.synth_echo import _Imager, random_echo_heart
    from echoseg.data.synthetic import cavity_outline

    for seed in range(60):
        rng = np.random.default_rng([seed, 0xEC40])
        heart, scene = random_echo_heart(rng, None, 2)
        fan = _Imager(heart, scene, rng).fan
        for c in (0.0, 0.5, 1.0):
            m = np.zeros((112, 112), np.uint8)
            cv2.fillPoly(m, [np.round(cavity_outline(heart, c) * 16).astype(np.int32)], 1, cv2.LINE_8, 4)
            assert m.sum() > 50 and not (m.astype(bool) & ~fan).any(), (seed, c)
    v = make_video(11, frames=6, style="echo2")
    assert (v.frames[:, :, :, 0][v.masks] >= 0).all() and v.masks.any(axis=(1, 2)).all()


def test_echo2_widens_the_ranges_real_scanners_show():
    from echoseg.data.synth_echo import random_echo_heart

    draws = [random_echo_heart(np.random.default_rng([s, 0xEC40]), None, 2) for s in range(200)]
    halves = np.degrees([h.sector_half_angle for h, _ in draws])
    assert halves.max() > 50 and halves.min() < 35
    assert sum(sc["tilt"] != 0 for _, sc in draws) > 60  # steered fans
    assert max(h.a_ed for h, _ in draws) > 1.6 * min(h.a_ed for h, _ in draws)  # small to large LVs
    # a second chamber darker than the LV blood is common, and black basal blood under apical haze too
    assert sum(sc["rv_db"] < sc["blood_db"] for _, sc in draws) > 80
    assert sum(sc["lv_haze_db"] is not None and sc["haze_reach"] < 0.8 for _, sc in draws) > 30


def test_echo2_haze_leaves_the_basal_blood_dark_and_inside_the_mask():
    """A hazy apex over black basal blood: in the echogenicity map the basal cavity is darker than
    the apical one, and the mask holds both (the first model drew C-shaped masks that left such
    blood out)."""
    from echoseg.data import synth_echo

    rng = np.random.default_rng([5, 0xEC40])
    heart, scene = synth_echo.random_echo_heart(rng, None, 2)
    scene.update(lv_haze_db=-30.0, haze_reach=0.5, haze_var=0.0, blood_db=-60.0, apical_clutter_db=None)
    n_c = 112 + 2 * synth_echo.MARGIN
    flat = np.full((n_c, n_c), -35.0, np.float32)
    blobs = {"papillary": [], "trabeculae": [], "chords": [], "haze": np.zeros((n_c, n_c), np.float32)}
    db, mask = synth_echo._anatomy(heart, scene, 0.0, 0.0, flat, np.zeros_like(flat), blobs)
    lv = db[synth_echo.MARGIN:-synth_echo.MARGIN, synth_echo.MARGIN:-synth_echo.MARGIN]
    d, _ = heart.frame_axes()
    ys, xs = np.nonzero(cv2.erode(mask.astype(np.uint8), np.ones((5, 5), np.uint8)))
    u = (xs - heart.apex[0]) * d[0] + (ys - heart.apex[1]) * d[1]
    apical, basal = lv[ys, xs][u < np.quantile(u, 0.2)], lv[ys, xs][u > np.quantile(u, 0.8)]
    assert apical.mean() > -40 and np.median(basal) <= -59  # hazy apex, echo-free base
    scene["lv_haze_db"] = None  # no haze: the whole cavity is black
    db, mask2 = synth_echo._anatomy(heart, scene, 0.0, 0.0, flat, np.zeros_like(flat), blobs)
    assert np.array_equal(mask, mask2)
    lv = db[synth_echo.MARGIN:-synth_echo.MARGIN, synth_echo.MARGIN:-synth_echo.MARGIN]
    assert np.median(lv[ys, xs]) <= -59


def test_echo2_la_grows_in_systole():
    from echoseg.data import synth_echo

    rng = np.random.default_rng([21, 0xEC40])
    heart, scene = synth_echo.random_echo_heart(rng, None, 2)
    scene.update(la_pump=0.3, la_bag=False, la_db=-80.0, lv_haze_db=None)
    n_c = 112 + 2 * synth_echo.MARGIN
    flat = np.full((n_c, n_c), -30.0, np.float32)
    blobs = {"papillary": [], "trabeculae": [], "chords": [], "haze": np.zeros((n_c, n_c), np.float32)}
    ed, _ = synth_echo._anatomy(heart, scene, 0.0, 0.0, flat, np.zeros_like(flat), blobs)
    es, _ = synth_echo._anatomy(heart, scene, 1.0, np.pi, flat, np.zeros_like(flat), blobs)
    assert (es <= -79).sum() > 1.15 * (ed <= -79).sum()


def test_write_frames_is_the_same_with_several_workers(tmp_path):
    one = write_frames(tmp_path / "one", videos=5, frames=8, seed=3, every=4, style="echo2")
    two = write_frames(tmp_path / "two", videos=5, frames=8, seed=3, every=4, style="echo2", workers=2)
    files = sorted(p.relative_to(one) for p in one.rglob("*.png"))
    assert files == sorted(p.relative_to(two) for p in two.rglob("*.png")) and len(files) == 2 * 10
    for f in files:
        assert (one / f).read_bytes() == (two / f).read_bytes()
    with pytest.raises(ValueError, match="--workers"):
        write_frames(tmp_path / "three", videos=2, frames=8, workers=0)


# --- the echo3 style (generator version 3: version 1 with atria that can dwarf the LV) --------------


def test_echo3_is_version_1_with_larger_atria_in_most_scenes():
    from echoseg.data.synth_echo import random_echo_heart

    scaled = 0
    for seed in range(200):
        h1, s1 = random_echo_heart(np.random.default_rng([seed, 0xEC40]), None, 1)
        h3, s3 = random_echo_heart(np.random.default_rng([seed, 0xEC40]), None, 3)
        assert np.array_equal(h1.apex, h3.apex) and (h1.a_ed, h1.b_ed, h1.period) == (h3.a_ed, h3.b_ed, h3.period)
        assert set(s1) == set(s3)
        assert all(repr(s1[k]) == repr(s3[k]) for k in s1 if k not in ("la", "ra"))  # exact (repr round-trips)
        k_la, k_ra = s3["la"][0] / s1["la"][0], s3["ra"][0] / s1["ra"][0]
        assert s3["la"][1] / s1["la"][1] == pytest.approx(k_la) and s3["ra"][1] / s1["ra"][1] == pytest.approx(k_ra)
        if k_la == 1.0 and k_ra == 1.0:
            continue
        assert 1.2 <= k_la <= 2.0 and 1.2 <= k_ra <= 2.0
        scaled += 1
    assert 90 <= scaled <= 150  # about 60% of the scenes


def test_echo3_draws_a_right_atrium_larger_than_the_lv_where_version_1_never_does():
    """The failure it aims at: a dark chamber bigger than the LV below the septum, taken for the LV."""
    from echoseg.data.synth_echo import random_echo_heart
    from echoseg.data.synthetic import cavity_outline

    def ratio(version: int, seed: int) -> float:
        heart, scene = random_echo_heart(np.random.default_rng([seed, 0xEC40]), None, version)
        m = np.zeros((112, 112), np.uint8)
        cv2.fillPoly(m, [np.round(cavity_outline(heart, 1.0) * 16).astype(np.int32)], 1, cv2.LINE_8, 4)
        ra = np.pi * scene["ra"][0] * heart.a_ed * scene["ra"][1] * heart.b_ed
        return ra / m.sum()  # the RA ellipse against the LV at end-systole

    v1, v3 = ([ratio(v, s) for s in range(150)] for v in (1, 3))
    assert max(v1) < 1.2 and sum(r > 1.2 for r in v3) > 30
    a, b = (make_video(7, frames=8, style="echo3") for _ in range(2))
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.masks, b.masks)
    assert not np.array_equal(a.frames, make_video(7, frames=8, style="echo").frames)


# --- the echo4 style (generator version 4: version 3 with the haze over the apical LV only) --------


def test_echo4_is_echo3_but_for_the_haze_of_a_hazy_lv():
    """Same heart, scene, speckle and masks as echo3 at the same seed; only hazy LVs differ."""
    from echoseg.data.synth_echo import random_echo_heart

    hazy = clear = 0
    for seed in range(12):
        a, b = make_video(seed, frames=6, style="echo3"), make_video(seed, frames=6, style="echo4")
        assert np.array_equal(a.masks, b.masks) and (a.ef, a.ed_frames, a.es_frames) == (b.ef, b.ed_frames, b.es_frames)
        _, scene = random_echo_heart(np.random.default_rng([seed, 0xEC40]), None, 3)
        if scene["lv_haze_db"] is None:
            assert np.array_equal(a.frames, b.frames)
            clear += 1
        elif scene["lv_haze_db"] > scene["blood_db"] + 1:  # haze brighter than the blood: it shows
            assert not np.array_equal(a.frames, b.frames)
            hazy += 1
    assert hazy >= 3 and clear >= 3


def test_echo4_leaves_the_basal_lv_blood_darker_than_the_apical_haze_where_echo3_does_not():
    """The failure it aims at: a model that ends the LV where its haze ends (mid-cavity)."""
    from echoseg.data.synth_echo import _anatomy, _scene_v4, random_echo_heart

    def base_minus_apex(version: int, seed: int) -> float:
        rng = np.random.default_rng([seed, 0xEC40])
        heart, scene = random_echo_heart(rng, None, 3)
        scene["lv_haze_db"] = -30.0  # a hazy LV in every scene
        blobs = {"papillary": [], "trabeculae": [], "haze": np.zeros((176, 176), np.float32)}
        if version == 4:
            scene.update(_scene_v4(np.random.default_rng([seed, 0xEC44])))
        tissue = np.full((176, 176), -40.0, np.float32)
        db, mask = _anatomy(heart, scene, 0.0, 0.0, tissue, np.zeros_like(tissue), blobs)
        lv = db[32:-32, 32:-32][mask]  # the canvas has a 32 px margin round the image
        rows = np.nonzero(mask)[0]  # the LV stands upright in these poses: apex at the top
        top, length = rows.min(), rows.max() - rows.min()
        apex, base = lv[rows < top + 0.3 * length], lv[rows > top + 0.75 * length]
        return float(np.median(base) - np.median(apex))

    v3 = [base_minus_apex(3, s) for s in range(30)]
    v4 = [base_minus_apex(4, s) for s in range(30)]
    assert max(abs(d) for d in v3) < 1.0  # echo3: one haze level from apex to valve
    assert sum(d < -10 for d in v4) >= 10  # echo4: black basal blood below the haze in many scenes
    assert all(d <= 1.0 for d in v4)  # never hazier at the base than at the apex


# --- the echo5 style (generator version 5: version 3 with a grey inner wall towards ES) ------------


def test_echo5_is_echo3_but_for_a_grey_band_outside_the_mask_that_widens_towards_es():
    """Same heart, scene, speckle and masks as echo3 at the same seed; the rendered frames differ
    only in videos that draw the band, never at ED (no contraction, no band), and more at ES."""
    from echoseg.data.synth_echo import _scene_v5

    banded = plain = 0
    for seed in range(10):
        a, b = make_video(seed, frames=24, style="echo3"), make_video(seed, frames=24, style="echo5")
        assert np.array_equal(a.masks, b.masks) and (a.ef, a.ed_frames, a.es_frames) == (b.ef, b.ed_frames, b.es_frames)
        if not _scene_v5(np.random.default_rng([seed, 0xEC45])):
            assert np.array_equal(a.frames, b.frames)
            plain += 1
            continue
        banded += 1
        area = a.masks.sum((1, 2))
        ed, es = int(np.argmax(area)), int(np.argmin(area))
        diff = np.abs(a.frames.astype(int) - b.frames.astype(int))[..., 0]
        assert diff[ed].mean() < 0.5 * diff[es].mean()  # the band is a systolic one
        assert diff[es].mean() > 0
    assert banded >= 4 and plain >= 1


def test_echo5_draws_the_band_in_the_tissue_next_to_the_mask_greyer_than_blood_and_darker_than_wall():
    """The failure it aims at: ES masks drawn out into a grey inner wall the tracers leave out."""
    from echoseg.data.synth_echo import _anatomy, random_echo_heart

    import cv2

    for seed in range(6):
        heart, scene = random_echo_heart(np.random.default_rng([seed, 0xEC40]), None, 3)
        scene.update(es_band=3.0, es_band_level=0.5)
        scene["lv_haze_db"] = None
        blobs = {"papillary": [], "trabeculae": [], "band": np.zeros((176, 176), np.float32)}
        tissue = np.full((176, 176), -40.0, np.float32)
        plain = {k: v for k, v in scene.items() if not k.startswith("es_band")}
        db5, mask = _anatomy(heart, scene, 1.0, np.pi, tissue, np.zeros_like(tissue), blobs)
        db3, mask3 = _anatomy(heart, plain, 1.0, np.pi, tissue, np.zeros_like(tissue), blobs)
        assert np.array_equal(mask, mask3)
        img5, img3 = db5[32:-32, 32:-32], db3[32:-32, 32:-32]
        changed = np.abs(img5 - img3) > 0.5
        assert changed.sum() > 0 and not (changed & mask).any()  # never inside the mask
        near = cv2.dilate(mask.astype(np.uint8), np.ones((11, 11), np.uint8)).astype(bool)
        assert not (changed & ~near).any()  # only next to it (band 3.5 px)
        band = img5[changed]
        assert np.all(band >= scene["blood_db"] + 3 - 1e-3)  # greyer than blood ...
        wall = max(scene["septum_db"], scene["myo_db"])
        assert np.median(band) < wall  # ... and darker than the compact wall
