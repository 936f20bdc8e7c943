"""The artifact contract: names, the export-directory index, metadata, sidecars, manifest, hashes, preprocessing."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from tiny_onnx import tiny_meta, write_tiny_onnx

from echoseg import artifacts as A
from echoseg.config import EngineSidecar, InputSpec


def test_names_precision_and_granularity():
    assert A.artifact_name() == "model.onnx"
    assert A.artifact_name(0.5, "fp16") == "model.g0.5.fp16.onnx"
    assert A.artifact_name(0.25, "fp16", "engine") == "model.g0.25.fp16.engine"
    assert A.rejected_name("d/model.g0.5.onnx").name == "model.g0.5.rejected.onnx"
    for name, prec, g in [("model.onnx", "fp32", 1.0), ("model.g0.125.int8.onnx", "int8", 0.125),
                          ("model.g0.5.fp16.rejected.onnx", "fp16", 0.5), ("model.fp16.engine", "fp16", 1.0)]:
        assert (A.precision_of(name), A.granularity_from_name(name)) == (prec, g)
    assert A.is_rejected("model.g0.5.rejected.onnx") and not A.is_rejected("model.g0.5.onnx")
    assert not A.is_usable(".model.onnx.tmp1234") and not A.is_usable("model.rejected.onnx")
    with pytest.raises(A.ArtifactError, match="precision"):
        A.artifact_name(1.0, "bf16")


def test_index_skips_rejected_and_hidden_files_and_puts_the_full_model_first(tmp_path):
    d = tmp_path / "exp"
    for g, prec in [(0.5, "fp32"), (1.0, "int8"), (1.0, "fp16"), (1.0, "fp32"), (0.25, "fp32")]:
        write_tiny_onnx(d / A.artifact_name(g, prec), tiny_meta(g))
    write_tiny_onnx(d / "model.g0.125.rejected.onnx", tiny_meta(0.125))
    write_tiny_onnx(d / ".model.g0.125.onnx.tmp", tiny_meta(0.125))  # a half-written temp file
    idx = A.index_export_dir(d)
    assert [a.path.name for a in idx.files] == ["model.onnx", "model.fp16.onnx", "model.int8.onnx",
                                                "model.g0.5.onnx", "model.g0.25.onnx"]
    assert [p.name for p in idx.rejected] == ["model.g0.125.rejected.onnx"]
    assert idx.select("onnx").path.name == "model.onnx"
    assert idx.select("onnx", 0.5).path.name == "model.g0.5.onnx"
    assert idx.select("onnx", 0.125) is None
    assert [p.name for p in idx.rejected_for(0.125)] == ["model.g0.125.rejected.onnx"]
    assert idx.select("onnx", precisions=("int8",)).precision == "int8"
    assert idx.granularities() == [1.0, 0.5, 0.25]
    assert A.artifact_kind(d) == "export-dir" and A.export_dirs_under(tmp_path) == [d]


def test_granularity_comes_from_metadata_not_the_name(tmp_path):
    write_tiny_onnx(tmp_path / "renamed.onnx", tiny_meta(0.25))
    (a,) = A.index_export_dir(tmp_path).files
    assert a.granularity == 0.25 and a.meta.granularity == 0.25 and not a.problem


def test_onnx_metadata_round_trip_and_errors(tmp_path):
    p = write_tiny_onnx(tmp_path / "model.onnx", tiny_meta(0.5))
    assert A.read_onnx_meta(p) == tiny_meta(0.5)
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    with pytest.raises(A.ArtifactError, match="junk.onnx"):
        A.read_onnx_meta(tmp_path / "junk.onnx")


def test_metadata_read_without_onnx_equals_onnx_s_own(tmp_path):
    """The protobuf walk finds what onnx.load finds (other props, unicode, any order); bad files go to onnx."""
    import onnx

    p = write_tiny_onnx(tmp_path / "model.onnx", tiny_meta(0.25))
    proto = onnx.load(str(p))
    proto.metadata_props.add(key="note", value="naïve ünïcode ✓")
    proto.doc_string = "x" * 300  # a long length prefix before the graph
    onnx.save(proto, str(p))
    assert A.onnx_metadata_props(p) == {e.key: e.value for e in onnx.load(str(p)).metadata_props}
    assert A.read_onnx_meta(p) == tiny_meta(0.25)
    data = p.read_bytes()
    for name, bad, why in (("cut.onnx", data[: len(data) // 2], "cannot load it as an ONNX model"),
                           ("text.onnx", b"not onnx", "cannot load it as an ONNX model"),
                           ("empty.onnx", b"", "has no 'echoseg' metadata")):  # onnx reads b"" as an empty model
        (tmp_path / name).write_bytes(bad)
        assert A.onnx_metadata_props(tmp_path / name) is None
        with pytest.raises(A.ArtifactError, match=f"{name}: (ONNX file )?{why}"):
            A.read_onnx_meta(tmp_path / name)


def _sidecar(**kw) -> EngineSidecar:
    base = dict(meta=tiny_meta(), tensorrt_version="10.13.0", cuda_version="12.8", gpu_name="Tesla T4",
                compute_capability="7.5", onnx_sha256="ab", onnx_file="model.fp16.onnx", precision="fp16",
                profile=(1, 16, 64), build_seconds=1.0, strongly_typed=True)
    return EngineSidecar(**{**base, **kw})


def test_sidecar_and_engine_in_the_index(tmp_path):
    engine = tmp_path / "model.fp16.engine"
    engine.write_bytes(b"plan")
    with pytest.raises(A.ArtifactError, match="no sidecar model.fp16.json"):
        A.read_sidecar(engine)
    A.write_sidecar(engine, _sidecar())
    assert A.read_sidecar(engine) == _sidecar()
    (a,) = A.index_export_dir(tmp_path).files
    assert (a.kind, a.precision, a.granularity, a.problem) == ("engine", "fp16", 1.0, "")
    A.sidecar_path(engine).write_text("{")
    assert "unreadable engine sidecar" in A.index_export_dir(tmp_path).files[0].problem


def test_manifest_profile_and_hashes(tmp_path):
    with pytest.raises(A.ArtifactError, match="no manifest.json"):
        A.read_manifest(tmp_path)
    (tmp_path / A.MANIFEST).write_text(json.dumps({"format": "other"}))
    with pytest.raises(A.ArtifactError, match="not an echoseg export manifest"):
        A.read_manifest(tmp_path)
    assert A.manifest_profile(tmp_path) == (1, 16, 64)
    (tmp_path / A.MANIFEST).write_text(json.dumps({"format": A.MANIFEST_FORMAT, "profile": {"min": 2, "opt": 8, "max": 32}}))
    assert A.manifest_profile(tmp_path) == (2, 8, 32)
    f = tmp_path / "blob"
    f.write_bytes(b"echo" * 1000)
    assert A.file_sha256(f) == hashlib.sha256(b"echo" * 1000).hexdigest()
    assert A.file_entry(f) == {"file": "blob", "bytes": 4000, "sha256": A.file_sha256(f)}


def test_preprocess_from_an_input_spec():
    spec = InputSpec(height=4, width=6, mean=(10.0, 20.0, 30.0), std=(2.0, 4.0, 5.0))
    frames = np.full((2, 8, 12, 3), 50, np.uint8)
    x = A.preprocess(frames, spec)
    assert x.shape == (2, 3, 4, 6) and x.dtype == np.float32
    np.testing.assert_allclose(x[:, :, 0, 0], [[20.0, 7.5, 4.0]] * 2)
    grey = A.preprocess(np.full((8, 12), 50, np.uint8), spec)  # one grey frame, resized, channels repeated
    assert grey.shape == (1, 3, 4, 6)
    with pytest.raises(A.ArtifactError, match="N,H,W,C"):
        A.preprocess(np.zeros((1, 1, 2, 2, 3), np.uint8), spec)


def test_preprocess_table_is_bitwise_the_float_formula():
    """The uint8 path (a 256-entry table per channel) equals (float32(v) - mean) / std to the bit."""
    spec = InputSpec(height=16, width=16, mean=(25.5, 51.3, 76.1), std=(51.7, 63.75, 0.3))
    frames = np.random.default_rng(0).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    x = A.preprocess(frames, spec)
    ref = (frames.astype(np.float32).transpose(0, 3, 1, 2) - np.float32(spec.mean).reshape(1, 3, 1, 1)) \
        / np.float32(spec.std).reshape(1, 3, 1, 1)
    assert x.flags.c_contiguous and x.dtype == np.float32
    np.testing.assert_array_equal(x, ref)
    np.testing.assert_array_equal(A.preprocess(frames.astype(np.float32), spec), ref)  # non-uint8 input: formula
