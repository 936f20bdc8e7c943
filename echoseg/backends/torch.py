"""PyTorch backend: a checkpoint run as the reference (imports torch; the edge path never does).

It lives in backends/, beside the other backends, so echo-run and echo-bench open it like any
other; the checkpoint reader and the model zoo (``echoseg.models.checkpoint``, ``echoseg.models``)
are imported inside :class:`TorchSession`, never when the runtime is imported, so an ONNX or
TensorRT run loads neither torch nor the models.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .registry import Backend, importable as _importable, register
from .session import BaseSession, SessionError, SessionInfo

log = logging.getLogger(__name__)


class TorchSession(BaseSession):
    """A checkpoint's model at one granularity, on the CPU or a CUDA device."""

    def __init__(self, path: str | Path, device: str = "auto", granularity: float | None = None,
                 precision: str = "fp32") -> None:
        try:
            import torch

            from echoseg.models.checkpoint import CheckpointError, build_from_checkpoint, load_checkpoint
        except ImportError as exc:
            raise SessionError(f"{path}: the torch backend needs PyTorch ({exc}); pip install 'echoseg[train]' "
                               "or run an exported .onnx with onnxruntime") from exc
        try:
            ckpt = load_checkpoint(path)
            model = build_from_checkpoint(ckpt)
        except CheckpointError as exc:
            raise SessionError(str(exc)) from exc
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self._device = torch.device(device)
        g = 1.0 if granularity is None else float(granularity)
        try:
            model.default_granularity(g)
        except ValueError as exc:
            raise SessionError(f"{path}: {exc}") from exc
        self._g = g
        if precision not in ("fp32", "fp16"):
            raise SessionError(f"torch precision {precision!r} is not supported; use fp32 or fp16 (CUDA)")
        self._dtype = torch.float16 if precision == "fp16" else torch.float32
        if precision == "fp16" and self._device.type != "cuda":
            raise SessionError("torch fp16 needs a CUDA device; use precision fp32 on the CPU")
        self._model = model.to(self._device, self._dtype).eval()
        self._torch = torch
        self.info = SessionInfo(
            backend="torch", precision=precision, device=str(self._device), min_batch=1, max_batch=0,
            meta=ckpt.meta(granularity=g), path=str(ckpt.path),
            extra={"torch": torch.__version__},
        )

    def _run_piece(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self._device, self._dtype)
            y = self._model(x, self._g)
            return y.float().cpu().numpy()

    def _close(self) -> None:
        self._model = None


def _problem(path: Path) -> str | None:
    if not _importable("torch"):
        return "PyTorch is not installed (pip install 'echoseg[train]')"
    return None


def _set_threads(n: int) -> None:
    """echo-bench: torch's intra-op threads (its session takes no threads option)."""
    import torch

    torch.set_num_threads(n)


def _sync(session):
    """echo-bench: what waits for a CUDA session's queued work before a clock is read (None on the CPU)."""
    if str(session.info.device).startswith("cuda"):
        import torch

        return torch.cuda.synchronize
    return None


BACKEND = register(Backend(name="torch", artifact="checkpoint", rank=30, open=TorchSession, problem=_problem,
                           options=("device", "granularity", "precision"),
                           description="PyTorch reference on a checkpoint (CPU or CUDA)",
                           # bf16 is planned as echo-bench always has: the worker reports TorchSession's refusal
                           label="PyTorch", bench_precisions=("fp32", "bf16", "fp16"), gpu_precisions=("fp16",),
                           library="torch", bench_options=("device", "precision", "granularity"),
                           set_threads=_set_threads, sync=_sync))
