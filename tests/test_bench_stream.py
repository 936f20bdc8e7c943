"""The benchmark measures echo-run's own streaming loop, and reads NVML only for GPU backends, on their device."""

from __future__ import annotations

import pytest
from tiny_onnx import write_tiny_onnx

from echoseg.bench import sampler as S
from echoseg.data.synthetic import make_video
from echoseg.data.video import write_video


@pytest.fixture()
def tiny_export(tmp_path):
    v = make_video(3, frames=10)
    return write_tiny_onnx(tmp_path / "exp" / "model.onnx"), str(write_video(tmp_path / "v.avi", v.frames, v.fps))


def test_video_passes_go_through_the_shipped_streaming_loop(tiny_export, monkeypatch):
    import echoseg.runtime.stream as stream
    from echoseg.bench.worker import WorkerConfig, run

    onnx, video = tiny_export
    seen = []
    real = stream.stream_video

    def spy(path, session, **kw):
        seen.append((str(path), kw.get("batch")))
        return real(path, session, **kw)

    monkeypatch.setattr(stream, "stream_video", spy)
    monkeypatch.setattr(S, "open_nvml", lambda *a: pytest.fail("NVML opened for a CPU backend"))
    cfg = WorkerConfig(artifact=str(onnx), backend="onnxruntime", videos=[video], batch=4, mode="table1",
                       warmup=1, video_repeats=2, threads=1)
    row = run(cfg)
    assert seen == [(video, 4), (video, 4)]
    assert row["video_loop"] == "runtime.stream.stream_video" and row["video_frames"] == 10
    assert 0 < row["video_model_s"] <= row["video_s"]
    assert row["gpu_device"] is None and row["gpu_util_pct_avg"] is None and row["gpu_mem_scope"] is None


@pytest.mark.parametrize("visible,ordinal,expected", [(None, 0, 0), ("", 1, 1), ("3,1", 0, 3), ("3,1", 1, 1),
                                                      ("GPU-8a1f,GPU-77c2", 1, "GPU-77c2")])
def test_nvml_device_follows_cuda_visible_devices(visible, ordinal, expected):
    assert S.nvml_device_for(ordinal, visible) == expected


def test_an_invisible_device_is_an_error_not_device_zero():
    with pytest.raises(ValueError, match="not visible"):
        S.nvml_device_for(2, "0,1")


def test_attach_gpu_opens_the_mapped_device_and_labels_memory_scope(monkeypatch):
    opened = []

    class FakeNvml:
        class NVMLError(Exception):
            pass

        @staticmethod
        def nvmlDeviceGetUtilizationRates(h):
            return type("U", (), {"gpu": 7})()

        @staticmethod
        def nvmlDeviceGetComputeRunningProcesses(h):
            return []

        @staticmethod
        def nvmlDeviceGetMemoryInfo(h):
            return type("M", (), {"used": 512 * S.MB})()

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,2")
    monkeypatch.setattr(S, "open_nvml", lambda dev: opened.append(dev) or (FakeNvml, "handle"))
    with S.ResourceSampler(interval_s=0.02) as s:
        assert not s.has_gpu  # nothing opened until a GPU session asks
        assert s.attach_gpu(1) and s.gpu_device == 2 and opened == [2]
        s.mark()
    st = s.stats()
    assert st.gpu_util_pct_peak == 7 and st.gpu_mem_scope == "device" and st.gpu_mem_mb_peak == 512
