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
    monkeypatch.setattr(ev, "scorer_for", lambda target, device="auto", backend="auto": fake)
    raw = ev.evaluate("fake", root, "test", tmp_path / "raw")
    clean = ev.evaluate("fake", root, "test", tmp_path / "clean", clean=True)
    assert raw["dice"] < 0.99 and clean["dice"] == pytest.approx(1.0)
    assert clean["clean_masks"] is True and raw["clean_masks"] is False
