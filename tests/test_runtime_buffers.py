"""Frames in flight sized by bytes: large frames run in smaller batches; the overlay video is capped."""

from __future__ import annotations

import numpy as np
import pytest
from oracle import CyclingOracle

from echoseg.data.synthetic import make_video
from echoseg.data.video import probe, write_video
from echoseg.runtime.buffers import plan_buffers, return_large_blocks
from echoseg.runtime.overlay import fit_for_overlay
from echoseg.runtime.stream import stream_video

MB = 2**20


def test_small_frames_keep_the_batch_asked_for():
    p = plan_buffers(112, 112, 8, budget=96 * MB)
    assert (p.batch, p.queue_frames) == (8, 8)


def test_a_4k_frame_runs_in_a_batch_that_fits_the_budget():
    p = plan_buffers(3840, 2160, 8, budget=96 * MB)
    assert p.frame_bytes == 3840 * 2160 * 3
    assert (p.batch, p.queue_frames) == (1, 2)
    assert p.frames_in_flight * p.frame_bytes < 130 * MB  # was (8 + 3 * 8) frames: 800 MB
    mid = plan_buffers(1920, 1080, 8, budget=96 * MB)  # 6.2 MB a frame: 15 fit
    assert mid.batch == 4 and mid.frames_in_flight * mid.frame_bytes <= 96 * MB
    assert plan_buffers(0, 0, 8, budget=MB).batch == 8  # size unknown: as asked


def test_the_budget_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("ECHOSEG_FRAME_BUFFER_MB", "400")
    assert plan_buffers(3840, 2160, 8).batch == 4
    monkeypatch.setenv("ECHOSEG_FRAME_BUFFER_MB", "nonsense")
    assert plan_buffers(3840, 2160, 8).batch == 1


def test_the_stream_runs_large_frames_in_smaller_batches_with_the_same_measurements(tmp_path, monkeypatch):
    import cv2

    synth = make_video(4, frames=12)
    frames = np.stack([cv2.resize(f, (640, 480), interpolation=cv2.INTER_LINEAR) for f in synth.frames])
    avi = write_video(tmp_path / "big.avi", frames, 25.0)
    monkeypatch.setenv("ECHOSEG_FRAME_BUFFER_MB", "100")
    full = stream_video(avi, CyclingOracle(synth.masks), batch=8)
    monkeypatch.setenv("ECHOSEG_FRAME_BUFFER_MB", "4")  # 0.9 MB a frame: 4 fit, batch 1
    small = stream_video(avi, CyclingOracle(synth.masks), batch=8)
    assert (full.batch, small.batch) == (8, 1)
    assert np.array_equal(full.area_px, small.area_px) and full.area_px.min() > 0
    seen = []
    small2 = stream_video(avi, CyclingOracle(synth.masks), batch=8, sink=lambda i, f, m: seen.append(f.shape))
    assert seen == [(480, 640, 3)] * 12 and np.array_equal(small2.area_px, full.area_px)


def test_the_overlay_is_capped_and_the_mask_scaled_with_it():
    frame = np.zeros((2160, 3840, 3), np.uint8)
    mask = np.zeros((2160, 3840), bool)
    mask[1000:1200, 1800:2000] = True
    f, m = fit_for_overlay(frame, mask)
    assert f.shape == (1080, 1920, 3) and m.shape == (1080, 1920) and m.dtype == bool
    assert m.sum() == pytest.approx(mask.sum() / 4, rel=0.02)
    small = np.zeros((112, 112, 3), np.uint8)
    assert fit_for_overlay(small, mask[:112, :112])[0] is small


def test_the_overlay_video_of_a_large_clip_is_at_most_1920x1080_a_side(tmp_path):
    from echoseg.runtime.outputs import OverlaySink

    sink = OverlaySink(tmp_path / "o.avi", 25.0)
    frame = np.full((1440, 2560, 3), 60, np.uint8)
    for i in range(3):
        sink(i, frame, np.zeros((1440, 2560), bool))
    sink.close()
    info = probe(tmp_path / "o.avi")
    assert (info.width, info.height) == (2 * 1920, 1080)


def test_returning_large_blocks_is_idempotent():
    assert return_large_blocks() == return_large_blocks()
