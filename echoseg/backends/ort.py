"""ONNX Runtime backend, with its execution providers chosen explicitly and logged.

Default: the CUDA provider when onnxruntime-gpu sees a GPU, then the CPU provider. The TensorRT
provider only when asked for (``providers=[...]`` naming it, or ``tensorrt=True``): then with its
engine cache in the export directory (``.ort-trt-cache/``, hidden so no index lists it) and
profile shapes from the export's batch profile, so it builds once and never rebuilds when a
video's last batch is shorter.

``auto`` in an export directory: the FP32 graph (else FP16), except on a CPU-only ONNX Runtime
where the INT8 graph passed its gate and the exporter measured it faster than FP32 at batch 1
(``int8_vs_fp32.onnxruntime_latency_ms_b1`` in the manifest): then the INT8 graph, and the
reason says so. An INT8 graph measured slower (a thin sub-network, where Q/DQ costs more than the
integer kernels save) is never picked by itself.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from echoseg.artifacts import (ArtifactError, ExportIndex, manifest_profile, parity_record, precision_of,
                               read_onnx_meta)
from echoseg.config import InputSpec

from .registry import Backend, importable as _importable, register
from .session import BaseSession, SessionError, SessionInfo

log = logging.getLogger(__name__)

CPU, CUDA, TRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"
TRT_CACHE_DIR = ".ort-trt-cache"
#: On the CPU provider alone a batch runs in pieces of this many frames: ORT's arena grows with the
#: batch (about 5 MB a frame at width 16) while its CPU speed per frame does not (measured on the
#: shipped model, 2-core Zen 4, one session, interleaved: pieces of 4 within 3% of one call of 16
#: and no slower, FP32, FP16-upcast and INT8, 1 and 2 threads; peak RSS of a batch-16 run 187 MB
#: in one call, 130 MB in pieces of 4). GPU providers get the whole batch.
CPU_PIECE = 4


def provider_plan(available: Sequence[str], requested: Sequence[str] | None, onnx_path: Path,
                  spec: InputSpec, input_name: str = "frames", tensorrt: bool = False) -> list[Any]:
    """The providers (with options) to hand to InferenceSession; pure, so it is tested without a GPU."""
    if requested:
        missing = [p for p in requested if p not in available]
        if missing:
            raise SessionError(f"{onnx_path}: ONNX Runtime here has no {', '.join(missing)} (available: "
                               f"{', '.join(available)}); install onnxruntime-gpu with pip install 'echoseg[gpu]'")
        wanted = list(requested)
    else:
        wanted = ([TRT] if tensorrt and TRT in available else []) + ([CUDA] if CUDA in available else []) + [CPU]
        if tensorrt and TRT not in available:
            raise SessionError(f"{onnx_path}: the TensorRT execution provider was asked for but ONNX Runtime here "
                               f"offers {', '.join(available)}")
    if CPU not in wanted:
        wanted.append(CPU)
    plan: list[Any] = []
    for name in wanted:
        if name == TRT:
            lo, opt, hi = manifest_profile(onnx_path.parent)
            c, h, w = spec.shape

            def shape(n: int) -> str:
                return f"{input_name}:{n}x{c}x{h}x{w}"

            cache = onnx_path.parent / TRT_CACHE_DIR
            plan.append((TRT, {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache),
                               "trt_timing_cache_enable": True, "trt_timing_cache_path": str(cache),
                               "trt_profile_min_shapes": shape(lo), "trt_profile_opt_shapes": shape(opt),
                               "trt_profile_max_shapes": shape(hi)}))
        else:
            plan.append(name)
    return plan


class OrtSession(BaseSession):
    """An ONNX Runtime InferenceSession behind the Session protocol.

    Pieces: a fixed-batch graph takes exactly its batch (a short piece padded up to it); the CPU
    provider alone runs a dynamic-batch graph in pieces of CPU_PIECE; GPU providers the whole batch."""

    def __init__(self, path: str | Path, providers: Sequence[str] | None = None, threads: int = 0,
                 tensorrt: bool = False) -> None:
        ort = _import_ort(path)
        self.path = Path(path)
        try:
            meta = read_onnx_meta(self.path)
        except ArtifactError as exc:
            raise SessionError(str(exc)) from exc
        plan = provider_plan(ort.get_available_providers(), providers, self.path, meta.input_spec,
                             tensorrt=tensorrt)
        if any(isinstance(p, tuple) for p in plan):
            (self.path.parent / TRT_CACHE_DIR).mkdir(exist_ok=True)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # no memory pattern: ORT would plan (and keep) one arena block per input shape it has seen,
        # so a video's short last batch adds a second plan; without it the arena reuses its blocks
        # (measured: batch-16 session 165 MB instead of 242 MB, same speed; README, "echo-run")
        opts.enable_mem_pattern = False
        if threads:
            opts.intra_op_num_threads = int(threads)
        try:
            self._sess = ort.InferenceSession(str(self.path), sess_options=opts, providers=plan)
        except Exception as exc:  # onnxruntime's own exception types
            raise SessionError(f"{self.path}: ONNX Runtime cannot load it ({str(exc).splitlines()[0][:200]})") from exc
        inp = self._sess.get_inputs()[0]
        self._input = inp.name
        self._output = self._sess.get_outputs()[0].name
        self._input_fp16 = inp.type == "tensor(float16)"
        used = self._sess.get_providers()
        asked = [p if isinstance(p, str) else p[0] for p in plan]
        log.info("onnxruntime on %s: providers asked %s, in use %s", self.path.name, asked, used)
        if used and used[0] != asked[0]:
            log.warning("onnxruntime on %s: %s was asked for first but %s is in use", self.path.name, asked[0], used[0])
        batch_dim = inp.shape[0]
        fixed = batch_dim if isinstance(batch_dim, int) and batch_dim > 0 else 0
        if used == [CPU] and not fixed:
            self.max_piece = CPU_PIECE  # else info's batch range: a fixed batch, or the whole batch
        self.info = SessionInfo(
            backend="onnxruntime", precision=precision_of(self.path),
            device=used[0] if used else CPU,
            min_batch=fixed or 1, max_batch=fixed, meta=meta, path=str(self.path),
            extra={"providers": used, "providers_asked": asked, "onnxruntime": ort.__version__},
        )

    def _run_piece(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float16 if self._input_fp16 else np.float32)
        try:
            return self._sess.run([self._output], {self._input: x})[0]
        except Exception as exc:  # onnxruntime's Fail/InvalidArgument derive from Exception only
            raise SessionError(f"{self.path}: ONNX Runtime failed on a batch of shape {x.shape} "
                               f"({str(exc).splitlines()[0][:200]})") from exc

    def _close(self) -> None:
        self._sess = None


def _import_ort(path):
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise SessionError(f"{path}: ONNX Runtime is not installed ({exc}); pip install 'echoseg[cpu]' "
                           "(or 'echoseg[gpu]' for onnxruntime-gpu)") from exc
    return ort


def _problem(path: Path) -> str | None:
    if not _importable("onnxruntime"):
        return "onnxruntime is not installed (pip install 'echoseg[cpu]' or 'echoseg[gpu]')"
    return None


def pick(index: ExportIndex, granularity: float | None, precision: str | None = None,
         only: Path | None = None) -> tuple[Path | None, dict[str, Any], str]:
    """auto in an export directory (or on its file ``only``): (file, {}, why), or (None, {}, why not)."""
    if only is not None:
        return Path(only), {}, "the file given"
    g = 1.0 if granularity is None else float(granularity)
    default = index.select("onnx", granularity, ("fp32", "fp16"))
    int8 = index.select("onnx", granularity, ("int8",))
    if default is None and int8 is None:
        return None, {}, f"no ONNX graph at granularity {g:g}"
    rec = parity_record(index.dir, g, "int8_vs_fp32") if int8 is not None and not int8.problem else None
    ms = (rec or {}).get("onnxruntime_latency_ms_b1") or {}
    measured = rec is not None and rec.get("passed") is True and ms.get("int8", 0) > 0 and ms.get("fp32", 0) > 0
    if measured and ms["int8"] < ms["fp32"] and _cpu_only():
        return int8.path, {}, (f"INT8 passed its gate (mask agreement {rec['mask_dice']:.4f}) and ran faster than "
                               f"FP32 at export ({ms['int8']:.2f} vs {ms['fp32']:.2f} ms at batch 1)")
    if default is None:
        return int8.path, {}, "the only graph at this granularity"
    slower = measured and ms["int8"] >= ms["fp32"]
    return default.path, {}, "INT8 was slower than FP32 at export" if slower else f"{default.precision} graph"


def _cpu_only() -> bool:
    """Whether this ONNX Runtime computes on the CPU only: provider_plan takes CUDA whenever it is there."""
    try:
        import onnxruntime as ort
    except ImportError:
        return True
    return CUDA not in ort.get_available_providers()


BACKEND = register(Backend(name="onnxruntime", artifact="onnx", rank=20, open=OrtSession, problem=_problem,
                           options=("providers", "threads", "tensorrt"), pick=pick,
                           description="ONNX Runtime: CUDA provider on a GPU, else CPU; TensorRT provider when asked",
                           label="ONNX Runtime", bench_precisions=("fp32", "fp16", "int8"), plan_check="",
                           missing="{dir} has no {prec} ONNX; make one with echo-export", library="onnxruntime",
                           bench_options=("threads",)))
