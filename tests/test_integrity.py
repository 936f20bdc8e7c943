"""Model files are checked against the sha256 their manifest records before anything runs them."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from echoseg import artifacts as A
from echoseg.backends.choose import choose
from echoseg.backends.session import SessionError
from tiny_onnx import tiny_meta, write_tiny_onnx


def _export(d: Path) -> Path:
    """A tiny export folder: fp32, fp16-named and int8-named graphs at g=1, listed in manifest.json."""
    for name in ("model.onnx", "model.fp16.onnx", "model.int8.onnx"):
        write_tiny_onnx(d / name, tiny_meta())
    files = [A.file_entry(p) for p in sorted(d.iterdir())]
    (d / "manifest.json").write_text(json.dumps({"format": A.MANIFEST_FORMAT, "version": 1, "files": files}))
    return d


def _flip(p: Path, n: int = 8) -> None:
    """Flip bytes inside the file (the size stays, the file may still parse)."""
    b = bytearray(p.read_bytes())
    mid = len(b) // 2
    for i in range(mid, min(mid + n, len(b))):
        b[i] ^= 0xFF
    p.write_bytes(bytes(b))


def test_a_flipped_file_is_refused_in_the_index_and_the_others_stay(tmp_path):
    d = _export(tmp_path / "exp")
    assert A.index_export_dir(d).refused == ()
    _flip(d / "model.onnx")
    index = A.index_export_dir(d)
    assert [p.name for p, _ in index.refused] == ["model.onnx"]
    assert "does not match manifest.json" in index.refused[0][1] and "model.onnx" in index.refused[0][1]
    assert sorted(a.path.name for a in index.files) == ["model.fp16.onnx", "model.int8.onnx"]
    assert index.select("onnx").path.name == "model.fp16.onnx"


def test_a_size_change_is_refused_too(tmp_path):
    d = _export(tmp_path / "exp")
    with open(d / "model.int8.onnx", "ab") as fh:
        fh.write(b"\0")
    why = A.integrity_problem(d / "model.int8.onnx")
    assert why is not None and "bytes" in why and "model.int8.onnx" in why
    assert A.integrity_problem(d / "model.onnx") is None
    assert A.integrity_problem(tmp_path / "unlisted.onnx") is None  # no manifest: nothing to check against


def test_auto_goes_on_to_the_next_file_and_says_why_in_one_line(tmp_path, caplog):
    d = _export(tmp_path / "exp")
    _flip(d / "model.onnx")
    with caplog.at_level(logging.WARNING, logger="echoseg.backends.choose"):
        c = choose(d, "onnxruntime")
    assert c.path.name == "model.fp16.onnx"
    assert "model.onnx refused" in c.reason
    lines = [r.getMessage() for r in caplog.records if "model.onnx" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0] and "running model.fp16.onnx with onnxruntime instead" in lines[0]


def test_the_damaged_file_itself_is_refused_in_one_line(tmp_path):
    d = _export(tmp_path / "exp")
    _flip(d / "model.fp16.onnx")
    with pytest.raises(SessionError) as exc:
        choose(d / "model.fp16.onnx", "auto")
    assert "model.fp16.onnx" in str(exc.value) and "does not match" in str(exc.value) and "\n" not in str(exc.value)
    assert choose(d / "model.onnx", "onnxruntime").path.name == "model.onnx"


def test_every_graph_damaged_is_one_clear_error(tmp_path):
    d = _export(tmp_path / "exp")
    for name in ("model.onnx", "model.fp16.onnx", "model.int8.onnx"):
        _flip(d / name)
    with pytest.raises(SessionError, match=r"does not match manifest.json.*2 more file"):
        choose(d, "auto")


def test_the_hash_is_computed_once_per_path_size_and_mtime(tmp_path, monkeypatch):
    d = _export(tmp_path / "exp")
    calls = []
    real = A.file_sha256
    monkeypatch.setattr(A, "file_sha256", lambda p: calls.append(Path(p).name) or real(p))
    A._HASHES.clear()
    for _ in range(3):
        A.index_export_dir(d)
    assert sorted(calls) == ["model.fp16.onnx", "model.int8.onnx", "model.onnx"]
    _flip(d / "model.onnx")  # rewritten: a new mtime, hashed again
    import os
    st = (d / "model.onnx").stat()
    os.utime(d / "model.onnx", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    A.index_export_dir(d)
    assert calls.count("model.onnx") == 2


def test_a_bundle_with_a_flipped_graph_runs_the_next_one(tmp_path, monkeypatch):
    import shutil

    from echoseg import pretrained

    src = Path(pretrained.__file__).with_name("echo-synth-matae-w16")
    if not any(src.glob("model*.onnx")):
        pytest.skip("no bundled model in this tree")
    b = tmp_path / "bundle"
    shutil.copytree(src, b)
    _flip(b / "model.fp16.onnx", 2000)
    monkeypatch.setattr(pretrained, "FOLDER", b)
    c = choose("pretrained", "onnxruntime")
    assert c.path.name == "model.int8.onnx" and "model.fp16.onnx refused" in c.reason


def test_triton_leaves_a_damaged_file_out_in_one_line_and_records_hashes(tmp_path):
    from echoseg.export.triton import write_repository

    d = _export(tmp_path / "exp")
    man = json.loads((d / "manifest.json").read_text())
    man["profile"] = {"min": 1, "opt": 4, "max": 8}
    (d / "manifest.json").write_text(json.dumps(man))
    _flip(d / "model.int8.onnx")
    errors: list[str] = []
    models = write_repository([d], tmp_path / "repo", errors)
    assert sorted(m.name for m in models) == ["exp", "exp_fp16"]
    assert len(errors) == 1 and "model.int8.onnx" in errors[0] and "does not match" in errors[0]
    cfg = (tmp_path / "repo" / "exp" / "config.pbtxt").read_text()
    assert A.file_sha256(d / "model.onnx") in cfg


def test_echo_bench_lists_a_damaged_file_as_skipped_and_does_not_time_it(tmp_path):
    from echoseg.bench.targets import CheckpointFinder, plan_export

    d = _export(tmp_path / "exp")
    _flip(d / "model.fp16.onnx")
    plan = plan_export(d, CheckpointFinder(tmp_path / "runs"), ("onnxruntime",), ("fp32", "fp16", "int8"))
    assert sorted(Path(t.artifact).name for t in plan.targets) == ["model.int8.onnx", "model.onnx"]
    why = [s.reason for s in plan.skipped if "model.fp16.onnx" in s.reason]
    assert len(why) == 1 and "does not match manifest.json" in why[0]
