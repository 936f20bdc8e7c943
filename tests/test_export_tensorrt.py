"""TensorRT planning, the clear skip without it, manifest and engine sidecar; a real build where TensorRT is."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from test_export_fixtures import (cached_checkpoint, export_base, exported, no_tensorrt,  # noqa: F401
                                  onnx_logits, quick_options, synthetic_batch)
from tiny_onnx import make_model


def _qdq_graph(path: Path, zero_point_type: int) -> None:
    """A one-node QuantizeLinear graph whose zero point has ``zero_point_type`` (what form_of reads)."""
    import onnx
    from onnx import TensorProto, helper

    zp = helper.make_tensor("zp", zero_point_type, [], [0])
    scale = helper.make_tensor("scale", TensorProto.FLOAT, [], [0.1])
    node = helper.make_node("QuantizeLinear", ["x", "scale", "zp"], ["y"])
    graph = helper.make_graph([node], "q", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", zero_point_type, [1])], [scale, zp])
    onnx.save(make_model(graph), str(path))


def _graphs(tmp_path: Path, *names: str, int8_form: str = "tensorrt") -> dict[str, Path]:
    from onnx import TensorProto

    out = {}
    for precision in names:
        p = tmp_path / {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}[precision]
        if precision == "int8":
            _qdq_graph(p, TensorProto.INT8 if int8_form == "tensorrt" else TensorProto.UINT8)
        else:
            p.write_bytes(b"x")
        out[precision] = p
    return out


def test_an_int8_engine_is_refused_the_cpu_form_graph(tmp_path):
    from echoseg.export.onnx import ExportError
    from echoseg.export.tensorrt import plan_engine

    graphs = _graphs(tmp_path, "fp32", "int8", int8_form="cpu")
    with pytest.raises(ExportError, match="cpu INT8 form .* re-export with --int8 --int8-form tensorrt"):
        plan_engine("10.8.0", "int8", graphs)
    graphs["int8"].write_bytes(b"not onnx")
    with pytest.raises(ExportError, match="not a readable ONNX graph"):
        plan_engine("10.8.0", "int8", graphs)
    assert plan_engine("10.8.0", "fp32", graphs).onnx_path == graphs["fp32"]  # other precisions unaffected


def test_plan_tensorrt_10_is_strongly_typed_from_the_fp16_graph_too(tmp_path):
    from echoseg.export.tensorrt import plan_engine

    graphs = _graphs(tmp_path, "fp32", "fp16", "int8")
    plan = plan_engine("10.3.0.26", "fp16", graphs, (1, 8, 32), workspace_mb=256)
    assert plan.tensorrt_major == 10 and plan.strongly_typed
    assert plan.builder_flags == () and plan.onnx_path == graphs["fp16"]  # no deprecated FP16 builder flag
    assert plan.profile == (1, 8, 32) and plan.workspace_bytes == 256 << 20
    int8 = plan_engine("10.8.0", "int8", graphs)
    assert int8.onnx_path == graphs["int8"] and int8.builder_flags == () and int8.strongly_typed
    assert plan_engine("10.0.1", "fp32", graphs).onnx_path == graphs["fp32"]


def test_plan_tensorrt_11_is_strongly_typed_from_the_fp16_graph(tmp_path):
    from echoseg.export.tensorrt import DEFAULT_PROFILE, plan_engine

    graphs = _graphs(tmp_path, "fp32", "fp16", "int8")
    plan = plan_engine("11.0.0", "fp16", graphs)
    assert plan.strongly_typed and plan.builder_flags == () and plan.onnx_path == graphs["fp16"]
    assert plan.profile == DEFAULT_PROFILE == (1, 16, 64)
    assert plan_engine("11.1", "int8", graphs).onnx_path == graphs["int8"]
    d = plan.to_dict()
    assert d["onnx_file"] == "model.fp16.onnx" and d["profile"] == [1, 16, 64] and d["strongly_typed"] is True


def test_plan_errors_name_the_missing_graph_or_old_version(tmp_path):
    from echoseg.export.onnx import ExportError
    from echoseg.export.tensorrt import plan_engine

    only32 = _graphs(tmp_path, "fp32")
    with pytest.raises(ExportError, match="model.fp16.onnx \\(export with --fp16\\)"):
        plan_engine("11.0.0", "fp16", only32)
    with pytest.raises(ExportError, match="model.fp16.onnx"):
        plan_engine("10.2.0", "fp16", only32)  # TensorRT 10 builds FP16 from the FP16 graph too
    with pytest.raises(ExportError, match="TensorRT 8.6.1 is too old"):
        plan_engine("8.6.1", "fp16", only32)
    with pytest.raises(ExportError, match="unknown engine precision"):
        plan_engine("10.0.0", "bf16", only32)


@pytest.mark.parametrize("text,expected", [("1,16,64", (1, 16, 64)), ("8", (8, 8, 8)), (" 2, 4 ,4", (2, 4, 4)),
                                           ([1, 2, 3], (1, 2, 3))])
def test_parse_profile(text, expected):
    from echoseg.export.tensorrt import parse_profile

    assert parse_profile(text) == expected


@pytest.mark.parametrize("text,message", [("4,2,8", "1 <= MIN <= OPT <= MAX"), ("0,1,2", "1 <= MIN"),
                                          ("1,2", "three integers"), ("a,b,c", "not MIN,OPT,MAX")])
def test_parse_profile_rejects(text, message):
    from echoseg.export.onnx import ExportError
    from echoseg.export.tensorrt import parse_profile

    with pytest.raises(ExportError, match=message):
        parse_profile(text)


def test_status_without_tensorrt_says_why(no_tensorrt):
    from echoseg.export.tensorrt import tensorrt_status

    version, why = tensorrt_status()
    assert version == "" and "TensorRT is not installed" in why and "pip install tensorrt" in why


def test_build_without_tensorrt_skips_the_engine_in_one_line_and_succeeds(exported):
    from echoseg.export.manifest import read_manifest

    man = read_manifest(exported / "matae-unet")
    for sec in man["exports"]:
        assert set(sec["steps"]["engine"]) == {"skipped"}
        assert "not installed" in sec["steps"]["engine"]["skipped"]
        assert "engine" not in sec["files"]
    assert not list((exported / "matae-unet").glob("*.engine"))
    assert man["passed"] is True


def test_engine_flag_makes_missing_tensorrt_an_error(export_base, tmp_path, no_tensorrt):
    from echoseg.export.build import export_checkpoint

    lines: list[str] = []
    res = export_checkpoint(cached_checkpoint(export_base, "unet"), quick_options(tmp_path, fp16=True),
                            say=lines.append)
    assert res.ok and res.notes == [n for n in lines if "engine skipped" in n]
    assert len(res.notes) == 1 and res.notes[0].startswith("TensorRT engine skipped: TensorRT is not installed")
    res = export_checkpoint(cached_checkpoint(export_base, "unet"), quick_options(tmp_path, engine=True))
    assert not res.ok
    (err,) = res.errors
    assert "--engine asked for a TensorRT engine but TensorRT is not installed" in err
    assert (tmp_path / "unet" / "model.fp16.onnx").is_file()  # --engine implies the FP16 graph


def test_manifest_lists_files_with_sizes_and_hashes(exported):
    from echoseg.export.manifest import read_manifest

    d = exported / "unet"
    man = read_manifest(d)
    names = {f["file"] for f in man["files"]}
    assert names == {"model.onnx", "model.fp16.onnx", "model.int8.onnx", "parity.json"}
    for f in man["files"]:
        data = (d / f["file"]).read_bytes()
        assert f["bytes"] == len(data) and f["sha256"] == hashlib.sha256(data).hexdigest()
    assert man["model"]["name"] == "unet" and man["input_spec"]["height"] == 32
    assert man["profile"] == {"min": 1, "opt": 16, "max": 64}
    assert set(man["macs_per_frame"]) == {"1"} and man["macs_per_frame"]["1"] > 0
    assert man["versions"]["onnxruntime"] and man["versions"]["onnx"]
    assert man["parity_frames_source"] == "synthetic"
    parity = json.loads((d / "parity.json").read_text())
    assert parity["1"]["fp32_vs_torch"] == man["exports"][0]["parity"]["fp32_vs_torch"]
    mat = read_manifest(exported / "matae-unet")
    assert list(mat["macs_per_frame"]) == ["0.25", "0.5", "1"]
    macs = [mat["macs_per_frame"][k] for k in ("0.25", "0.5", "1")]
    assert macs == sorted(macs) and macs[0] < macs[2] / 8


def _sidecar(meta, trt="10.3.0", cc="7.5", gpu="Tesla T4"):
    from echoseg.config import EngineSidecar

    return EngineSidecar(meta=meta, tensorrt_version=trt, cuda_version="12.4", gpu_name=gpu, compute_capability=cc,
                         onnx_sha256="ab" * 32, onnx_file="model.onnx", precision="fp16", profile=(1, 16, 64),
                         build_seconds=12.5)


def test_engine_sidecar_round_trip_and_mismatch_explained(exported, tmp_path):
    import shutil

    from echoseg.artifacts import read_onnx_meta
    from echoseg.export.manifest import read_sidecar, sidecar_path, write_sidecar

    d = tmp_path / "unet"
    shutil.copytree(exported / "unet", d)
    engine = d / "model.fp16.engine"
    engine.write_bytes(b"not really an engine")
    meta = read_onnx_meta(d / "model.onnx")
    side = _sidecar(meta)
    assert write_sidecar(engine, side) == sidecar_path(engine) == d / "model.fp16.json"
    assert read_sidecar(engine) == side

    def engine_problem(engine, *here):  # what the runtime's TrtSession and auto check (backends/tensorrt.py)
        return read_sidecar(engine).compat_problem(*here, engine_path=str(engine))

    assert engine_problem(engine, "10.3.0", "7.5", "Tesla T4") is None  # same release, same GPU kind
    assert engine_problem(engine, "10.3.0.26", "7.5", "Tesla T4") is None  # a build number beyond x.y.z
    patch = engine_problem(engine, "10.3.1", "7.5", "Tesla T4")  # TensorRT refuses an engine of 10.3.0 here
    assert "built with TensorRT 10.3.0 but this machine has 10.3.1" in patch and "\n" not in patch
    assert "exact TensorRT release" in patch
    version = engine_problem(engine, "11.0.0", "7.5")
    assert "built with TensorRT 10.3.0 but this machine has 11.0.0" in version
    assert "rebuild it here with: echo-export build <checkpoint> --fp16 --engine" in version
    gpu = engine_problem(engine, "10.3.0", "8.9", "NVIDIA L4")
    assert "built for Tesla T4 (compute capability 7.5) but this GPU is NVIDIA L4 (8.9)" in gpu
    engine.with_suffix(".json").unlink()
    from echoseg.export.onnx import ExportError

    with pytest.raises(ExportError, match="no sidecar model.fp16.json"):
        read_sidecar(engine)


def _tensorrt_with_gpu() -> str:
    if importlib.util.find_spec("tensorrt") is None:
        return "TensorRT is not installed"
    from echoseg.export.tensorrt import tensorrt_status

    return tensorrt_status()[1]


@pytest.mark.trt
@pytest.mark.skipif(bool(_tensorrt_with_gpu()), reason=_tensorrt_with_gpu() or "TensorRT present")
def test_tensorrt_engine_builds_loads_and_reuses_its_timing_cache(export_base, tmp_path):
    from echoseg.export.build import export_checkpoint
    from echoseg.backends.tensorrt import TrtSession, engine_problem
    from echoseg.export.manifest import read_manifest, read_sidecar
    from echoseg.export.tensorrt import gpu_identity

    res = export_checkpoint(cached_checkpoint(export_base, "unet"),
                            quick_options(tmp_path, engine=True, profile=(1, 4, 8)))
    assert res.ok, res.errors
    engine = tmp_path / "unet" / "model.fp16.engine"
    side = read_sidecar(engine)
    assert side.profile == (1, 4, 8) and side.precision == "fp16" and side.build_seconds > 0
    gpu = gpu_identity()
    assert side.compute_capability == gpu["compute_capability"] and side.gpu_name == gpu["gpu_name"]
    assert side.compat_problem(side.tensorrt_version, gpu["compute_capability"], gpu["gpu_name"]) is None
    assert engine_problem(engine) is None  # what auto asks of it here
    loaded = TrtSession(engine)  # deserialized as echo-run does
    try:
        eng = loaded._engine
        names = [eng.get_tensor_name(i) for i in range(eng.num_io_tensors)]
        assert names == ["frames", "logits"]
        lo, opt, hi = eng.get_tensor_profile_shape("frames", 0)
        assert (lo[0], opt[0], hi[0]) == (1, 4, 8) and tuple(hi[1:]) == (3, 32, 32)
    finally:
        loaded.close()
    from echoseg.export.tensorrt import timing_cache_for

    cache = timing_cache_for(tmp_path / "timing.cache", gpu, side.tensorrt_version)
    assert cache.is_file() and cache.stat().st_size > 0
    step = read_manifest(tmp_path / "unet")["exports"][0]["steps"]["engine"]
    assert step["tensorrt_version"] == side.tensorrt_version and step["timing_cache_reused"] is False
    again = export_checkpoint(cached_checkpoint(export_base, "unet"),
                              quick_options(tmp_path, engine=True, profile=(1, 4, 8)))
    assert again.ok
    assert read_manifest(tmp_path / "unet")["exports"][0]["steps"]["engine"]["timing_cache_reused"] is True
    from echoseg.export.parity import compare
    from echoseg.artifacts import preprocess

    sess = TrtSession(engine)
    frames, _ = synthetic_batch(42, videos=1, frames=6)
    x = preprocess(frames, side.meta)
    r = compare(onnx_logits(tmp_path / "unet" / "model.onnx", x), sess.run(x))
    sess.close()
    assert r["mask_dice"] >= 0.99 and np.isfinite(r["max_abs_logit"])
