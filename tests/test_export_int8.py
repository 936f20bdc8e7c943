"""INT8 QDQ graph in both forms (cpu, tensorrt): explicit quantization, calibration data, parity."""

from __future__ import annotations

import numpy as np
import pytest
from test_export_fixtures import (cached_checkpoint, export_base, exported, no_tensorrt,  # noqa: F401
                                  onnx_logits, quick_options, synthetic_batch)


def _check_qdq(path, fp32_path, form: str) -> None:
    """The INT8 graph at ``path`` is explicit QDQ in ``form`` (export/int8.py), thin layers in float."""
    import onnx
    from onnx import TensorProto, numpy_helper

    from echoseg.export.int8 import MIN_INT8_CHANNELS, form_of
    from echoseg.artifacts import read_onnx_meta

    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    assert form_of(proto) == form
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("QuantizeLinear") > 10 and ops.count("DequantizeLinear") > 20
    inits = {i.name: i for i in proto.graph.initializer}
    producers = {o: n for n in proto.graph.node for o in n.output}
    convs = [n for n in proto.graph.node if n.op_type in ("Conv", "ConvTranspose")]
    assert len(convs) == 23
    assert convs[-1].output[0] == "logits" or producers["logits"].op_type == "DequantizeLinear"
    quantized = 0
    for conv in convs:
        if conv.input[1] in inits:  # left in float: only a thin layer (width 8: level 1, the 3-channel input, the head)
            assert min(inits[conv.input[1]].dims[:2]) < MIN_INT8_CHANNELS
            assert inits[conv.input[1]].data_type == TensorProto.FLOAT
            continue
        quantized += 1
        # activations enter through Q/DQ, weights are INT8 initializers behind a DequantizeLinear
        assert producers[conv.input[0]].op_type == "DequantizeLinear"
        wdq = producers[conv.input[1]]
        assert wdq.op_type == "DequantizeLinear"
        w = inits[wdq.input[0]]
        assert w.data_type == TensorProto.INT8 and not numpy_helper.to_array(inits[wdq.input[2]]).any()
        if len(conv.input) > 2:  # biases stay float (TensorRT fuses them in float)
            assert inits[conv.input[2]].data_type == TensorProto.FLOAT
        scale = numpy_helper.to_array(inits[wdq.input[1]])
        if conv.op_type == "Conv":
            assert scale.size == w.dims[0]  # per output channel (the 1-channel logit head has one scale)
        elif form == "tensorrt":  # TensorRT takes no per-channel scale on a deconvolution's axis 1
            assert scale.size == 1 and not any(a.name == "axis" for a in wdq.attribute)
        else:  # cpu: per output channel, which a ConvTranspose weight holds on axis 1
            assert [a.i for a in wdq.attribute if a.name == "axis"] == [1] and scale.size == w.dims[1]
    fp32 = onnx.load(str(fp32_path))
    dims = {i.name: i.dims for i in fp32.graph.initializer}
    wide = [n for n in fp32.graph.node if n.op_type in ("Conv", "ConvTranspose") and min(dims[n.input[1]][:2]) >= 16]
    assert quantized == len(wide) >= 10  # every layer of 16 channels or more is INT8
    activations = [inits[n.input[2]] for n in proto.graph.node
                   if n.op_type == "QuantizeLinear" and len(n.input) > 2 and n.input[0] not in inits]
    assert activations
    if form == "tensorrt":  # symmetric: every zero point is 0 and signed (TensorRT needs that)
        for node in proto.graph.node:
            if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2:
                zp = inits[node.input[2]]
                assert zp.data_type == TensorProto.INT8 and not numpy_helper.to_array(zp).any()
        assert ops.count("Relu") == sum(n.op_type == "Relu" for n in fp32.graph.node)
    else:  # uint8 activations; a ReLU after a quantized convolution folds into its quantizer
        assert all(zp.data_type == TensorProto.UINT8 for zp in activations)
        assert ops.count("Relu") < sum(n.op_type == "Relu" for n in fp32.graph.node) // 2
    assert read_onnx_meta(path) == read_onnx_meta(fp32_path)
    assert path.stat().st_size < 0.5 * fp32_path.stat().st_size


def test_int8_graph_is_explicit_qdq_in_the_cpu_form_by_default(exported):
    from echoseg.export.manifest import read_manifest

    d = exported / "matae-unet"
    _check_qdq(d / "model.int8.onnx", d / "model.onnx", "cpu")
    sec = read_manifest(d)["exports"][0]
    assert sec["steps"]["int8"]["form"] == "cpu" and "uint8" in sec["steps"]["int8"]["format"]
    ms = sec["parity"]["int8_vs_fp32"]["onnxruntime_latency_ms_b1"]
    assert set(ms) == {"fp32", "int8"} and all(v > 0 for v in ms.values())


def test_int8_tensorrt_form_is_signed_symmetric_and_keeps_parity(exported, tmp_path):
    from echoseg.artifacts import preprocess, read_onnx_meta
    from echoseg.export.int8 import quantize_int8
    from echoseg.export.parity import compare

    d = exported / "matae-unet"
    meta = read_onnx_meta(d / "model.onnx")
    frames, _ = synthetic_batch(903, videos=2, frames=12)
    x = preprocess(frames, meta)
    out = tmp_path / "model.int8.onnx"
    info = quantize_int8(d / "model.onnx", out, x[:16], meta, form="tensorrt")
    assert info.form == "tensorrt" and info.to_dict()["form"] == "tensorrt"
    _check_qdq(out, d / "model.onnx", "tensorrt")
    assert compare(onnx_logits(d / "model.onnx", x[16:]), onnx_logits(out, x[16:]))["mask_dice"] >= 0.98


def test_int8_parity_both_models(exported, export_base):
    from echoseg.export.manifest import read_manifest
    from echoseg.export.parity import compare
    from echoseg.artifacts import preprocess
    from echoseg.models.checkpoint import load_checkpoint

    for name in ("unet", "matae-unet"):
        man = read_manifest(exported / name)
        for sec in man["exports"]:
            rep = sec["parity"]["int8_vs_fp32"]
            assert rep["passed"] and rep["mask_dice"] >= 0.98 and rep["lv_area_ref_px"] > 10
            assert sec["steps"]["int8"]["calib_frames"] == 24 and sec["steps"]["int8"]["calib_source"] == "synthetic"
        ckpt = load_checkpoint(cached_checkpoint(export_base, name))
        frames, _ = synthetic_batch(901, videos=1, frames=8)
        x = preprocess(frames, ckpt.meta())
        r = compare(onnx_logits(exported / name / "model.onnx", x), onnx_logits(exported / name / "model.int8.onnx", x))
        assert r["mask_dice"] >= 0.98
        assert r["max_abs_logit"] > 1e-4  # quantized: not the FP32 graph in disguise


def test_calibration_and_parity_frames_come_from_the_checkpoint_data(synth_dir):
    from echoseg.config import InputSpec, ModelConfig, TrainConfig
    from echoseg.export.frames import CALIB_SEED, PARITY_SEED, checkpoint_frames
    from echoseg.models.checkpoint import Checkpoint

    spec = InputSpec(height=32, width=32)
    with_data = Checkpoint(model=ModelConfig(name="unet", width=8), input_spec=spec, state_dict={},
                           train_config=TrainConfig(data=str(synth_dir)))
    frames, source = checkpoint_frames(with_data, "train", 6, CALIB_SEED)
    assert source == f"train split of {synth_dir}"
    assert frames.shape == (6, 32, 32, 3) and frames.dtype == np.uint8 and frames.std() > 5
    val, vsource = checkpoint_frames(with_data, "val", 4, PARITY_SEED)
    assert vsource.startswith("val split of") and len(val) >= 1

    no_data = Checkpoint(model=ModelConfig(name="unet", width=8), input_spec=spec, state_dict={},
                         train_config=TrainConfig(data=str(synth_dir / "gone")))
    a, src_a = checkpoint_frames(no_data, "train", 30, CALIB_SEED)
    b, _ = checkpoint_frames(no_data, "train", 30, CALIB_SEED)
    c, _ = checkpoint_frames(no_data, "val", 30, PARITY_SEED)
    assert src_a == "synthetic" and a.shape == (30, 32, 32, 3)
    assert np.array_equal(a, b)  # deterministic
    assert not np.array_equal(a, c)  # parity never reuses the calibration frames


def test_frame_reader_feeds_every_frame_once_then_rewinds():
    from echoseg.export.int8 import frame_reader

    x = np.arange(21 * 3 * 2 * 2, dtype=np.float32).reshape(21, 3, 2, 2)
    reader = frame_reader(x, batch_size=8)
    for _ in range(2):
        chunks = []
        while (item := reader.get_next()) is not None:
            chunks.append(item["frames"])
        assert [len(c) for c in chunks] == [8, 8, 5]
        assert np.array_equal(np.concatenate(chunks), x)
        reader.rewind()


def test_int8_gate_miss_rejects_the_graph(export_base, tmp_path, monkeypatch, no_tensorrt):
    from echoseg.export import parity
    from echoseg.export.build import export_checkpoint
    from echoseg.export.manifest import read_manifest

    monkeypatch.setitem(parity.GATES, "int8", {"mask_dice": 1.01})
    res = export_checkpoint(cached_checkpoint(export_base, "unet"), quick_options(tmp_path, int8=True))
    (err,) = res.errors
    assert "model.int8.rejected.onnx vs FP32" in err and "mask agreement 0.9" in err and "LV area error" in err
    d = tmp_path / "unet"
    assert (d / "model.int8.rejected.onnx").is_file() and not (d / "model.int8.onnx").exists()
    man = read_manifest(d)
    assert man["passed"] is False
    assert man["exports"][0]["parity"]["int8_vs_fp32"]["passed"] is False


def test_exported_graphs_declare_only_the_opset_domains_they_use(exported):
    """INT8 (both forms) and FP16 graphs: no quantizer leftovers such as ai.onnx.training,
    com.microsoft.experimental or org.pytorch.aten; every import is used by a node."""
    import onnx

    from echoseg.export.domains import unused_domains, used_domains
    from tiny_onnx import EXPORT_IR_VERSION

    graphs = sorted(p for name in ("unet", "matae-unet") for p in (exported / name).glob("model*.onnx"))
    assert {p.name for p in graphs} >= {"model.onnx", "model.fp16.onnx", "model.int8.onnx", "model.g0.5.int8.onnx"}
    for p in graphs:
        proto = onnx.load(str(p))
        declared = {o.domain for o in proto.opset_import}
        assert unused_domains(proto) == [], p.name
        fp32 = onnx.load(str(p.parent / (p.name.split(".fp16")[0].split(".int8")[0].removesuffix(".onnx") + ".onnx")))
        assert proto.ir_version == fp32.ir_version, (p.name, proto.ir_version, fp32.ir_version)  # converters keep it
        assert proto.ir_version >= EXPORT_IR_VERSION  # test-made graphs are never newer than an export
        assert declared - {"", "ai.onnx"} <= used_domains(proto), (p.name, declared)


def test_quantizer_leftovers_are_pruned_and_the_check_names_them(exported, tmp_path):
    import onnx

    from echoseg.artifacts import preprocess, read_onnx_meta
    from echoseg.export.domains import check_domains, prune_domains
    from echoseg.export.int8 import quantize_int8
    from echoseg.export.onnx import ExportError

    d = exported / "unet"
    meta = read_onnx_meta(d / "model.onnx")
    frames, _ = synthetic_batch(904, videos=1, frames=8)
    out = tmp_path / "model.int8.onnx"
    quantize_int8(d / "model.onnx", out, preprocess(frames, meta), meta, form="tensorrt")
    proto = onnx.load(str(out))
    assert {o.domain for o in proto.opset_import} <= {"", "ai.onnx", "com.microsoft"}
    check_domains(proto, out.name)  # passes
    for dom in ("ai.onnx.training", "com.microsoft.experimental", "org.pytorch.aten"):
        proto.opset_import.append(onnx.helper.make_opsetid(dom, 1))
    with pytest.raises(ExportError, match="ai.onnx.training, com.microsoft.experimental, org.pytorch.aten"):
        check_domains(proto, out.name)
    assert prune_domains(proto) == ["ai.onnx.training", "com.microsoft.experimental", "org.pytorch.aten"]
    check_domains(proto, out.name)
    assert any(o.domain in ("", "ai.onnx") for o in proto.opset_import)  # the default domain stays


def test_a_used_custom_domain_is_kept(tmp_path):
    from onnx import TensorProto, helper

    from echoseg.export.domains import prune_domains, unused_domains
    from tiny_onnx import EXPORT_IR_VERSION

    node = helper.make_node("Gelu", ["x"], ["y"], domain="com.microsoft")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    proto = helper.make_model(graph, ir_version=EXPORT_IR_VERSION,
                              opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1),
                                             helper.make_opsetid("ai.onnx.ml", 3)])
    assert unused_domains(proto) == ["ai.onnx.ml"]
    assert prune_domains(proto) == ["ai.onnx.ml"]
    assert [o.domain for o in proto.opset_import] == ["", "com.microsoft"]
