"""ONNX Runtime providers: chosen explicitly, CUDA by default on a GPU, TensorRT only when asked (pure planning)."""

from __future__ import annotations

import json

import pytest
from tiny_onnx import tiny_meta, write_tiny_onnx

from echoseg.runtime.ort import CPU, CUDA, TRT, TRT_CACHE_DIR, provider_plan
from echoseg.runtime.session import SessionError

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
    from echoseg.runtime.ort import OrtSession

    path = write_tiny_onnx(tmp_path / "model.onnx")
    with caplog.at_level("INFO", logger="echoseg.runtime.ort"):
        sess = OrtSession(path, providers=[CPU])
    assert sess.info.extra["providers"] == [CPU] and sess.info.extra["providers_asked"] == [CPU]
    assert not sess.info.on_gpu
    assert any("providers asked" in r.getMessage() for r in caplog.records)
    with pytest.raises(SessionError, match="empty batch"):
        import numpy as np

        sess.run(np.zeros((0, 3, 112, 112), np.float32))
