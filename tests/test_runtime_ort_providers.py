"""ONNX Runtime providers: chosen explicitly, CUDA by default on a GPU, TensorRT only when asked (pure planning)."""

from __future__ import annotations

import json

import pytest
from tiny_onnx import tiny_meta, write_tiny_onnx

from echoseg.backends.ort import CPU, CUDA, TRT, TRT_CACHE_DIR, provider_plan
from echoseg.backends.session import SessionError
from test_export_fixtures import export_base, exported, no_tensorrt  # noqa: F401

SPEC = tiny_meta().input_spec


def test_cpu_only_build_gets_the_cpu_provider(tmp_path):
    assert provider_plan([CPU], None, tmp_path / "model.onnx", SPEC) == [CPU]


def test_gpu_build_defaults_to_cuda_never_tensorrt(tmp_path):
    assert provider_plan([TRT, CUDA, CPU], None, tmp_path / "model.onnx", SPEC) == [CUDA, CPU]


def test_tensorrt_provider_only_when_asked_with_cache_in_the_export_and_its_profile(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "echoseg-export",
                                                        "profile": {"min": 2, "opt": 8, "max": 32}}))
    plan = provider_plan([TRT, CUDA, CPU], None, tmp_path / "model.onnx", SPEC, tensorrt=True)
    (name, opts), rest = plan[0], plan[1:]
    assert name == TRT and rest == [CUDA, CPU]
    assert opts["trt_engine_cache_enable"] and opts["trt_engine_cache_path"] == str(tmp_path / TRT_CACHE_DIR)
    assert (opts["trt_profile_min_shapes"], opts["trt_profile_opt_shapes"], opts["trt_profile_max_shapes"]) == (
        "frames:2x3x112x112", "frames:8x3x112x112", "frames:32x3x112x112")
    named = provider_plan([TRT, CUDA, CPU], [TRT], tmp_path / "model.onnx", SPEC)
    assert named[0][0] == TRT and named[-1] == CPU


def test_asking_for_a_provider_that_is_not_there_is_an_error(tmp_path):
    with pytest.raises(SessionError, match="onnxruntime-gpu"):
        provider_plan([CPU], [CUDA], tmp_path / "model.onnx", SPEC)
    with pytest.raises(SessionError, match="TensorRT execution provider"):
        provider_plan([CUDA, CPU], None, tmp_path / "model.onnx", SPEC, tensorrt=True)


def test_the_session_logs_and_reports_its_providers(tmp_path, caplog):
    from echoseg.backends.ort import OrtSession

    path = write_tiny_onnx(tmp_path / "model.onnx")
    with caplog.at_level("INFO", logger="echoseg.backends.ort"):
        sess = OrtSession(path, providers=[CPU])
    assert sess.info.extra["providers"] == [CPU] and sess.info.extra["providers_asked"] == [CPU]
    assert not sess.info.on_gpu
    assert any("providers asked" in r.getMessage() for r in caplog.records)
    with pytest.raises(SessionError, match="empty batch"):
        import numpy as np

        sess.run(np.zeros((0, 3, 112, 112), np.float32))


def test_on_the_cpu_provider_a_batch_runs_in_pieces_with_the_same_logits(tmp_path):
    import numpy as np

    from echoseg.backends import ort as ort_backend

    path = write_tiny_onnx(tmp_path / "model.onnx")
    sess = ort_backend.OrtSession(path, providers=[CPU])
    sizes: list[int] = []
    real = sess._sess

    class Recording:
        def run(self, names, feeds):
            sizes.append(len(next(iter(feeds.values()))))
            return real.run(names, feeds)

    x = np.random.default_rng(0).normal(size=(10, 3, 112, 112)).astype(np.float32)
    sess._sess = Recording()
    y = sess.run(x)
    assert ort_backend.CPU_PIECE == 4 and sizes == [4, 4, 2]
    sizes.clear()
    sess.max_piece = 0  # the whole batch in one call, as on a GPU provider
    np.testing.assert_array_equal(y, sess.run(x))
    assert sizes == [10]
    assert y.shape == (10, 1, 112, 112) and y.dtype == np.float32


def test_auto_on_a_cpu_onnxruntime_takes_int8_only_where_the_export_measured_it_faster(exported, tmp_path,
                                                                                       monkeypatch):
    import json
    import shutil

    from echoseg.backends import registry as backends, openvino as ovb, ort
    from echoseg.backends.choose import choose

    monkeypatch.setattr(backends, "_REGISTRY", dict(backends._REGISTRY))  # OpenVINO out of the way
    backends.register(backends.Backend(**{**ovb.BACKEND.__dict__, "defer": lambda: "not in this test"}))

    def export_with(int8_ms: float, fp32_ms: float, name: str):
        d = tmp_path / name
        shutil.copytree(exported / "unet", d)
        man = json.loads((d / "manifest.json").read_text())
        rec = man["exports"][0]["parity"]["int8_vs_fp32"]
        assert rec["passed"] and set(rec["onnxruntime_latency_ms_b1"]) == {"fp32", "int8"}  # what the export wrote
        rec["onnxruntime_latency_ms_b1"] = {"fp32": fp32_ms, "int8": int8_ms}
        (d / "manifest.json").write_text(json.dumps(man))
        return d

    monkeypatch.setattr(ort, "_cpu_only", lambda: True)
    c = choose(export_with(2.0, 5.0, "fast"), "auto")
    assert (c.backend, c.path.name) == ("onnxruntime", "model.int8.onnx")
    assert "ran faster than FP32 at export (2.00 vs 5.00 ms" in c.reason
    c = choose(export_with(6.0, 5.0, "slow"), "auto")
    assert c.path.name == "model.onnx" and "INT8 was slower than FP32 at export" in c.reason
    assert choose(tmp_path / "fast" / "model.onnx", "auto").path.name == "model.onnx"  # a file given is run as given
    assert choose(tmp_path / "fast", "onnxruntime").path.name == "model.onnx"  # only auto chooses by speed
    monkeypatch.setattr(ort, "_cpu_only", lambda: False)  # a GPU provider: the export's CPU timing says nothing
    assert choose(tmp_path / "fast", "auto").path.name == "model.onnx"
