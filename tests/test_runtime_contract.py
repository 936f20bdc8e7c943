"""The runtime's contract with the artifacts: rejected graphs never run, the ONNX path stays lean, one registry."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tiny_onnx import tiny_meta, write_tiny_onnx

from echoseg.data.synthetic import make_video
from echoseg.data.video import write_video
from echoseg.backends import registry as backends
from echoseg.backends.choose import choose, open_session
from echoseg.backends.session import SessionError, SessionInfo

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    v = make_video(5, frames=12)
    return write_video(tmp_path_factory.mktemp("clip") / "clip.avi", v.frames, v.fps)


@pytest.fixture()
def export_dir(tmp_path) -> Path:
    """model.onnx kept; the g=0.5 graph rejected at the parity gate; a temp file mid-write."""
    d = tmp_path / "exports" / "matae"
    write_tiny_onnx(d / "model.onnx", tiny_meta(1.0))
    write_tiny_onnx(d / "model.g0.5.rejected.onnx", tiny_meta(0.5))
    write_tiny_onnx(d / ".model.g0.5.onnx.tmp", tiny_meta(0.5))
    return d


def _echo_run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "60", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", "from echoseg.runtime.cli import main; main()", *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_echo_run_refuses_a_rejected_granularity_in_one_line_and_runs_nothing(export_dir, clip, tmp_path):
    out = tmp_path / "outputs"
    proc = _echo_run("--model", str(export_dir), "-g", "0.5", "--out", str(out), str(clip), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert "model.g0.5.rejected.onnx" in lines[0] and "rejected" in lines[0]
    assert not out.exists()  # nothing ran, nothing was written


@pytest.mark.parametrize("backend", ["auto", "onnxruntime", "torch"])
def test_choose_never_picks_a_rejected_graph(export_dir, backend):
    with pytest.raises(SessionError, match=r"model\.g0\.5\.rejected\.onnx"):
        choose(export_dir, backend, 0.5)
    if backend != "torch":
        assert choose(export_dir, backend).path.name == "model.onnx"
    with pytest.raises(SessionError, match="rejected at the export's parity gate"):
        choose(export_dir / "model.g0.5.rejected.onnx", "auto")


def test_an_onnx_run_imports_neither_torch_nor_training_code(export_dir, clip, tmp_path):
    code = f"""
import json, sys
from echoseg.runtime import run_videos
res = run_videos([{str(clip)!r}], model={str(export_dir)!r}, out={str(tmp_path / 'o')!r}, video=False)
heavy = sorted(m for m in sys.modules if m == "torch" or m.startswith(("torch.", "echoseg.train", "echoseg.models",
                                                                      "echoseg.export")))
print(json.dumps({{"ok": res[0].ok, "backend": res[0].summary.get("backend"), "heavy": heavy}}))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got == {"ok": True, "backend": "onnxruntime", "heavy": []}


def _module_level_imports(path: Path) -> set[str]:
    """Modules imported at module level (not inside functions or classes) of one source file."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    pkg = "echoseg." + path.parent.name
    for node in tree.body:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:
                base = pkg.rsplit(".", node.level - 1)[0] if node.level > 1 else pkg
                mod = f"{base}.{mod}" if mod else base
            found.add(mod)
    return found


def test_no_runtime_module_imports_train_models_export_or_torch_at_module_level():
    bad = {}
    for path in sorted([*(REPO / "echoseg" / "runtime").glob("*.py"), *(REPO / "echoseg" / "backends").glob("*.py")]):
        hits = [m for m in _module_level_imports(path)
                if m.split(".")[0] in ("torch", "tensorrt", "pycuda", "onnxruntime")
                or m.startswith(("echoseg.train", "echoseg.models", "echoseg.export"))]
        if hits:
            bad[f"{path.parent.name}/{path.name}"] = hits
    assert bad == {}
    assert _module_level_imports(REPO / "echoseg" / "artifacts.py") <= {
        "__future__", "hashlib", "json", "os", "re", "dataclasses", "pathlib", "typing", "numpy", "echoseg.config",
        "echoseg.errors"}


def test_session_module_is_a_protocol_with_no_backend_imports():
    imported = _module_level_imports(REPO / "echoseg" / "backends" / "session.py")
    assert not any(m.startswith(("echoseg.backends.ort", "echoseg.backends.tensorrt", "echoseg.backends.torch",
                                 "echoseg.backends.registry")) for m in imported)


class _EchoSession:
    def __init__(self, path, scale: float = 1.0) -> None:
        self.info = SessionInfo("echo-test", "fp32", "cpu", 1, 0, tiny_meta(), str(path))
        self.scale = scale

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.scale * batch[:, :1]

    def close(self) -> None:
        pass


def test_a_new_backend_is_one_registration(tmp_path, monkeypatch):
    monkeypatch.setattr(backends, "_REGISTRY", dict(backends._REGISTRY))
    assert backends.names() == ("tensorrt", "openvino", "onnxruntime", "torch")
    backends.register(backends.Backend("echo-test", "onnx", 5, _EchoSession, options=("scale",)))  # before openvino too
    onnx = write_tiny_onnx(tmp_path / "model.onnx")
    assert choose(tmp_path, "auto").backend == "echo-test"  # ranked before onnxruntime
    sess = open_session(tmp_path, "echo-test", scale=2.0)
    assert sess.info.backend == "echo-test"
    np.testing.assert_allclose(sess.run(np.ones((2, 3, 4, 4), np.float32)), 2.0)
    with pytest.raises(SessionError, match="takes no option threads"):
        open_session(onnx, "echo-test", threads=2)
    with pytest.raises(SessionError, match="unknown backend"):
        backends.get("tflite")


def test_open_choice_opens_what_was_chosen_without_choosing_again(tmp_path, monkeypatch):
    """echo-run chooses once (and says why), then opens that choice: the choice is not re-made on open."""
    from echoseg.backends import choose as choose_mod

    monkeypatch.setattr(backends, "_REGISTRY", dict(backends._REGISTRY))
    backends.register(backends.Backend("echo-test", "onnx", 5, _EchoSession, options=("scale",)))
    calls: list[tuple] = []
    monkeypatch.setattr(choose_mod, "choose", lambda *a, **k: calls.append(a) or pytest.fail("chose again"))
    picked = choose_mod.ModelChoice(path=tmp_path / "m.onnx", backend="echo-test", reason="test", options={"scale": 3.0})
    sess = choose_mod.open_choice(picked)
    assert calls == [] and sess.scale == 3.0  # auto's own option goes with the choice
    assert choose_mod.open_choice(picked, scale=2.0).scale == 2.0  # the caller's option wins
    with pytest.raises(SessionError, match="takes no option threads"):
        choose_mod.open_choice(picked, threads=2)
