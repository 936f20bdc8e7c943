"""The one backend protocol that the runtime and the benchmark use (a protocol, not a factory).

``Session.run(batch)`` takes float32 N,C,H,W (already normalised with the artifact's
InputSpec), any N >= 1, and returns logits N,1,H,W as float32; ``info`` says what runs where;
``close()`` frees it. Backends implement it in their own modules and register themselves in
:mod:`echoseg.backends.registry`; :func:`echoseg.backends.choose.open_session` picks one. This module imports no
backend, so there is no import loop.

Every built-in backend's session is a :class:`BaseSession`: the input check, the split into
pieces the backend takes in one call, the zero padding of a short piece up to the smallest batch
it takes (and the trimming of the padding's outputs) are written once there, and a backend
implements only ``_run_piece`` (one call) and ``_close``. Callers hand whole batches of any
size; nobody outside a session pads.
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


class BaseSession:
    """What every backend session shares: ``run`` checks, splits, pads and trims; ``close`` runs once.

    A subclass sets ``info`` and implements ``_run_piece(x)`` (one backend call on a piece of
    ``min_piece..max_piece`` frames, returning its logits) and ``_close()``. ``max_piece``: the most
    frames one call takes (0: the whole batch; None: ``info.max_batch``); ``min_piece``: the fewest
    (None: ``info.min_batch``): a shorter piece is zero-padded up to it and the padding's outputs
    dropped. ``with session:`` closes it on every path, errors included.
    """

    info: SessionInfo
    max_piece: int | None = None
    min_piece: int | None = None
    #: What the input shape is compared with, in the error message ("model", "engine").
    takes = "model"
    _closed = False

    def run(self, batch: np.ndarray) -> np.ndarray:
        """float32 N,C,H,W (N >= 1) -> float32 logits N,1,H,W, in as many backend calls as the backend needs."""
        x = self._checked(batch)
        n = len(x)
        hi = self.info.max_batch if self.max_piece is None else self.max_piece
        lo = self.info.min_batch if self.min_piece is None else self.min_piece
        step = hi or n
        outs = []
        for i in range(0, n, step):
            piece = x[i:i + step]
            k = len(piece)
            if k < lo:
                piece = np.concatenate([piece, np.zeros((lo - k, *piece.shape[1:]), piece.dtype)])
            y = self._run_piece(piece)
            outs.append(y[:k] if len(y) > k else y)
        return np.asarray(outs[0] if len(outs) == 1 else np.concatenate(outs), dtype=np.float32)

    def _checked(self, batch: np.ndarray) -> np.ndarray:
        """The batch as an array, or a one-line SessionError that names the file and what to fix."""
        path = self.info.path
        if self._closed:
            raise SessionError(f"{path}: this {self.info.backend} session is closed; open a new one to run it")
        x = np.asarray(batch)
        if x.ndim != 4:
            raise SessionError(f"{path}: expected a batch N,C,H,W, got an array of shape {x.shape}; "
                               "stack the frames along a first axis (one frame: x[None])")
        if x.dtype.kind != "f":
            raise SessionError(f"{path}: expected float frames, got {x.dtype}; normalise them with the "
                               "artifact's input spec first (echoseg.artifacts.preprocess)")
        want = tuple(self.info.meta.input_spec.shape)
        if tuple(x.shape[1:]) != want:
            raise SessionError(f"{path}: input of shape {tuple(x.shape[1:])} given, the {self.takes} takes {want} "
                               "(C,H,W); preprocess the frames with the artifact's input spec")
        if len(x) == 0:
            raise SessionError(f"{path}: empty batch (0 frames); give a batch N,C,H,W with N >= 1")
        return x

    def _run_piece(self, x: np.ndarray) -> np.ndarray:
        """One backend call on ``min_piece..max_piece`` frames: logits N,1,H,W."""
        raise NotImplementedError

    def close(self) -> None:
        """Free the backend's resources; a second call does nothing."""
        if not self._closed:
            self._closed = True
            self._close()

    def _close(self) -> None:
        """The backend's own release (called once)."""

    def __enter__(self) -> "BaseSession":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
