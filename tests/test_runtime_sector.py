"""Sector finding, the square crop and masks back on the input's grid (issue 23), on synthetic screens."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path

import numpy as np
import pytest
from screens import make_screen

from echoseg.config import ArtifactMeta, InputSpec, ModelConfig
from echoseg.data.synthetic import make_video
from echoseg.data.video import VideoReader, is_live, write_video
from echoseg.runtime.api import _stem, run_one, run_videos
from echoseg.runtime.cli import optional_save_masks
from echoseg.runtime.cardiac import FrameCurves, analyse
from echoseg.runtime.discs import FrameMeasure, area_length_volume_px3
from echoseg.runtime.live import BeatWatcher, stop_on_interrupt
from echoseg.runtime.roi import Crop, RoiError, full_crop, given_crop, parse_roi
from echoseg.runtime.sector import find_sector, resolve_crop
from echoseg.backends.session import SessionInfo

META = ArtifactMeta(model=ModelConfig("unet", 8), input_spec=InputSpec())
RED = np.array([0, 0, 255], np.uint8)


class RedOracle:
    """A Session that segments what is painted pure red in its input: it sees only what the crop gives it."""

    def __init__(self) -> None:
        self.info = SessionInfo("red-oracle", "fp32", "cpu", 1, 0, META, "red-oracle")
        spec = META.input_spec
        self.mean, self.std = np.asarray(spec.mean, np.float32), np.asarray(spec.std, np.float32)

    def run(self, x: np.ndarray) -> np.ndarray:
        px = x * self.std[None, :, None, None] + self.mean[None, :, None, None]  # back to 0..255, BGR
        red = (px[:, 2] - px[:, 0]) > 100
        return np.where(red, 8.0, -8.0).astype(np.float32)[:, None]

    def close(self) -> None:
        pass


def _sector_box(clip: np.ndarray, scale: float, at: tuple[int, int]) -> tuple[int, int, int, int]:
    """Where the clip's fan lies on the screen: its pixels that are ever above the black background."""
    ys, xs = np.nonzero(clip.max(axis=(0, 3)) > 10)
    x0, y0 = at
    return (x0 + int(xs.min() * scale), y0 + int(ys.min() * scale),
            int((xs.max() + 1 - xs.min()) * scale), int((ys.max() + 1 - ys.min()) * scale))


def _iou(a, b) -> float:
    ax1, ay1, bx1, by1 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw, ih = max(0, min(ax1, bx1) - max(a[0], b[0])), max(0, min(ay1, by1) - max(a[1], b[1]))
    return iw * ih / (a[2] * a[3] + b[2] * b[3] - iw * ih)


@pytest.fixture(scope="module")
def clip():
    return make_video(11, frames=60)


@pytest.mark.parametrize("size,at,scale,sweep", [((800, 600), (300, 70), 3.0, True), ((800, 600), (250, 90), 3.0, False),
                                                 ((640, 400), (230, 30), 2.0, True), ((1024, 768), (420, 120), 4.0, False)])
def test_the_sector_is_found_on_a_screen_with_text_ticks_and_a_moving_trace(clip, size, at, scale, sweep):
    sc = make_screen(clip.frames, clip.masks, size=size, at=at, scale=scale, sweep=sweep)
    crop = find_sector(sc.frames, *size)
    truth = _sector_box(clip.frames, scale, at)
    box = (crop.x, crop.y, crop.w, crop.h)
    assert crop.method == "sector" and _iou(box, truth) > 0.9, (box, truth)
    ecg_top = size[1] - 40 - 95
    assert crop.y + crop.h < ecg_top and crop.x > 200  # neither the trace nor the text panel


def test_an_echonet_style_clip_keeps_its_whole_frame(clip):
    crop = find_sector(clip.frames, 112, 112)
    assert crop.identity and crop.method == "full" and "covers most" in crop.reason
    frame = clip.frames[0]
    assert crop.apply(frame) is frame


def test_nothing_moving_or_too_few_frames_means_the_whole_frame():
    still = np.repeat(np.random.default_rng(0).integers(0, 255, (1, 90, 120, 3), np.uint8), 10, axis=0)
    c = find_sector(still, 120, 90)
    assert c.method == "full" and "varies" in c.reason and (c.w, c.h) == (120, 90)
    assert "only 2 frame" in find_sector(still[:2], 120, 90).reason


def test_the_crop_pads_without_stretching_and_maps_masks_back_exactly():
    frame = np.zeros((300, 500, 3), np.uint8)
    frame[100:160, 200:260] = 255  # a 60x60 square inside the box 150,80,200,100
    crop = given_crop((150, 80, 200, 100), 500, 300)
    sq = crop.apply(frame)
    assert sq.shape == (200, 200, 3) and crop.pad == (0, 100)  # 200 wide box: 100 rows of black above
    ys, xs = np.nonzero(sq[..., 0])
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (50, 109, 120, 179)  # square stays square
    import cv2

    logits = np.where(cv2.resize(sq[..., 0], (112, 112), interpolation=cv2.INTER_AREA) > 127, 8.0, -8.0)
    mask = crop.mask_to_input(logits.astype(np.float32), 0.0)
    assert mask.shape == (300, 500)
    inter = np.logical_and(mask, frame[..., 0] > 0).sum()
    assert inter / np.logical_or(mask, frame[..., 0] > 0).sum() > 0.93
    assert not mask[:80].any() and not mask[:, :150].any()


def test_roi_values():
    assert parse_roi("auto") == "auto" and parse_roi(" FULL ") == "full"
    assert parse_roi("10, 20,300,200") == (10, 20, 300, 200)
    for bad in ("left", "1,2,3", "0,0,4,4", "-1,0,50,50"):
        with pytest.raises(RoiError, match="--roi"):
            parse_roi(bad)
    with pytest.raises(RoiError, match="outside"):
        given_crop((900, 10, 50, 50), 800, 600)
    c = given_crop((700, 500, 300, 300), 800, 600)  # clipped to the frame
    assert (c.x, c.y, c.w, c.h) == (700, 500, 100, 100)
    full = full_crop(160, 120)
    assert full.side == 160 and full.pad == (0, 40) and not full.identity


@pytest.fixture(scope="module")
def red_screen(tmp_path_factory, clip):
    """The clip with its LV painted red, on an 800x600 screen; written as an AVI."""
    frames = clip.frames.copy()
    frames[clip.masks] = RED
    sc = make_screen(frames, clip.masks, at=(300, 70), scale=3.0)
    path = write_video(tmp_path_factory.mktemp("screen") / "screen.avi", sc.frames, 50.0)
    return path, sc


@pytest.mark.parametrize("fmt", ["npz", "png"])
def test_masks_come_back_on_the_input_grid_inside_the_echo(tmp_path, red_screen, fmt):
    path, sc = red_screen
    res = run_one(path, RedOracle(), tmp_path / "out" / "s", batch=8, save_masks=fmt, video=True)
    assert res.ok, res.error
    out = Path(res.out_dir)
    if fmt == "npz":
        masks = np.load(out / "masks.npz")["masks"]
    else:
        import cv2

        files = sorted((out / "masks").iterdir())
        assert [p.name for p in files[:2]] == ["000000.png", "000001.png"]
        masks = np.stack([cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in files]) // 255
    assert masks.shape == (60, 600, 800) and masks.dtype == np.uint8 and set(np.unique(masks)) <= {0, 1}
    truth = sc.masks
    dice = 2 * np.logical_and(masks, truth).sum() / (masks.sum() + truth.sum())
    assert dice > 0.85
    x, y, w, h = sc.box
    assert masks[:, :y].sum() == 0 and masks[:, :, :x].sum() == 0 and masks[:, y + h:].sum() == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["roi"]["method"] == "sector" and s["roi"]["asked"] == "auto" and (s["width"], s["height"]) == (800, 600)
    assert s["outputs"]["masks"] == ("masks.npz" if fmt == "npz" else "masks/")
    np.testing.assert_allclose(np.asarray([int(r.split(",")[2]) for r in (out / "frames.csv").read_text().split()[1:]]),
                               masks.reshape(60, -1).sum(1))  # areas in input pixels, of these very masks
    from echoseg.data.video import probe

    assert (probe(out / "overlay.avi").width, probe(out / "overlay.avi").height) == (1600, 600)


def test_roi_full_and_a_given_box_are_recorded(tmp_path, red_screen):
    path, sc = red_screen
    full = run_one(path, RedOracle(), tmp_path / "f", roi="full", video=False)
    x, y, w, h = sc.box
    given = run_one(path, RedOracle(), tmp_path / "g", roi=f"{x},{y},{w},{h}", video=False)
    assert full.summary["roi"]["method"] == "full" and full.summary["roi"]["square_px"] == 800
    assert given.summary["roi"]["method"] == "given" and given.summary["roi"]["x"] == x
    # the given box is the clip itself: its areas are those of the true masks at 3x scale
    np.testing.assert_allclose(given.summary["beats"][0]["ed_area_px"],
                               sc.masks[given.summary["beats"][0]["ed_frame"]].sum(), rtol=0.1)
    with pytest.raises(RoiError):
        run_videos([path], session=RedOracle(), roi="somewhere", out=tmp_path / "x")


def test_seconds_stops_a_file_early_with_complete_outputs(tmp_path, clip):
    path = write_video(tmp_path / "c.avi", clip.frames, 50.0)
    res = run_one(path, RedOracle(), tmp_path / "o", seconds=0.5, video=False, save_masks="npz")
    assert res.ok and res.summary["frames"] == 25
    assert np.load(Path(res.out_dir) / "masks.npz")["masks"].shape == (25, 112, 112)


def test_a_stream_url_runs_as_a_live_source_and_reports_beats_as_they_complete(tmp_path):
    v = make_video(5, frames=150)
    path = write_video(tmp_path / "live.avi", v.frames, 50.0)
    frames = v.frames.copy()
    url = f"file://{path}"
    assert is_live(url) and is_live("0") and not is_live(str(path)) and _stem(url).startswith("stream_")
    assert _stem("2") == "capture2"
    from oracle import CyclingOracle

    beats: list[dict] = []
    res = run_one(url, CyclingOracle(v.masks), tmp_path / "o" / "live", on_beat=beats.append, video=False)
    assert res.ok, res.error
    s = res.summary
    assert s["source"] == "live" and s["frames"] == len(frames)
    assert beats and [b["ed_frame"] for b in beats] == sorted({b["ed_frame"] for b in beats})
    final = {b["ed_frame"] for b in s["beats"]}
    assert all(min(abs(b["ed_frame"] - f) for f in final) <= 2 for b in beats)


def test_beat_watcher_reports_each_beat_once_in_order():
    t = np.arange(600)
    area = 1000 + 300 * np.cos(2 * np.pi * t / 50)  # a beat every second at 50 fps
    length = 60 + 5 * np.cos(2 * np.pi * t / 50)
    # per-frame measurements of an ellipsoidal LV of that area and length (what the stream hands over)
    measures = [FrameMeasure(int(a), float(ln), area_length_volume_px3(a, ln), 56.0, 56.0) for a, ln in zip(area, length)]
    got: list[dict] = []
    w = BeatWatcher(50.0, got.append)
    for i, m in enumerate(measures):
        w(i, m)
    eds = [b["ed_frame"] for b in got]
    assert len(eds) >= 10 and all(abs(e % 50) <= 1 or abs(e % 50 - 50) <= 1 for e in eds)
    assert eds == sorted(set(eds))
    whole = analyse(FrameCurves.from_measures(measures), fps=50.0)
    assert abs(np.mean([b["ef_estimate_pct"] for b in got]) - whole.ef_estimate_pct) < 1.0


def test_the_first_interrupt_only_asks_the_stream_to_stop():
    before = signal.getsignal(signal.SIGINT)  # Python's default, or SIG_IGN under nohup: put back either way
    stop = threading.Event()
    with stop_on_interrupt(stop):
        signal.raise_signal(signal.SIGINT)
        assert stop.is_set()
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before


def test_save_masks_without_a_format_means_npz():
    assert optional_save_masks(["--save-masks", "a.avi"]) == ["--save-masks=npz", "a.avi"]
    assert optional_save_masks(["a.avi", "--save-masks"]) == ["a.avi", "--save-masks=npz"]
    assert optional_save_masks(["--save-masks", "png", "a.avi"]) == ["--save-masks", "png", "a.avi"]


def test_a_dicom_region_is_the_crop(tmp_path, clip):
    pytest.importorskip("pydicom", minversion="3.0")
    from test_data_dicom import us_region, write_dicom

    sc = make_screen(clip.frames, clip.masks, size=(400, 300), at=(150, 50), scale=2.0, letterbox=10)
    region = us_region(0.03, 0.03, 224, 224)
    region.RegionLocationMinX0, region.RegionLocationMinY0 = 150, 50
    region.RegionLocationMaxX1, region.RegionLocationMaxY1 = 150 + 223, 50 + 223
    dcm = write_dicom(tmp_path / "r.dcm", sc.frames[:12], SequenceOfUltrasoundRegions=[region])
    reader = VideoReader(dcm)
    try:
        assert reader.info.region == (150, 50, 224, 224)
        crop = resolve_crop("auto", reader, dcm)
    finally:
        reader.close()
    assert (crop.method, crop.x, crop.y, crop.w, crop.h) == ("dicom-region", 150, 50, 224, 224)
    assert isinstance(crop, Crop)


@pytest.mark.shipped_bundle
@pytest.mark.skipif(__import__("echoseg.pretrained", fromlist=["bundled_dir"]).bundled_dir() is None,
                    reason="this source tree has no bundled model (make pretrained)")
def test_a_scanner_screen_reads_out_as_its_clip_with_the_bundled_model(tmp_path):
    """echo-run on a clip and on the same clip 3x larger, off-centre on an 800x600 screen with UI and
    a moving ECG trace: the LV area curves agree (r >= 0.95), the EF within 3 points, and the masks
    come back on the screen's pixel grid inside the echo."""
    import csv
    import subprocess
    import sys

    v = make_video(3, frames=96, style="echo")
    sc = make_screen(v.frames, v.masks, at=(310, 90), scale=3.0)
    write_video(tmp_path / "clip.avi", v.frames, 50.0)
    write_video(tmp_path / "screen.avi", sc.frames, 50.0)
    code = "from echoseg.runtime.cli import main; main()"
    r = subprocess.run([sys.executable, "-c", code, "clip.avi", "screen.avi", "--no-video", "--save-masks"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "outputs"
    s_clip, s_screen = (json.loads((out / n / "summary.json").read_text()) for n in ("clip", "screen"))
    assert s_clip["roi"]["method"] == "full" and s_screen["roi"]["method"] == "sector"

    def areas(name: str) -> np.ndarray:
        with open(out / name / "frames.csv", newline="") as fh:
            return np.asarray([float(row["lv_area_px"]) for row in csv.DictReader(fh)])

    assert np.corrcoef(areas("clip"), areas("screen"))[0, 1] >= 0.95
    assert abs(s_clip["ef_estimate_pct"]["mean"] - s_screen["ef_estimate_pct"]["mean"]) <= 3.0
    masks = np.load(out / "screen" / "masks.npz")["masks"]
    assert masks.shape == (96, 600, 800)
    x, y, w, h = sc.box
    inside = masks[:, y:y + h, x:x + w].sum()
    assert inside == masks.sum() > 0
    assert np.load(out / "clip" / "masks.npz")["masks"].shape == (96, 112, 112)


def test_a_stream_password_is_neither_printed_nor_recorded(tmp_path):
    from echoseg.data.video import shown_source

    assert shown_source("rtsp://admin:s3cret@10.0.0.5:554/live/ch1") == "rtsp://10.0.0.5:554/live/ch1"
    assert shown_source("/a/b.avi") == "/a/b.avi" and shown_source("0") == "0"
    assert "s3cret" not in _stem("rtsp://admin:s3cret@10.0.0.5/live")
    res = run_one("rtsp://admin:s3cret@127.0.0.1:9/none", RedOracle(), tmp_path / "o" / "x")
    assert not res.ok and "s3cret" not in res.error and "s3cret" not in res.input and "127.0.0.1" in res.error


class SlowRedOracle(RedOracle):
    """RedOracle taking 40 ms a batch, so a live source is stopped part way through."""

    def run(self, x: np.ndarray) -> np.ndarray:
        import time

        time.sleep(0.04)
        return super().run(x)


@pytest.mark.parametrize("how", ["seconds", "ctrl-c"])
def test_a_live_source_stopped_part_way_leaves_complete_outputs(tmp_path, clip, how):
    import os

    before = signal.getsignal(signal.SIGINT)
    frames = np.concatenate([clip.frames] * 4)  # 240 frames: far more than 0.6 s of slow batches
    path = write_video(tmp_path / "long.avi", frames, 50.0)
    timer = None
    if how == "ctrl-c":
        timer = threading.Timer(0.6, os.kill, (os.getpid(), signal.SIGINT))
        timer.start()
    try:
        res = run_one(f"file://{path}", SlowRedOracle(), tmp_path / "o" / "live", batch=4, save_masks="npz",
                      seconds=0.6 if how == "seconds" else 0.0)
    finally:
        if timer is not None:
            timer.cancel()
    assert res.ok, res.error
    n = res.summary["frames"]
    assert 0 < n < len(frames)
    out = Path(res.out_dir)
    assert len((out / "frames.csv").read_text().split()) == n + 1
    assert np.load(out / "masks.npz")["masks"].shape == (n, 112, 112)
    from echoseg.data.video import probe

    assert probe(out / "overlay.avi").frame_count == n
    assert signal.getsignal(signal.SIGINT) is before
