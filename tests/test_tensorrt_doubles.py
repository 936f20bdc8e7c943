"""build_engine and TrtSession against contract doubles of tensorrt and pycuda (runs in CI).

The doubles (tests/trt_doubles.py) follow NVIDIA's documented Python API and refuse what real
TensorRT refuses: no profile for a dynamic batch, precision flags on a strongly typed network,
a timing cache or an engine from another GPU or version. So dropping the profile, the strongly
typed flag or the per-GPU timing cache makes these tests fail.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import trt_doubles
from test_export_fixtures import cached_checkpoint, export_base, onnx_logits, quick_options  # noqa: F401
from tiny_onnx import tiny_meta, write_tiny_onnx

from echoseg.artifacts import read_sidecar, write_sidecar
from echoseg.config import EngineSidecar

VERSIONS = ["10.13.0", "11.0.0"]


def _graphs(d: Path) -> dict[str, Path]:
    return {p: write_tiny_onnx(d / n, tiny_meta()) for p, n in
            (("fp32", "model.onnx"), ("fp16", "model.fp16.onnx"), ("int8", "model.int8.onnx"))}


def _build(d: Path, version: str, profile=(1, 16, 64), cache: Path | None = None):
    from echoseg.export.tensorrt import build_engine, plan_engine

    plan = plan_engine(version, "fp16", _graphs(d), profile, workspace_mb=64)
    engine = d / "model.fp16.engine"
    built = build_engine(plan, engine, cache)
    side = EngineSidecar(meta=tiny_meta(), tensorrt_version=built["tensorrt_version"],
                         cuda_version=built["cuda_version"], gpu_name=built["gpu_name"],
                         compute_capability=built["compute_capability"], onnx_sha256="",
                         onnx_file=plan.onnx_path.name, precision=plan.precision, profile=plan.profile,
                         build_seconds=built["build_seconds"], strongly_typed=plan.strongly_typed)
    write_sidecar(engine, side)
    return plan, built, engine


@pytest.mark.parametrize("version", VERSIONS)
def test_one_strongly_typed_fp16_build_from_the_fp16_graph(tmp_path, monkeypatch, version):
    fake = trt_doubles.install(monkeypatch, version)
    plan, built, engine = _build(tmp_path, version, (2, 8, 32))
    assert plan.strongly_typed and plan.builder_flags == ()
    (flags,) = fake.called("create_network")
    assert flags & (1 << int(fake.trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    assert fake.called("parse_from_file") == [str(tmp_path / "model.fp16.onnx")]
    assert fake.called("set_flag") == []  # no FP16 builder flag: the graph's types decide
    assert fake.called("set_shape") == [("frames", (2, 3, 112, 112), (8, 3, 112, 112), (32, 3, 112, 112))]
    assert fake.called("set_memory_pool_limit") == [(fake.trt.MemoryPoolType.WORKSPACE, 64 << 20)]
    record = json.loads(engine.read_bytes())
    assert record["strongly_typed"] is True and record["profile"]["frames"][2] == [32, 3, 112, 112]
    assert (built["gpu_name"], built["compute_capability"]) == ("Tesla T4", "7.5")  # from the CUDA device
    assert read_sidecar(engine).gpu_name == "Tesla T4"


def test_without_a_profile_a_dynamic_batch_does_not_build(tmp_path, monkeypatch):
    """What the doubles enforce, so dropping the profile from build_engine would fail the test above."""
    fake = trt_doubles.install(monkeypatch, "10.13.0")
    trt = fake.trt
    builder = trt.Builder(trt.Logger())
    net = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    assert trt.OnnxParser(net, trt.Logger()).parse_from_file(str(write_tiny_onnx(tmp_path / "m.onnx")))
    assert builder.build_serialized_network(net, builder.create_builder_config()) is None
    config = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.FP16)
    prof = builder.create_optimization_profile()
    prof.set_shape("frames", (1, 3, 112, 112), (4, 3, 112, 112), (8, 3, 112, 112))
    config.add_optimization_profile(prof)
    assert builder.build_serialized_network(net, config) is None  # precision flag on a strongly typed network


def test_tensorrt_11_has_no_fp16_builder_flag(monkeypatch):
    fake = trt_doubles.install(monkeypatch, "11.0.0")
    assert not hasattr(fake.trt.BuilderFlag, "FP16")
    assert hasattr(trt_doubles.install(monkeypatch, "10.13.0").trt.BuilderFlag, "FP16")


def test_timing_cache_is_kept_per_gpu_model_and_tensorrt_version(tmp_path, monkeypatch):
    base = tmp_path / "timing.cache"
    trt_doubles.install(monkeypatch, "10.13.0", "Tesla T4", (7, 5))
    _, first, _ = _build(tmp_path / "a", "10.13.0", cache=base)
    _, again, _ = _build(tmp_path / "b", "10.13.0", cache=base)
    assert first["timing_cache"] == again["timing_cache"] and Path(first["timing_cache"]).is_file()
    assert Path(first["timing_cache"]).name == "timing.tesla-t4.sm75.trt10.13.cache"
    assert (first["timing_cache_reused"], again["timing_cache_reused"]) == (False, True)
    fake = trt_doubles.install(monkeypatch, "10.13.0", "NVIDIA H200", (9, 0))
    _, other, _ = _build(tmp_path / "c", "10.13.0", cache=base)
    assert other["timing_cache"] != first["timing_cache"] and other["timing_cache_reused"] is False
    assert all(ignore is False for _, ignore in fake.called("set_timing_cache"))  # mismatches never ignored
    assert not base.exists()


def _claim(engine: Path, **fields) -> None:
    """Rewrite the engine's sidecar to claim ``fields`` (so the sidecar check passes and TensorRT itself decides)."""
    import dataclasses

    write_sidecar(engine, dataclasses.replace(read_sidecar(engine), **fields))


def test_trt_session_loads_its_engine_and_tensorrt_refuses_a_foreign_one(tmp_path, monkeypatch):
    from echoseg.backends.session import SessionError
    from echoseg.backends.tensorrt import TrtSession

    trt_doubles.install(monkeypatch, "10.13.0")
    _, _, engine = _build(tmp_path, "10.13.0", (1, 4, 8))
    sess = TrtSession(engine)
    eng = sess._engine
    assert [eng.get_tensor_name(i) for i in range(eng.num_io_tensors)] == ["frames", "logits"]
    assert [s[0] for s in eng.get_tensor_profile_shape("frames", 0)] == [1, 4, 8]
    sess.close()
    trt_doubles.install(monkeypatch, "10.13.0", "NVIDIA L4", (8, 9))
    with pytest.raises(SessionError, match="built for Tesla T4"):  # the sidecar says so first
        TrtSession(engine)
    _claim(engine, gpu_name="NVIDIA L4", compute_capability="8.9")  # a sidecar that lies: TensorRT refuses
    with pytest.raises(SessionError, match="could not deserialize"):
        TrtSession(engine)


@pytest.mark.parametrize("version", VERSIONS)
def test_trt_session_runs_pads_splits_and_frees_everything(tmp_path, monkeypatch, version):
    from echoseg.backends.choose import open_session
    from echoseg.backends.session import SessionError

    fake = trt_doubles.install(monkeypatch, version)
    _, _, engine = _build(tmp_path, version, (2, 4, 8))
    sess = open_session(engine, "tensorrt")
    assert (sess.info.backend, sess.info.min_batch, sess.info.max_batch) == ("tensorrt", 2, 8)
    assert sess.info.on_gpu and fake.context_stack == []
    rng = np.random.default_rng(0)
    for n in (1, 5, 8, 19):  # below the minimum (padded), inside, at, above the maximum (split)
        x = rng.normal(size=(n, 3, 112, 112)).astype(np.float32)
        y = sess.run(x)
        assert y.shape == (n, 1, 112, 112) and y.dtype == np.float32
        np.testing.assert_allclose(y, x.mean(axis=1, keepdims=True), rtol=1e-5, atol=1e-6)
    assert ("frames", (2, 3, 112, 112)) in fake.called("set_input_shape")  # n=1 padded to the profile's min
    with pytest.raises(SessionError, match="N >= 1"):
        sess.run(np.zeros((0, 3, 112, 112), np.float32))
    with pytest.raises(SessionError, match="engine takes"):
        sess.run(np.zeros((2, 3, 64, 64), np.float32))
    assert fake.memory and fake.host_live
    sess.close()
    assert fake.memory == {} and fake.host_live == set()  # device and pinned buffers freed now
    assert fake.context_stack == [] and fake.detached == 1
    sess.close()  # twice is harmless
    with pytest.raises(SessionError, match="closed"):
        sess.run(np.zeros((2, 3, 112, 112), np.float32))


def test_auto_falls_back_to_onnx_when_the_engine_does_not_fit_this_gpu(tmp_path, monkeypatch):
    from echoseg.backends.choose import choose

    trt_doubles.install(monkeypatch, "10.13.0", "Tesla T4", (7, 5))
    _build(tmp_path, "10.13.0")
    assert choose(tmp_path, "auto").backend == "tensorrt"
    trt_doubles.install(monkeypatch, "10.13.0", "NVIDIA H200", (9, 0))
    choice = choose(tmp_path, "auto")
    assert choice.backend == "onnxruntime" and choice.path.name == "model.onnx"
    assert "built for Tesla T4 (compute capability 7.5) but this GPU is NVIDIA H200 (9.0)" in choice.reason
    trt_doubles.install(monkeypatch, "11.0.0", "Tesla T4", (7, 5))
    assert "built with TensorRT 10.13.0 but this machine has 11.0.0" in choose(tmp_path, "auto").reason


def test_export_gates_the_engine_itself_against_fp32(export_base, tmp_path, monkeypatch):
    """echo-export build --fp16 with TensorRT present: the built engine is run (through the runtime's
    TrtSession) on the parity frames; one that misses the gate is renamed *.rejected.* with its
    sidecar and the export fails; one that agrees is kept with its report in parity.json."""
    from echoseg.export.build import export_checkpoint
    from echoseg.backends import tensorrt as runtime_trt

    ckpt = cached_checkpoint(export_base, "unet")
    trt_doubles.install(monkeypatch, "10.13.0")
    # The double's engine returns the channel mean of its input: far from the model's logits.
    res = export_checkpoint(ckpt, quick_options(tmp_path / "bad", fp16=True))
    assert not res.ok and any("engine" in e and "vs FP32" in e for e in res.errors)
    d = tmp_path / "bad" / "unet"
    assert (d / "model.fp16.rejected.engine").is_file() and (d / "model.fp16.rejected.json").is_file()
    assert not (d / "model.fp16.engine").exists()
    # An engine that computes what the FP32 graph computes passes and is kept.
    fp32 = {}

    def faithful(self, batch):
        return onnx_logits(fp32["path"], batch)

    real_init = runtime_trt.TrtSession.__init__

    def init(self, path, device=0):
        real_init(self, path, device)
        fp32["path"] = Path(path).with_name("model.onnx")

    monkeypatch.setattr(runtime_trt.TrtSession, "__init__", init)
    monkeypatch.setattr(runtime_trt.TrtSession, "run", faithful)
    res = export_checkpoint(ckpt, quick_options(tmp_path / "good", fp16=True))
    assert res.ok, res.errors
    d = tmp_path / "good" / "unet"
    assert (d / "model.fp16.engine").is_file()
    report = json.loads((d / "parity.json").read_text())["1"]["engine_vs_fp32"]
    assert report["mask_dice"] == pytest.approx(1.0)


def test_a_patch_level_tensorrt_mismatch_falls_back_to_onnx(tmp_path, monkeypatch):
    """TensorRT 10.13.1 refuses an engine of 10.13.0 (only the exact release loads it): auto must pass
    it over for the ONNX graph, with the reason in one line, instead of picking it and failing."""
    from echoseg.backends.choose import choose

    trt_doubles.install(monkeypatch, "10.13.0")
    _build(tmp_path, "10.13.0")
    assert choose(tmp_path, "auto").backend == "tensorrt"
    trt_doubles.install(monkeypatch, "10.13.1")
    from echoseg.backends.session import SessionError
    from echoseg.backends.tensorrt import TrtSession

    engine = tmp_path / "model.fp16.engine"
    with pytest.raises(SessionError, match="built with TensorRT 10.13.0 but this machine has 10.13.1"):
        TrtSession(engine)
    _claim(engine, tensorrt_version="10.13.1")
    with pytest.raises(SessionError, match="could not deserialize"):  # what TensorRT itself does with it
        TrtSession(engine)
    _claim(engine, tensorrt_version="10.13.0")
    choice = choose(tmp_path, "auto")
    assert choice.backend == "onnxruntime" and choice.path.name == "model.onnx"
    assert "built with TensorRT 10.13.0 but this machine has 10.13.1" in choice.reason
    assert "\n" not in choice.reason


def test_echo_run_falls_back_from_a_stale_engine_and_says_why(tmp_path, monkeypatch, caplog):
    import logging

    from typer.testing import CliRunner

    from echoseg.data.synthetic import make_video
    from echoseg.data.video import write_video
    from echoseg.runtime.cli import app

    model_dir = tmp_path / "exp"
    trt_doubles.install(monkeypatch, "10.13.0")
    _build(model_dir, "10.13.0")
    v = make_video(3, frames=16)
    clip = write_video(tmp_path / "clip.avi", v.frames, v.fps)
    trt_doubles.install(monkeypatch, "10.13.1")
    with caplog.at_level(logging.WARNING, logger="echoseg.backends.tensorrt"):
        res = CliRunner().invoke(app, [str(clip), "--model", str(model_dir), "--out", str(tmp_path / "out"),
                                       "--no-video"])
    assert res.exit_code == 0, res.output
    (summary,) = list((tmp_path / "out").glob("*/summary.json"))
    s = json.loads(summary.read_text())
    assert s["backend"] == "onnxruntime"
    assert "built with TensorRT 10.13.0 but this machine has 10.13.1" in s["backend_reason"]
    said = [r.getMessage() for r in caplog.records if "10.13.1" in r.getMessage()]
    assert len(said) == 1 and "\n" not in said[0] and "falls back" in said[0]


def _faithful_engines(monkeypatch) -> None:
    """Engines that compute what the graph they were built from computes (the double's own engine
    returns the channel mean, which no parity gate passes)."""
    from echoseg.artifacts import read_sidecar as sidecar_of
    from echoseg.backends import tensorrt as runtime_trt

    real_init = runtime_trt.TrtSession.__init__

    def init(self, path, device=0):
        real_init(self, path, device)
        self._graph = Path(path).with_name(sidecar_of(path).onnx_file)

    monkeypatch.setattr(runtime_trt.TrtSession, "__init__", init)
    monkeypatch.setattr(runtime_trt.TrtSession, "run", lambda self, batch: onnx_logits(self._graph, batch))


def test_export_int8_builds_the_int8_engine_from_the_tensorrt_form(export_base, tmp_path, monkeypatch):
    """echo-export build --int8 --int8-form tensorrt with TensorRT present: model.int8.engine is built
    from model.int8.onnx (strongly typed, no precision flag), gated at INT8 against FP32, and described
    by its own sidecar; the cpu form gets a one-line note instead (TensorRT refuses its zero points)."""
    from echoseg.export.build import export_checkpoint

    ckpt = cached_checkpoint(export_base, "unet")
    fake = trt_doubles.install(monkeypatch, "10.13.0")
    _faithful_engines(monkeypatch)
    res = export_checkpoint(ckpt, quick_options(tmp_path / "t", int8=True, int8_form="tensorrt"))
    assert res.ok, res.errors
    d = tmp_path / "t" / "unet"
    assert fake.called("parse_from_file") == [str(d / "model.int8.onnx")]
    assert fake.called("set_flag") == []
    (flags,) = fake.called("create_network")
    assert flags & (1 << int(fake.trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    side = read_sidecar(d / "model.int8.engine")
    assert (side.precision, side.onnx_file, side.tensorrt_version) == ("int8", "model.int8.onnx", "10.13.0")
    man = json.loads((d / "manifest.json").read_text())["exports"][0]
    assert man["files"]["engine_int8"] == "model.int8.engine" and "engine" not in man["files"]  # no --fp16
    gate = json.loads((d / "parity.json").read_text())["1"]["engine_int8_vs_fp32"]
    assert gate["gate"] == {"mask_dice": 0.98} and gate["mask_dice"] >= 0.98
    said: list[str] = []
    cpu = export_checkpoint(ckpt, quick_options(tmp_path / "c", int8=True), say=said.append)
    assert cpu.ok, cpu.errors
    assert not (tmp_path / "c" / "unet" / "model.int8.engine").exists()
    (note,) = [n for n in cpu.notes if "INT8 engine skipped" in n]
    assert "--int8-form tensorrt" in note and note in said and "\n" not in note


def test_the_tensorrt_parser_double_refuses_the_cpu_int8_form(export_base, tmp_path, monkeypatch):
    """What makes the note above necessary: TensorRT's parser takes zero points of 0 only."""
    from echoseg.export.build import export_checkpoint

    res = export_checkpoint(cached_checkpoint(export_base, "unet"), quick_options(tmp_path, int8=True))
    assert res.ok, res.errors
    fake = trt_doubles.install(monkeypatch, "10.13.0")
    trt = fake.trt
    net = trt.Builder(trt.Logger()).create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(net, trt.Logger())
    assert not parser.parse_from_file(str(tmp_path / "unet" / "model.int8.onnx"))
    assert "zeroPt must be all zeros" in parser.get_error(0).desc()
