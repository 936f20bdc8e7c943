"""The streaming loop with an oracle session (true masks as logits): order, sizes, batches, bad input."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from echoseg.config import ArtifactMeta, InputSpec, ModelConfig
from echoseg.data.synthetic import make_video
from echoseg.data.video import VideoError, write_video
from echoseg.backends.session import BaseSession, SessionInfo
from echoseg.runtime.stream import mask_at, stream_video

META = ArtifactMeta(model=ModelConfig("unet", 8), input_spec=InputSpec())


class OracleSession(BaseSession):
    """A backend session returning the true masks (logit +8 inside, -8 outside) in frame order;
    ``calls``: the size of every backend call (after BaseSession's split and padding)."""

    def __init__(self, masks: np.ndarray, min_batch: int = 1, max_batch: int = 0, fail_at_call: int = -1):
        self.masks, self.i, self.calls, self.fail_at_call = masks, 0, [], fail_at_call
        self.info = SessionInfo("oracle", "fp32", "cpu", min_batch, max_batch, META, "oracle")

    def _run_piece(self, x: np.ndarray) -> np.ndarray:
        assert x.dtype == np.float32 and x.shape[1:] == (3, 112, 112)
        if len(self.calls) == self.fail_at_call:
            raise RuntimeError("oracle: simulated inference failure")
        self.calls.append(len(x))
        out = np.full((len(x), 1, 112, 112), -8.0, np.float32)
        take = min(len(x), len(self.masks) - self.i)
        out[:take, 0][self.masks[self.i:self.i + take]] = 8.0
        self.i += take
        return out


@pytest.fixture(scope="module")
def synth():
    return make_video(4, frames=37)


@pytest.fixture(scope="module")
def avi(tmp_path_factory, synth) -> Path:
    return write_video(tmp_path_factory.mktemp("v") / "s.avi", synth.frames, synth.fps)


def test_every_frame_in_order_with_a_partial_last_batch(avi, synth):
    sess = OracleSession(synth.masks)
    seen: list[int] = []
    stats = stream_video(avi, sess, batch=8, sink=lambda i, f, m: seen.append(i))
    assert stats.frames == 37 and seen == list(range(37))
    assert sess.calls == [8, 8, 8, 8, 5]
    np.testing.assert_array_equal(stats.area_px, synth.masks.reshape(37, -1).sum(1))
    assert stats.fps == pytest.approx(50.0) and (stats.height, stats.width) == (112, 112)
    assert stats.inference_s > 0 and stats.wall_s >= stats.inference_s
    assert len(stats.batch_latency_ms) == 5
    t = stats.timings()
    assert t["batch_latency_p50_ms"] <= t["batch_latency_p99_ms"] and t["processing_fps"] == pytest.approx(37 / stats.wall_s)


def test_fixed_batch_session_gets_padded_batches(avi, synth):
    sess = OracleSession(synth.masks, min_batch=4, max_batch=4)
    stats = stream_video(avi, sess, batch=16)
    assert set(sess.calls) == {4} and len(sess.calls) == 10  # 37 frames -> 9 full + 1 padded
    assert stats.frames == 37 and stats.batch == 4
    np.testing.assert_array_equal(stats.area_px, synth.masks.reshape(37, -1).sum(1))


@pytest.mark.parametrize("size,grey", [((200, 150), False), ((64, 96), True)])
def test_any_size_and_grey_input_maps_masks_to_the_original_resolution(tmp_path, synth, size, grey):
    import cv2

    w, h = size
    path = tmp_path / "resized.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (w, h), not grey)
    for f in synth.frames:
        img = cv2.resize(f, (w, h), interpolation=cv2.INTER_LINEAR)
        writer.write(img[:, :, 0] if grey else img)
    writer.release()
    shapes = []
    stats = stream_video(path, OracleSession(synth.masks), batch=5,
                         sink=lambda i, f, m: shapes.append((f.shape, m.shape, m.dtype)))
    assert stats.frames == 37 and (stats.width, stats.height) == (w, h) and stats.fps == pytest.approx(25.0)
    assert set(shapes) == {((h, w, 3), (h, w), np.dtype(bool))}
    # Area scales with the pixel count of the frame.
    expected = synth.masks.reshape(37, -1).sum(1) * (w * h) / (112 * 112)
    np.testing.assert_allclose(stats.area_px, expected, rtol=0.06)


def test_mask_at_resizes_logits_before_the_cut():
    logits = np.full((4, 4), -1.0, np.float32)
    logits[1:3, 1:3] = 1.0
    m = mask_at(logits, 8, 8, cut=0.0)
    assert m.shape == (8, 8) and m[3:5, 3:5].all() and not m[0].any()


def _zero_frames(path: Path) -> Path:
    import cv2

    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 50.0, (112, 112), True)
    w.release()
    return path


def _truncated(path: Path, synth) -> Path:
    full = write_video(path.with_name("full.avi"), synth.frames, synth.fps)
    data = full.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize("case,cause", [
    ("missing", "file not found"),
    ("text", "cannot open it as a video"),
    ("empty", "empty (0 bytes)"),
    ("zero", "no frames could be decoded"),
    ("truncated", "truncated: decoded"),
])
def test_bad_input_raises_one_line_error_naming_the_file(tmp_path, synth, case, cause):
    path = tmp_path / f"{case}.avi"
    if case == "text":
        path.write_text("this is not a video\n")
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "zero":
        _zero_frames(path)
    elif case == "truncated":
        _truncated(path, synth)
    before = threading.active_count()
    with pytest.raises(VideoError) as err:
        stream_video(path, OracleSession(synth.masks), batch=4)
    msg = str(err.value)
    assert str(path) in msg and cause in msg and "\n" not in msg
    assert threading.active_count() == before  # reader and writer threads are gone


def test_inference_failure_stops_the_threads_and_propagates(avi, synth):
    before = threading.active_count()
    with pytest.raises(RuntimeError, match="simulated inference failure"):
        stream_video(avi, OracleSession(synth.masks, fail_at_call=2), batch=4, queue_batches=1)
    assert threading.active_count() == before


def test_sink_failure_propagates(avi, synth):
    def sink(i, frame, mask):
        if i == 10:
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        stream_video(avi, OracleSession(synth.masks), batch=4, sink=sink)


@pytest.mark.parametrize("fails", [False, True])
def test_opencv_runs_without_its_worker_threads_during_a_stream_and_gets_its_setting_back(avi, synth, fails):
    import cv2

    prior = cv2.getNumThreads()
    cv2.setNumThreads(3)
    try:
        during: list[int] = []

        def sink(i, frame, mask):
            during.append(cv2.getNumThreads())
            if fails and i == 20:
                raise OSError("disk full")

        if fails:
            with pytest.raises(OSError, match="disk full"):
                stream_video(avi, OracleSession(synth.masks), batch=8, sink=sink)
        else:
            stream_video(avi, OracleSession(synth.masks), batch=8, sink=sink)
        assert during and set(during) == {1}  # setNumThreads(0): sequential, reported as one thread
        assert cv2.getNumThreads() == 3
    finally:
        cv2.setNumThreads(prior)
