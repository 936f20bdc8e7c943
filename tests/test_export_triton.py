"""Triton model repository: one model per kept graph, config.pbtxt content."""

from __future__ import annotations

import json
import re
import shutil

import pytest
from test_export_fixtures import export_base, exported, no_tensorrt  # noqa: F401


def _field(text: str, key: str) -> str:
    m = re.search(rf"^{key}: (.+)$", text, re.M)
    assert m, f"{key} missing in\n{text}"
    return m.group(1)


def _echoseg_param(text: str) -> dict:
    m = re.search(r'key: "echoseg"\s*\n\s*value: \{ string_value: "((?:[^"\\]|\\.)*)" \}', text)
    assert m, text
    return json.loads(m.group(1).replace('\\"', '"').replace("\\\\", "\\"))


@pytest.fixture()
def with_engine(exported, tmp_path):
    """A copy of the exports where unet also has a (fake) engine with its sidecar."""
    from echoseg.config import EngineSidecar
    from echoseg.atomic import write_json
    from echoseg.artifacts import read_onnx_meta
    from echoseg.export.manifest import read_manifest, write_sidecar

    out = tmp_path / "exports"
    shutil.copytree(exported, out)
    d = out / "unet"
    (d / "model.fp16.engine").write_bytes(b"plan bytes")
    meta = read_onnx_meta(d / "model.onnx")
    write_sidecar(d / "model.fp16.engine", EngineSidecar(
        meta=meta, tensorrt_version="10.3.0", cuda_version="12.4", gpu_name="Tesla T4", compute_capability="7.5",
        onnx_sha256="0" * 64, onnx_file="model.onnx", precision="fp16", profile=(2, 8, 32), build_seconds=3.0))
    man = read_manifest(d)
    man["exports"][0]["files"]["engine"] = "model.fp16.engine"
    write_json(d / "manifest.json", man)
    return out


def test_repository_has_one_model_per_graph(with_engine, tmp_path):
    from echoseg.export.triton import export_dirs_under, write_repository

    dirs = export_dirs_under(with_engine)
    assert [d.name for d in dirs] == ["matae-unet", "unet"]
    repo = tmp_path / "repo"
    models = write_repository(dirs, repo)
    names = sorted(m.name for m in models)
    assert names == sorted(["matae-unet", "matae-unet_fp16", "matae-unet_int8", "matae-unet_g0_5",
                            "matae-unet_g0_5_fp16", "matae-unet_g0_5_int8",
                            "unet", "unet_fp16", "unet_int8", "unet_trt_fp16"])
    for m in models:
        version = repo / m.name / "1"
        files = [p.name for p in version.iterdir()]
        assert files == (["model.plan"] if m.platform == "tensorrt_plan" else ["model.onnx"])
        assert (version / files[0]).read_bytes() == m.source.read_bytes()
        assert (repo / m.name / "config.pbtxt").read_text() == m.config


def test_onnx_config_content(with_engine, tmp_path):
    from echoseg.artifacts import read_onnx_meta
    from echoseg.export.triton import write_repository

    write_repository([with_engine / "matae-unet"], tmp_path / "repo")
    text = (tmp_path / "repo" / "matae-unet_g0_5_int8" / "config.pbtxt").read_text()
    assert _field(text, "name") == '"matae-unet_g0_5_int8"'
    assert _field(text, "platform") == '"onnxruntime_onnx"'
    assert _field(text, "max_batch_size") == "64"  # the export's profile max
    assert re.search(r'input \[\s*\{\s*name: "frames"\s*data_type: TYPE_FP32\s*dims: \[ 3, 32, 32 \]', text)
    assert re.search(r'output \[\s*\{\s*name: "logits"\s*data_type: TYPE_FP32\s*dims: \[ 1, 32, 32 \]', text)
    assert re.search(r"dynamic_batching \{\s*preferred_batch_size: \[ 16, 64 \]\s*max_queue_delay_microseconds: \d+", text)
    assert "KIND_GPU" not in text
    meta = _echoseg_param(text)
    assert meta == read_onnx_meta(with_engine / "matae-unet" / "model.g0.5.int8.onnx").to_dict()
    assert meta["granularity"] == 0.5


def test_engine_config_takes_the_engine_profile(with_engine, tmp_path):
    from echoseg.export.triton import write_repository

    write_repository([with_engine / "unet"], tmp_path / "repo")
    text = (tmp_path / "repo" / "unet_trt_fp16" / "config.pbtxt").read_text()
    assert _field(text, "platform") == '"tensorrt_plan"'
    assert _field(text, "max_batch_size") == "32"
    assert "preferred_batch_size: [ 8, 32 ]" in text
    assert re.search(r"instance_group \[\s*\{\s*count: 1\s*kind: KIND_GPU", text)
    assert 'key: "tensorrt_version"' in text and 'string_value: "10.3.0"' in text
    assert _echoseg_param(text)["model"]["name"] == "unet"


def test_rejected_graphs_are_left_out_and_bad_dirs_reported(with_engine, tmp_path):
    from echoseg.atomic import write_json
    from echoseg.export.manifest import read_manifest
    from echoseg.export.triton import write_repository

    d = with_engine / "unet"
    (d / "model.int8.onnx").rename(d / "model.int8.rejected.onnx")
    man = read_manifest(d)
    man["exports"][0]["files"]["int8"] = "model.int8.rejected.onnx"
    write_json(d / "manifest.json", man)
    empty = tmp_path / "not-an-export"
    empty.mkdir()
    errors: list[str] = []
    models = write_repository([empty, d], tmp_path / "repo", errors)
    assert "unet_int8" not in {m.name for m in models} and "unet" in {m.name for m in models}
    assert len(errors) == 1 and "no manifest.json" in errors[0]
    from echoseg.export.onnx import ExportError

    with pytest.raises(ExportError, match="taken by another export"):
        write_repository([d, d], tmp_path / "repo2")
