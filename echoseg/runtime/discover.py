"""Which model file and which backend: the newest export or run by default, `auto` by what is here.

`auto` prefers a TensorRT engine (when TensorRT, pycuda and a GPU are present), then an ONNX
file on ONNX Runtime (whose own provider order is TensorRT, CUDA, CPU), then a checkpoint on
PyTorch. A granularity picks, inside an export directory, the artifact whose self-description
says it is that granularity (by metadata, not by file name).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from echoseg.config import ConfigError, EngineSidecar

from .session import BACKENDS, SessionError, artifact_kind

log = logging.getLogger(__name__)

ENGINE_SUFFIXES = (".engine", ".plan", ".trt")


@dataclass(frozen=True)
class ModelChoice:
    """The artifact to open, the backend to open it with, and why."""

    path: Path
    backend: str
    reason: str


def find_default_model(root: str | os.PathLike = ".") -> Path:
    """The newest export directory under exports/, else the newest run under runs/ (best.pt)."""
    base = Path(root)
    exports = []
    if (base / "exports").is_dir():
        for marker in ("manifest.json", "model.onnx"):
            exports += [p for p in (base / "exports").rglob(marker) if p.is_file()]
    if exports:
        return max(exports, key=lambda p: p.stat().st_mtime).parent
    runs = [p for p in (base / "runs").rglob("best.pt") if p.is_file()] if (base / "runs").is_dir() else []
    if runs:
        return max(runs, key=lambda p: p.stat().st_mtime).parent
    raise SessionError(f"no model given and none found under {base / 'exports'} (manifest.json or model.onnx) "
                       f"or {base / 'runs'} (best.pt); pass --model PATH or run echo-train / echo-export first")


def tensorrt_problem() -> str | None:
    """None when TensorRT can run here; otherwise what is missing."""
    for mod in ("tensorrt", "pycuda"):
        if importlib.util.find_spec(mod) is None:
            return f"{mod} is not installed"
    try:
        import pycuda.driver as cuda

        cuda.init()
        if cuda.Device.count() < 1:
            return "no CUDA GPU is visible"
    except Exception as exc:  # pycuda raises its own LogicError/RuntimeError types
        return f"CUDA is not usable ({str(exc).splitlines()[0][:120]})"
    return None


def _engine_granularity(path: Path) -> float | None:
    side = path.with_suffix(".json")
    if not side.is_file():
        return None
    try:
        return EngineSidecar.from_dict(json.loads(side.read_text())).meta.granularity
    except (ConfigError, ValueError, OSError):
        return None


def _onnx_granularity(path: Path) -> float | None:
    from .ort import read_onnx_meta

    try:
        return read_onnx_meta(path).granularity
    except SessionError:
        return None


def _onnx_rank(p: Path) -> tuple[int, bool, str]:
    """fp32 before fp16 before int8; the full model's standard name (model.onnx) before other graphs."""
    name = p.name.lower()
    precision = 0 if ".fp16." not in name and ".int8." not in name else 1 if ".fp16." in name else 2
    return (precision, name not in ("model.onnx", "model.fp16.onnx", "model.int8.onnx"), name)


def _pick(d: Path, kind: str, granularity: float | None) -> Path | None:
    """The engine or ONNX file in export dir ``d`` for ``granularity`` (None: the full model)."""
    if kind == "engine":
        files = sorted(p for p in d.iterdir() if p.suffix.lower() in ENGINE_SUFFIXES)
        files.sort(key=lambda p: (p.name != "model.fp16.engine", p.name))
        of = _engine_granularity
    else:
        files = sorted((p for p in d.iterdir() if p.suffix.lower() == ".onnx"), key=_onnx_rank)
        of = _onnx_granularity
    if granularity is None:  # the full model: the first by name (model.onnx, model.fp16.engine)
        return files[0] if files else None
    for p in files:
        g = of(p)
        if g is not None and abs(g - float(granularity)) < 1e-9:
            return p
    return None


def choose(model: str | os.PathLike | None, backend: str = "auto", granularity: float | None = None,
           root: str | os.PathLike = ".") -> ModelChoice:
    """Resolve --model/--backend/--granularity to one artifact and backend, or explain why not."""
    if backend not in (*BACKENDS, "auto"):
        raise SessionError(f"unknown backend {backend!r}; choose auto, {', '.join(BACKENDS)}")
    path = Path(model) if model is not None else find_default_model(root)
    if not path.exists():
        raise SessionError(f"{path}: no such model file or directory")
    is_export = path.is_dir() and ((path / "manifest.json").is_file()
                                   or any(p.suffix.lower() in (".onnx", *ENGINE_SUFFIXES) for p in path.iterdir()))
    kind = "export-dir" if is_export else artifact_kind(path)
    g_note = "" if granularity is None else f" at granularity {granularity:g}"
    if kind == "export-dir":
        return _choose_in_dir(path, backend, granularity, g_note)
    want = {"engine": "tensorrt", "onnx": "onnxruntime", "checkpoint": "torch"}[kind]
    if backend not in ("auto", want):
        raise SessionError(f"{path}: a {kind} cannot be run with backend {backend}; use --backend {want} or auto")
    if kind == "engine":
        problem = tensorrt_problem()
        if problem:
            raise SessionError(f"{path}: cannot run a TensorRT engine here ({problem}); pass the .onnx instead")
    if granularity is not None and kind in ("engine", "onnx"):
        g = _engine_granularity(path) if kind == "engine" else _onnx_granularity(path)
        if g is not None and abs(g - granularity) > 1e-9:
            raise SessionError(f"{path}: this artifact is granularity {g:g}, not {granularity:g}; pass the "
                               "export directory or the checkpoint to pick another granularity")
    return ModelChoice(path, want, f"{kind} given{g_note}")


def _choose_in_dir(d: Path, backend: str, granularity: float | None, g_note: str) -> ModelChoice:
    tried = []
    if backend in ("auto", "tensorrt"):
        engine = _pick(d, "engine", granularity)
        problem = tensorrt_problem() if engine else f"no engine{g_note} in {d}"
        if engine and not problem:
            return ModelChoice(engine, "tensorrt", f"TensorRT engine{g_note} and a GPU are present")
        if backend == "tensorrt":
            raise SessionError(f"{d}: cannot use TensorRT ({problem})")
        tried.append(f"TensorRT skipped: {problem}")
    if backend in ("auto", "onnxruntime"):
        onnx = _pick(d, "onnx", granularity)
        if onnx:
            return ModelChoice(onnx, "onnxruntime", "; ".join(tried + [f"ONNX file{g_note} found"]))
        tried.append(f"no ONNX file{g_note}")
    ckpt = next((d / n for n in ("best.pt", "last.pt") if (d / n).is_file()), None)
    if backend in ("auto", "torch") and ckpt:
        return ModelChoice(ckpt, "torch", "; ".join(tried + ["checkpoint found"]))
    raise SessionError(f"{d}: nothing to run with backend {backend}{g_note} ({'; '.join(tried) or 'no checkpoint'}); "
                       "export that granularity with echo-export or pass a checkpoint")
