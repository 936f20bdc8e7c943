"""FP16 graph: FP16 inside, FP32 at the edges, parity, the CPU emulation, FP32 fallbacks."""

from __future__ import annotations

import numpy as np
from test_export_fixtures import (cached_checkpoint, export_base, exported, no_tensorrt,  # noqa: F401
                                  onnx_logits, quick_options, synthetic_batch)
from tiny_onnx import make_model


def _types():
    from onnx import TensorProto

    return TensorProto.FLOAT, TensorProto.FLOAT16


def test_fp16_graph_is_fp16_inside_and_fp32_at_the_edges(exported):
    import onnx

    from echoseg.artifacts import read_onnx_meta

    f32, f16 = _types()
    for path in (exported / "unet" / "model.fp16.onnx", exported / "matae-unet" / "model.g0.5.fp16.onnx"):
        proto = onnx.load(str(path))
        onnx.checker.check_model(proto)
        assert read_onnx_meta(proto) == read_onnx_meta(str(path).replace(".fp16", ""))
        assert proto.graph.input[0].type.tensor_type.elem_type == f32
        assert proto.graph.output[0].type.tensor_type.elem_type == f32
        # every weight is stored in FP16
        assert {init.data_type for init in proto.graph.initializer} == {f16}
        # one Cast in (to FP16) at the start and one Cast out (to FP32) at the end
        first, last = proto.graph.node[0], proto.graph.node[-1]
        assert first.op_type == "Cast" and first.input[0] == "frames"
        assert next(a.i for a in first.attribute if a.name == "to") == f16
        assert last.op_type == "Cast" and last.output[0] == "logits"
        assert next(a.i for a in last.attribute if a.name == "to") == f32
        inferred = onnx.shape_inference.infer_shapes(proto)
        inner = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
        produced = [o for n in proto.graph.node if n.op_type != "Cast" for o in n.output]
        assert produced and all(inner[o] == f16 for o in produced)


def test_fp16_manifest_records_what_stayed_fp32_and_how_it_ran(exported):
    from echoseg.export.manifest import read_manifest

    sec = next(s for s in read_manifest(exported / "unet")["exports"] if s["granularity"] == 1.0)
    step = sec["steps"]["fp16"]
    assert step["kept_fp32_ops"] == [] and step["kept_fp32_nodes"] == []
    assert step["types"]["inputs"] == ["float"] and step["types"]["outputs"] == ["float"]
    assert step["types"]["fp32_compute_ops"] == []
    assert "emulation" in step["how_run_on_cpu"]


def test_fp16_parity_passes_and_is_not_trivially_exact(exported, export_base):
    import onnx

    from echoseg.export.fp16 import emulate_fp16
    from echoseg.export.manifest import read_manifest
    from echoseg.export.parity import OnnxGraph, compare
    from echoseg.artifacts import preprocess
    from echoseg.models.checkpoint import load_checkpoint

    for name in ("unet", "matae-unet"):
        rep = next(s for s in read_manifest(exported / name)["exports"]
                   if s["granularity"] == 1.0)["parity"]["fp16_vs_fp32"]
        assert rep["passed"] and rep["mask_dice"] >= 0.99
        assert rep["mask_dice"] == min(rep["emulated"]["mask_dice"], rep["ort_cpu"]["mask_dice"])
        ckpt = load_checkpoint(cached_checkpoint(export_base, name))
        frames, _ = synthetic_batch(900, videos=1, frames=8)
        x = preprocess(frames, ckpt.meta())
        y32 = onnx_logits(exported / name / "model.onnx", x)
        emu = OnnxGraph(emulate_fp16(onnx.load(str(exported / name / "model.fp16.onnx"))), optimize=False).run(x)
        r = compare(y32, emu)
        assert r["mask_dice"] >= 0.99
        assert 1e-5 < r["max_abs_logit"] < 0.2  # FP16 rounding shows, but stays small


def test_emulation_rounds_each_fp16_tensor_after_fp32_math():
    import onnx
    from onnx import helper, numpy_helper

    from echoseg.export.fp16 import emulate_fp16
    from echoseg.export.parity import OnnxGraph

    f32, f16 = _types()
    three = numpy_helper.from_array(np.array([3.0], np.float16), "three")
    nodes = [helper.make_node("Cast", ["x"], ["xh"], to=f16), helper.make_node("Mul", ["xh", "three"], ["m"]),
             helper.make_node("Relu", ["m"], ["r"]), helper.make_node("Cast", ["r"], ["y"], to=f32)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", f32, ["n", 4])],
                              [helper.make_tensor_value_info("y", f32, ["n", 4])], [three])
    model = make_model(graph)
    emu = emulate_fp16(model)
    onnx.checker.check_model(emu)
    assert all(i.data_type == f32 for i in emu.graph.initializer)
    x = np.array([[1 / 3, 0.1, -2.0, 30000.0]], np.float32)
    y = OnnxGraph(emu.SerializeToString(), optimize=False).run(x)
    h = x.astype(np.float16).astype(np.float32)  # input rounded to FP16
    with np.errstate(over="ignore"):
        expected = np.maximum((h * np.float32(3.0)).astype(np.float16).astype(np.float32), 0)
    assert np.array_equal(y, expected)
    assert np.isinf(y[0, 3])  # 90000 overflows FP16, as it would on a GPU
    assert not np.allclose(y[0, :2], np.maximum(x[0, :2] * 3, 0), rtol=0, atol=1e-7)  # really rounded


def test_keeping_the_head_in_fp32(exported):
    import onnx

    from echoseg.export.fp16 import convert_fp16, last_compute_node, tensor_types

    f32, _ = _types()
    src = onnx.load(str(exported / "unet" / "model.onnx"))
    head = last_compute_node(src)
    assert head and next(n for n in src.graph.node if n.name == head).op_type == "Conv"
    out, info = convert_fp16(src, keep_fp32_nodes=[head, "no-such-node"])
    onnx.checker.check_model(out)  # still topologically sorted
    assert info.kept_fp32_nodes == [head]
    assert tensor_types(out)["fp32_compute_ops"] == ["Conv"]
    head_node = next(n for n in out.graph.node if n.name == head)
    inits = {i.name: i.data_type for i in out.graph.initializer}
    assert inits[head_node.input[1]] == f32
    out2, info2 = convert_fp16(src, keep_fp32_ops=["MaxPool"])
    assert info2.kept_fp32_ops == ["MaxPool"] and "MaxPool" in tensor_types(out2)["fp32_compute_ops"]


def test_fp16_gate_miss_retries_with_fp32_head_then_rejects(export_base, tmp_path, monkeypatch, no_tensorrt):
    from echoseg.export import parity
    from echoseg.export.build import export_checkpoint

    monkeypatch.setitem(parity.GATES, "fp16", {"mask_dice": 1.01})  # impossible: force the miss
    lines: list[str] = []
    res = export_checkpoint(cached_checkpoint(export_base, "unet"), quick_options(tmp_path, fp16=True),
                            say=lines.append)
    assert not res.ok
    (err,) = res.errors
    assert "parity gate missed" in err and "mask agreement" in err and "< 1.01" in err
    assert any("retrying with the logit head" in line for line in lines)
    d = tmp_path / "unet"
    assert (d / "model.fp16.rejected.onnx").is_file() and not (d / "model.fp16.onnx").exists()
    assert (d / "model.onnx").is_file()  # the FP32 graph passed and stays


def test_fp16_conversion_keeps_the_source_ir_version():
    """The FP16 graph stays at its FP32 graph's IR version (what the runtimes were tested to load),
    or the lowest its opsets need, whatever IR the converter's rebuild wrote."""
    from onnx import TensorProto, helper

    from echoseg.export.domains import keep_ir_version
    from echoseg.export.fp16 import convert_fp16
    from tiny_onnx import EXPORT_IR_VERSION

    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 4], [0.5] * 16)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])], [w])
    out, _ = convert_fp16(make_model(graph))
    assert out.ir_version == EXPORT_IR_VERSION
    assert any(i.data_type == TensorProto.FLOAT16 for i in out.graph.initializer)
    out.ir_version = 10
    assert keep_ir_version(out, 8) == 8
    new = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    assert keep_ir_version(new, 8) == 10  # opset 21 needs IR 10: never below what the opsets need
