"""The one backend protocol that the runtime and the benchmark use.

``Session.run(batch)`` takes float32 N,C,H,W (already normalised with the artifact's
InputSpec) and returns logits N,1,H,W as float32. ``open_session(path)`` picks the backend
from the artifact type; each backend's heavy import happens inside its own module, so the
ONNX Runtime path never imports torch.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from echoseg.config import ArtifactMeta

log = logging.getLogger(__name__)

BACKENDS = ("tensorrt", "onnxruntime", "torch")


class SessionError(RuntimeError):
    """A model artifact that cannot be opened with the asked-for backend."""


@dataclass(frozen=True)
class SessionInfo:
    backend: str  # tensorrt | onnxruntime | torch
    precision: str  # fp32 | fp16 | int8
    device: str  # e.g. "cpu", "cuda:0", "CPUExecutionProvider"
    min_batch: int
    max_batch: int  # 0 = no limit
    meta: ArtifactMeta
    path: str
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Session(Protocol):
    info: SessionInfo

    def run(self, batch: np.ndarray) -> np.ndarray:
        """float32 N,C,H,W -> float32 logits N,1,H,W."""

    def close(self) -> None:
        """Free the backend's resources."""


def preprocess(frames: np.ndarray, meta: ArtifactMeta) -> np.ndarray:
    """uint8 frames N,H,W,3 (BGR, any size) -> normalised float32 N,C,H,W at the model's size."""
    import cv2

    spec = meta.input_spec
    frames = np.asarray(frames)
    if frames.ndim == 3:  # one frame or a grey batch without channel axis
        frames = frames[None] if frames.shape[-1] in (1, 3) else frames[..., None]
    n, h, w = frames.shape[:3]
    if (h, w) != (spec.height, spec.width):
        interp = cv2.INTER_AREA if h > spec.height else cv2.INTER_LINEAR
        frames = np.stack([cv2.resize(f, (spec.width, spec.height), interpolation=interp) for f in frames])
        if frames.ndim == 3:
            frames = frames[..., None]
    if frames.shape[-1] != spec.channels:
        frames = np.repeat(frames[..., :1], spec.channels, axis=-1)
    x = frames.astype(np.float32).transpose(0, 3, 1, 2)
    mean = np.asarray(spec.mean, np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(spec.std, np.float32).reshape(1, -1, 1, 1)
    return np.ascontiguousarray((x - mean) / std)


def artifact_kind(path: str | os.PathLike) -> str:
    """'engine', 'onnx', 'checkpoint' or 'export-dir', from the file itself."""
    p = Path(path)
    if p.is_dir():
        if any((p / n).is_file() for n in ("model.onnx", "model.fp16.onnx", "model.fp16.engine")):
            return "export-dir"
        if any((p / n).is_file() for n in ("best.pt", "last.pt")):
            return "checkpoint"
        raise SessionError(f"{p}: neither an export directory (model.onnx) nor a run directory (best.pt)")
    suffix = p.suffix.lower()
    if suffix in (".engine", ".plan", ".trt"):
        return "engine"
    if suffix == ".onnx":
        return "onnx"
    if suffix in (".pt", ".pth"):
        return "checkpoint"
    raise SessionError(f"{p}: unknown model type {suffix!r}; give an .onnx, .engine, .pt or a directory")


def open_session(path: str | os.PathLike, backend: str | None = None, **options: Any) -> Session:
    """Open an artifact with the named backend, or the one its type implies.

    options: ``providers`` (onnxruntime), ``device`` (torch), ``granularity`` (torch, for a
    matae-unet checkpoint), ``threads`` (onnxruntime intra-op threads).
    """
    p = Path(path)
    if not p.exists():
        raise SessionError(f"{p}: no such model file or directory")
    kind = artifact_kind(p)
    if kind == "export-dir":
        p, kind = _pick_from_export_dir(p, backend)
    if backend is None or backend == "auto":
        backend = {"engine": "tensorrt", "onnx": "onnxruntime", "checkpoint": "torch"}[kind]
    if backend not in BACKENDS:
        raise SessionError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)} or auto")
    want = {"tensorrt": "engine", "onnxruntime": "onnx", "torch": "checkpoint"}[backend]
    if kind != want:
        raise SessionError(f"{p}: a {kind} cannot be run with backend {backend}; give a {want} file")
    if backend == "onnxruntime":
        from .ort import OrtSession

        return OrtSession(p, **options)
    if backend == "torch":
        from .torch import TorchSession

        return TorchSession(p, **options)
    from .trt import TrtSession

    return TrtSession(p, **options)


def _pick_from_export_dir(d: Path, backend: str | None) -> tuple[Path, str]:
    order = {
        "tensorrt": ["model.fp16.engine"],
        "onnxruntime": ["model.onnx", "model.fp16.onnx", "model.int8.onnx"],
        "torch": [],
    }
    names = order.get(backend or "auto", order["tensorrt"] + order["onnxruntime"])
    for name in names:
        if (d / name).is_file():
            return d / name, "engine" if name.endswith(".engine") else "onnx"
    raise SessionError(f"{d}: no artifact for backend {backend or 'auto'} (looked for {', '.join(names) or 'a checkpoint'})")
