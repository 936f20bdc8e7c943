"""The one backend protocol that the runtime and the benchmark use (a protocol, not a factory).

``Session.run(batch)`` takes float32 N,C,H,W (already normalised with the artifact's
InputSpec) and returns logits N,1,H,W as float32; ``info`` says what runs where; ``close()``
frees it. Backends implement it in their own modules and register themselves in
:mod:`echoseg.backends.registry`; :func:`echoseg.backends.choose.open_session` picks one. This module imports no
backend, so there is no import loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from echoseg.artifacts import preprocess  # noqa: F401  (re-exported: preprocessing lives in artifacts)
from echoseg.config import ArtifactMeta
from echoseg.errors import EchosegError


class SessionError(EchosegError, RuntimeError):
    """A model artifact that cannot be opened or run with the asked-for backend."""


@dataclass(frozen=True)
class SessionInfo:
    backend: str  # a registered backend name: tensorrt | onnxruntime | torch | ...
    precision: str  # fp32 | fp16 | int8
    device: str  # e.g. "cpu", "cuda:0", "CUDAExecutionProvider"
    min_batch: int
    max_batch: int  # 0 = no limit
    meta: ArtifactMeta
    path: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def on_gpu(self) -> bool:
        """Whether the session computes on a CUDA device (what NVML sampling is for)."""
        d = str(self.device).lower()
        return "cuda" in d or "tensorrt" in d


@runtime_checkable
class Session(Protocol):
    info: SessionInfo

    def run(self, batch: np.ndarray) -> np.ndarray:
        """float32 N,C,H,W -> float32 logits N,1,H,W."""

    def close(self) -> None:
        """Free the backend's resources."""
