"""ONNX Runtime backend: CPU everywhere; CUDA and TensorRT providers where onnxruntime-gpu is."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from echoseg.config import ONNX_META_KEY, ArtifactMeta, ConfigError

from .session import SessionError, SessionInfo

log = logging.getLogger(__name__)

PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def read_onnx_meta(path: str | Path) -> ArtifactMeta:
    """The ArtifactMeta stored in an ONNX file's metadata_props (via ONNX Runtime, no onnx import)."""
    import onnxruntime as ort

    try:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
        raise SessionError(f"{path}: ONNX Runtime cannot load it ({str(exc).splitlines()[0][:200]})") from exc
    return _meta_of(sess, path)


def _meta_of(sess, path) -> ArtifactMeta:
    props = sess.get_modelmeta().custom_metadata_map
    if ONNX_META_KEY not in props:
        raise SessionError(f"{path}: ONNX file has no {ONNX_META_KEY!r} metadata; export it with echo-export build")
    try:
        return ArtifactMeta.from_json(props[ONNX_META_KEY])
    except ConfigError as exc:
        raise SessionError(f"{path}: bad {ONNX_META_KEY!r} metadata ({exc})") from exc


def _precision_of(path: Path) -> str:
    name = path.name.lower()
    return "fp16" if ".fp16." in name else "int8" if ".int8." in name else "fp32"


class OrtSession:
    """An ONNX Runtime InferenceSession behind the Session protocol."""

    def __init__(self, path: str | Path, providers: Sequence[str] | None = None, threads: int = 0) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        available = ort.get_available_providers()
        wanted = [p for p in (providers or PREFERRED_PROVIDERS) if p in available] or ["CPUExecutionProvider"]
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = int(threads)
        try:
            self._sess = ort.InferenceSession(str(self.path), sess_options=opts, providers=wanted)
        except Exception as exc:  # onnxruntime's own exception types
            raise SessionError(f"{self.path}: ONNX Runtime cannot load it ({str(exc).splitlines()[0][:200]})") from exc
        meta = _meta_of(self._sess, self.path)
        inp = self._sess.get_inputs()[0]
        self._input = inp.name
        self._output = self._sess.get_outputs()[0].name
        self._input_fp16 = inp.type == "tensor(float16)"
        used = self._sess.get_providers()
        log.info("onnxruntime session on %s with %s", self.path.name, used)
        batch_dim = inp.shape[0]
        fixed = batch_dim if isinstance(batch_dim, int) and batch_dim > 0 else 0
        self.info = SessionInfo(
            backend="onnxruntime", precision=_precision_of(self.path),
            device=used[0] if used else "CPUExecutionProvider",
            min_batch=fixed or 1, max_batch=fixed, meta=meta, path=str(self.path),
            extra={"providers": used, "onnxruntime": ort.__version__},
        )

    def run(self, batch: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(batch, dtype=np.float16 if self._input_fp16 else np.float32)
        try:
            (y,) = self._sess.run([self._output], {self._input: x})
        except Exception as exc:  # onnxruntime's Fail/InvalidArgument derive from Exception only
            raise SessionError(f"{self.path}: ONNX Runtime failed on a batch of shape {x.shape} "
                               f"({str(exc).splitlines()[0][:200]})") from exc
        return np.asarray(y, dtype=np.float32)

    def close(self) -> None:
        self._sess = None
