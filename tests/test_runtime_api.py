"""run_videos / run_one outputs, bad inputs among good ones, model discovery (oracle session, no torch)."""

from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from oracle import CyclingOracle

from echoseg.data.synthetic import make_video
from echoseg.data.video import probe, write_video
from echoseg.runtime import run_videos
from echoseg.runtime.api import run_one
from echoseg.backends.choose import choose, find_default_model
from echoseg.backends.session import SessionError


@pytest.fixture(scope="module")
def synth():
    return make_video(21, frames=100)


def _write(path: Path, frames: np.ndarray, fps: float = 50.0, size: tuple[int, int] | None = None) -> Path:
    import cv2

    if size is not None:
        frames = np.stack([cv2.resize(f, size, interpolation=cv2.INTER_LINEAR) for f in frames])
    return write_video(path, frames, fps)


def _read_frames_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _near(found: list[int], truth: list[int], n: int, edge: int = 5, tol: int = 2) -> bool:
    inner = [t for t in truth if edge <= t < n - edge]
    return all(any(abs(t - f) <= tol for f in found) for t in inner) and all(
        any(abs(t - f) <= tol for t in truth) for f in found if edge <= f < n - edge)


@pytest.mark.parametrize("size", [None, (160, 120)])
def test_outputs_of_one_video(tmp_path, synth, size):
    video = _write(tmp_path / "in" / "echo.avi", synth.frames, size=size)
    res = run_one(video, CyclingOracle(synth.masks), tmp_path / "out" / "echo", batch=8)
    assert res.ok, res.error
    out = Path(res.out_dir)
    assert sorted(p.name for p in out.iterdir()) == [".echoseg-run", "area.png", "frames.csv", "overlay.avi",
                                                     "summary.json"]
    rows = _read_frames_csv(out / "frames.csv")
    assert len(rows) == 100 and list(rows[0]) == ["frame", "time_s", "lv_area_px", "lv_length_px", "lv_volume_px3",
                                                  "is_ed", "is_es", "is_outlier"]
    assert [int(r["frame"]) for r in rows] == list(range(100))
    assert float(rows[50]["time_s"]) == pytest.approx(1.0)
    ed = [int(r["frame"]) for r in rows if r["is_ed"] == "1"]
    es = [int(r["frame"]) for r in rows if r["is_es"] == "1"]
    assert _near(ed, synth.ed_frames, 100) and _near(es, synth.es_frames, 100)
    s = json.loads((out / "summary.json").read_text())
    assert s["frames"] == 100 and s["fps"] == pytest.approx(50.0) and s["backend"] == "oracle"
    assert s["ed_frames"] == ed and s["es_frames"] == es
    assert s["beats"] and all(b["ed_frame"] < b["es_frame"] for b in s["beats"])
    assert len(s["ef_estimate_pct"]["per_beat"]) == len(s["beats"])
    assert abs(s["ef_estimate_pct"]["value"] - synth.ef) < 10
    assert s["ef_estimate_pct"]["value"] == pytest.approx(float(np.median(s["ef_estimate_pct"]["per_beat"])))
    assert "estimate" in s["ef_estimate_pct"]["method"] and "discs" in s["ef_estimate_pct"]["method"]
    assert s["volume_unit"].startswith("px^3") and s["edv_px3"] > s["esv_px3"] > 0 and "edv_ml" not in s
    assert s["processing_fps"] > 0 and set(s["timings"]) >= {"decode_s", "inference_s", "postprocess_s", "wall_s"}
    w, h = size or (112, 112)
    info = probe(out / "overlay.avi")
    assert (info.width, info.height, info.frame_count) == (2 * w, h, 100)
    assert (out / "area.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_video_skips_the_overlay(tmp_path, synth):
    video = _write(tmp_path / "a.avi", synth.frames[:40])
    res = run_one(video, CyclingOracle(synth.masks), tmp_path / "out" / "a", video=False)
    assert res.ok and not (Path(res.out_dir) / "overlay.avi").exists()
    assert res.summary["outputs"]["overlay_video"] is None


def test_a_rerun_replaces_the_previous_outputs(tmp_path, synth):
    video = _write(tmp_path / "a.avi", synth.frames[:30])
    first = run_one(video, CyclingOracle(synth.masks), tmp_path / "out" / "a", video=False)
    (Path(first.out_dir) / "stale.txt").write_text("old")
    video = _write(tmp_path / "a.avi", synth.frames[:20])
    second = run_one(video, CyclingOracle(synth.masks), tmp_path / "out" / "a", video=False)
    assert second.ok and not (Path(second.out_dir) / "stale.txt").exists()
    assert len(_read_frames_csv(Path(second.out_dir) / "frames.csv")) == 20
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a"]


def _bad_inputs(d: Path, synth) -> dict[str, Path]:
    import cv2

    (d / "notes.avi").write_text("not a video")
    (d / "empty.mp4").write_bytes(b"")
    w = cv2.VideoWriter(str(d / "zero.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 50.0, (112, 112), True)
    w.release()
    full = _write(d.parent / "full.avi", synth.frames[:60])
    data = full.read_bytes()
    (d / "truncated.avi").write_bytes(data[: len(data) // 2])
    return {"notes": d / "notes.avi", "empty": d / "empty.mp4", "zero": d / "zero.avi",
            "truncated": d / "truncated.avi"}


def test_a_directory_with_bad_videos(tmp_path, synth):
    d = tmp_path / "videos"
    d.mkdir()
    _write(d / "good.avi", synth.frames)
    _write(d / "good_big.avi", synth.frames, fps=30.0, size=(224, 168))
    bad = _bad_inputs(d, synth)
    missing = tmp_path / "missing.avi"
    out = tmp_path / "out"
    results = run_videos([d, missing], out=out, session=CyclingOracle(synth.masks), batch=6)
    by_name = {r.name: r for r in results}
    assert by_name["good"].ok and by_name["good_big"].ok
    assert by_name["good_big"].summary["fps"] == pytest.approx(30.0)
    failed = [r for r in results if not r.ok]
    assert sorted(r.name for r in failed) == ["empty", "missing", "notes", "truncated", "zero"]
    causes = {"notes": "cannot open it as a video", "empty": "0 bytes", "zero": "no frames",
              "truncated": "truncated", "missing": "not found"}
    for r in failed:
        assert causes[r.name] in r.error and r.input in r.error and "\n" not in r.error
    # Only complete outputs: the two good videos and summary.csv, nothing hidden or partial.
    assert sorted(p.name for p in out.iterdir()) == ["good", "good_big", "summary.csv"]
    with open(out / "summary.csv", newline="") as fh:
        rows = {Path(r["video"]).stem: r for r in csv.DictReader(fh)}
    assert len(rows) == 7
    assert rows["good"]["status"] == "ok" and rows["good"]["frames"] == "100"
    assert rows["truncated"]["status"] == "failed" and "truncated" in rows["truncated"]["error"]
    assert str(bad["zero"]) in rows["zero"]["error"]


def test_same_stem_in_two_folders_gets_two_output_folders(tmp_path, synth):
    a = _write(tmp_path / "x" / "clip.avi", synth.frames[:20])
    b = _write(tmp_path / "y" / "clip.avi", synth.frames[:25])
    results = run_videos([a, b], out=tmp_path / "out", session=CyclingOracle(synth.masks), video=False)
    assert [r.name for r in results] == ["clip", "clip_2"]
    assert [r.summary["frames"] for r in results] == [20, 25]


def test_progress_reports_every_frame(tmp_path, synth):
    video = _write(tmp_path / "p.avi", synth.frames[:30])
    seen: list[tuple[str, int, int]] = []
    run_videos([video], out=tmp_path / "out", session=CyclingOracle(synth.masks), batch=7,
               video=False, progress=lambda name, done, total: seen.append((name, done, total)))
    assert [d for _, d, _ in seen] == list(range(1, 31)) and {n for n, _, _ in seen} == {"p"}
    assert seen[-1][2] == 30


def test_each_video_is_opened_once(tmp_path, synth, monkeypatch):
    """run_one reads a video's info and frames from one capture (it used to open it three times)."""
    import cv2

    opened: list[str] = []
    real = cv2.VideoCapture

    def counting(*args, **kwargs):
        opened.append(str(args[0]) if args else "")
        return real(*args, **kwargs)

    a = _write(tmp_path / "a.avi", synth.frames[:30])
    b = _write(tmp_path / "b.avi", synth.frames[:20])
    monkeypatch.setattr(cv2, "VideoCapture", counting)
    results = run_videos([a, b], out=tmp_path / "out", session=CyclingOracle(synth.masks), batch=4)
    assert all(r.ok for r in results) and [r.summary["frames"] for r in results] == [30, 20]
    assert opened == [str(a), str(b)]


def _touch(path: Path, age_s: float = 0.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    t = time.time() - age_s
    os.utime(path, (t, t))
    return path


def test_default_model_is_the_newest_export_then_the_newest_run(tmp_path, monkeypatch):
    from echoseg import pretrained

    monkeypatch.setattr(pretrained, "FOLDER", tmp_path / "no-bundle")  # this install's bundle aside
    with pytest.raises(SessionError, match="--model"):
        find_default_model(tmp_path)
    _touch(tmp_path / "runs" / "old" / "best.pt", 100)
    _touch(tmp_path / "runs" / "new" / "best.pt", 10)
    assert find_default_model(tmp_path) == tmp_path / "runs" / "new"
    _touch(tmp_path / "exports" / "e1" / "model.onnx", 50)
    _touch(tmp_path / "exports" / "e2" / "manifest.json", 20)
    assert find_default_model(tmp_path) == tmp_path / "exports" / "e2"


def test_backend_choice_and_its_errors(tmp_path):
    onnx = _touch(tmp_path / "m" / "model.onnx")
    _touch(tmp_path / "m" / "best.pt")
    assert choose(tmp_path / "m", "auto").path == onnx  # no TensorRT here: ONNX Runtime
    assert choose(tmp_path / "m", "auto").backend == "onnxruntime"
    assert choose(tmp_path / "m", "torch").path == tmp_path / "m" / "best.pt"
    with pytest.raises(SessionError, match="--backend openvino or onnxruntime"):
        choose(onnx, "torch")
    with pytest.raises(SessionError, match="cannot"):
        choose(tmp_path / "m", "tensorrt")
    with pytest.raises(SessionError, match="no such model"):
        choose(tmp_path / "nothing.onnx", "auto")
    with pytest.raises(SessionError, match="unknown backend"):
        choose(onnx, "tflite")
    engine = _touch(tmp_path / "e" / "model.fp16.engine")
    with pytest.raises(SessionError, match="pass the .onnx"):
        choose(engine, "auto")


class FailsOnce(CyclingOracle):
    """Fails like a backend would (SessionError) on one given call, then works again."""

    def __init__(self, masks: np.ndarray, fail_call: int) -> None:
        super().__init__(masks)
        self.calls, self.fail_call = 0, fail_call

    def run(self, x: np.ndarray) -> np.ndarray:
        self.calls += 1
        if self.calls == self.fail_call:
            raise SessionError("oracle: out of memory on this batch")
        return super().run(x)


def test_an_inference_failure_fails_only_its_video(tmp_path, synth):
    d = tmp_path / "in"
    _write(d / "a.avi", synth.frames[:20])  # calls 1-3 at batch 8
    _write(d / "b.avi", synth.frames[:60])  # calls 4-11: fails on call 6
    _write(d / "c.avi", synth.frames[:20])
    results = run_videos([d], out=tmp_path / "out", session=FailsOnce(synth.masks, 6), batch=8, video=False)
    assert [(r.name, r.ok) for r in results] == [("a", True), ("b", False), ("c", True)]
    assert "out of memory" in results[1].error and str(d / "b.avi") in results[1].error
    assert results[2].summary["frames"] == 20
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a", "c", "summary.csv"]


class Recording(CyclingOracle):
    """Records the batch size of every call."""

    def __init__(self, masks: np.ndarray) -> None:
        super().__init__(masks)
        self.sizes: list[int] = []

    def run(self, x: np.ndarray) -> np.ndarray:
        self.sizes.append(len(x))
        return super().run(x)


def test_the_model_check_runs_the_batch_the_videos_will_run(tmp_path, synth, monkeypatch):
    """The one-off work for the stream's batch shape (OpenVINO compiles for it) happens at session start-up,
    not inside the first video's frames/s, and a backend that compiles for the largest batch seen is not
    left at the check's size."""
    from types import SimpleNamespace

    from echoseg.runtime import api

    opened: list[Recording] = []

    def fake_open(choice, **options):
        opened.append(Recording(synth.masks))
        return opened[-1]

    monkeypatch.setattr(api, "choose", lambda *a: SimpleNamespace(path=tmp_path / "m.onnx", backend="onnxruntime",
                                                                 reason="test", options={}))
    monkeypatch.setattr(api, "open_choice", fake_open)
    video = _write(tmp_path / "a.avi", synth.frames[:20])
    results = run_videos([video], model=tmp_path / "m.onnx", out=tmp_path / "out", batch=6, video=False)
    assert results[0].ok, results[0].error
    assert opened[0].sizes == [6, 6, 6, 6, 2]  # the check, then 20 frames as 6 + 6 + 6 + 2

