"""ONNX export: graph shape and names, checker, metadata round trip, sliced granularity exports."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from test_export_fixtures import (cached_checkpoint, export_base, exported, matae32, no_tensorrt,  # noqa: F401
                                  onnx_logits, synthetic_batch, unet32)
from tiny_onnx import make_model


def _load_model(path):
    from echoseg.models.checkpoint import build_from_checkpoint, load_checkpoint

    ckpt = load_checkpoint(path)
    return ckpt, build_from_checkpoint(ckpt)


def _ort(path, x):
    return onnx_logits(path, x)


def _batch(ckpt, n=6, seed=300):
    from echoseg.artifacts import preprocess

    frames, _ = synthetic_batch(seed, videos=1, frames=n, size=ckpt.input_spec.height)
    return preprocess(frames, ckpt.meta())


def test_112_graph_names_dynamic_batch_and_checker(unet_ckpt, tmp_path):
    import onnx
    import torch

    from echoseg.export.onnx import INPUT_NAME, OUTPUT_NAME, export_onnx, sub_network

    ckpt, model = _load_model(unet_ckpt)
    info = export_onnx(sub_network(model, 1.0), ckpt.meta(1.0), tmp_path / "model.onnx")
    proto = onnx.load(str(info.path))
    onnx.checker.check_model(proto, full_check=True)
    assert info.opset >= 17
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")][0] >= 17
    (inp,), (out,) = proto.graph.input, proto.graph.output
    assert (inp.name, out.name) == (INPUT_NAME, OUTPUT_NAME) == ("frames", "logits")
    in_dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    out_dims = [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim]
    assert isinstance(in_dims[0], str) and in_dims[1:] == [3, 112, 112]
    assert isinstance(out_dims[0], str) and out_dims[1:] == [1, 112, 112]
    assert not list(tmp_path.glob(".*")), "temporary files left behind"
    for n in (1, 3):
        x = np.random.default_rng(n).normal(size=(n, 3, 112, 112)).astype(np.float32)
        y = _ort(info.path, x)
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        assert y.shape == (n, 1, 112, 112)
        assert np.abs(y - ref).max() <= 1e-3


def test_simplified_graph_has_batchnorm_folded(unet32, tmp_path):
    pytest.importorskip("onnxslim", reason="onnxslim is not installed (the export extra)")
    from echoseg.export.onnx import export_onnx, sub_network

    ckpt, model = _load_model(unet32)
    info = export_onnx(sub_network(model, 1.0), ckpt.meta(1.0), tmp_path / "model.onnx")
    assert info.simplified_by.startswith("onnxslim")
    assert "BatchNormalization" not in info.op_types
    assert info.op_types["Conv"] == 19 and info.op_types["ConvTranspose"] == 4


def test_without_onnxslim_the_unsimplified_graph_is_kept_and_still_exact(unet32, tmp_path, monkeypatch):
    import onnx

    from echoseg.export.onnx import export_onnx, simplify, sub_network
    from echoseg.export.parity import torch_logits

    monkeypatch.setitem(sys.modules, "onnxslim", None)  # import onnxslim -> ImportError
    proto = onnx.ModelProto()
    same, by = simplify(proto)
    assert same is proto and by == ""
    ckpt, model = _load_model(unet32)
    info = export_onnx(sub_network(model, 1.0), ckpt.meta(1.0), tmp_path / "model.onnx")
    assert info.simplified_by == ""
    assert info.op_types.get("BatchNormalization", 0) == 18
    x = _batch(ckpt)
    assert np.abs(_ort(info.path, x) - torch_logits(model, x, 1.0)).max() <= 1e-3


@pytest.mark.parametrize("g", [1.0, 0.5])
def test_metadata_round_trip(matae32, tmp_path, g):
    import onnx

    from echoseg.export.onnx import export_onnx, sub_network
    from echoseg.artifacts import read_onnx_meta
    from echoseg.models.checkpoint import file_sha256

    ckpt, model = _load_model(matae32)
    path = export_onnx(sub_network(model, g), ckpt.meta(g), tmp_path / "m.onnx").path
    meta = read_onnx_meta(path)
    assert meta == ckpt.meta(g) == read_onnx_meta(onnx.load(str(path)))
    assert meta.granularity == g
    assert meta.model.name == "matae-unet" and meta.model.width == 8
    assert meta.input_spec.mean == ckpt.input_spec.mean and meta.input_spec.std == ckpt.input_spec.std
    assert meta.threshold == ckpt.threshold
    assert meta.source_sha256 == file_sha256(matae32)


def test_metadata_missing_is_a_clear_error(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    from echoseg.artifacts import ArtifactError, read_onnx_meta

    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save(make_model(g), str(tmp_path / "plain.onnx"))
    with pytest.raises(ArtifactError, match="no 'echoseg' metadata"):
        read_onnx_meta(tmp_path / "plain.onnx")


def test_both_models_pass_fp32_parity_with_meaningful_masks(exported, export_base):
    from echoseg.export.manifest import read_manifest
    from echoseg.export.parity import compare, torch_logits

    for name in ("unet", "matae-unet"):
        man = read_manifest(exported / name)
        assert man["passed"] is True
        full = next(s for s in man["exports"] if s["granularity"] == 1.0)
        rep = full["parity"]["fp32_vs_torch"]
        assert rep["max_abs_logit"] <= 1e-3 and rep["mask_dice"] >= 0.999 and rep["passed"] is True
        assert rep["lv_area_ref_px"] > 10  # the masks are not empty: the gate compared something
        # independent check on frames the exporter did not use
        ckpt, model = _load_model(cached_checkpoint(export_base, name))
        x = _batch(ckpt, seed=777)
        again = compare(torch_logits(model, x, 1.0), _ort(exported / name / "model.onnx", x))
        assert again["max_abs_logit"] <= 1e-3 and again["mask_dice"] >= 0.999
        assert 0.02 < (torch_logits(model, x, 1.0) > 0).mean() < 0.5


def test_sliced_granularity_export_is_smaller_and_matches_the_full_model_there(exported, export_base):
    from echoseg.export.manifest import read_manifest
    from echoseg.artifacts import read_onnx_meta
    from echoseg.export.parity import compare, torch_logits
    from echoseg.models import count_macs

    d = exported / "matae-unet"
    full, half = d / "model.onnx", d / "model.g0.5.onnx"
    assert half.stat().st_size < 0.5 * full.stat().st_size
    assert read_onnx_meta(half).granularity == 0.5
    ckpt, model = _load_model(cached_checkpoint(export_base, "matae-unet"))
    man = read_manifest(d)
    sec = {s["granularity"]: s for s in man["exports"]}
    assert set(sec) == {1.0, 0.5}
    assert sec[0.5]["macs_per_frame_exported"] == count_macs(model, 0.5, size=(32, 32))
    assert sec[0.5]["macs_per_frame_exported"] < 0.5 * sec[1.0]["macs_per_frame_exported"]
    x = _batch(ckpt, seed=555)
    y = _ort(half, x)
    at_half = compare(torch_logits(model, x, 0.5), y)
    assert at_half["max_abs_logit"] <= 1e-3 and at_half["mask_dice"] >= 0.999
    # and it really is the half-width network, not the full one
    assert compare(torch_logits(model, x, 1.0), y)["max_abs_logit"] > 1e-2
