"""OpenVINO backend: the same ONNX exports on Intel's CPU runtime, in FP32, BF16 or INT8.

The graph runs through :class:`echoseg.backends.ovplan.Runner` (static batch shapes, at most two; less memory
than a dynamic batch axis), the compile plan (precision hints, threads) from :mod:`echoseg.backends.ovplan`,
the module the exporter's OpenVINO parity gate runs through too. ``precision``: ``fp32`` or ``bf16`` on ``model.onnx``,
``int8`` on ``model.int8.onnx`` (the default is the file's own precision).

``auto`` on a CPU: in an export directory this backend picks the fastest precision whose OpenVINO
parity record in ``manifest.json`` passed (int8, then bf16 where the CPU lists BF16, then fp32),
and passes itself over, with the reason, when the export holds no such record (exported without
OpenVINO) or when a CUDA GPU with onnxruntime-gpu is here.
"""

from __future__ import annotations

import logging
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from . import ovplan
from echoseg.artifacts import ArtifactError, ExportIndex, parity_record, precision_of, read_onnx_meta

from .registry import Backend, importable as _importable, register
from .session import BaseSession, SessionError, SessionInfo

log = logging.getLogger(__name__)

#: auto's order on a CPU, fastest first (measured: README, "OpenVINO"); each needs a passed record
AUTO_ORDER = ("int8", "bf16", "fp32")


def record_key(precision: str) -> str:
    """The manifest parity key of OpenVINO ``precision`` against ONNX Runtime FP32."""
    return f"openvino_{precision}_vs_fp32"


class OpenVinoSession(BaseSession):
    """An OpenVINO compiled model (CPU) behind the Session protocol.

    Pieces of at most ovplan.MAX_COMPILED_BATCH frames; the padding of a piece up to a compiled
    static shape stays with the Runner (it depends on which shapes are compiled, not on one fixed
    minimum)."""

    @property
    def max_piece(self) -> int:
        return ovplan.MAX_COMPILED_BATCH

    def __init__(self, path: str | Path, precision: str | None = None, threads: int = 0,
                 device: str = "CPU") -> None:
        self.path = Path(path)
        try:
            meta = read_onnx_meta(self.path)
        except ArtifactError as exc:
            raise SessionError(str(exc)) from exc
        file_precision = precision_of(self.path)
        precision = precision or file_precision
        try:
            self._runner = ovplan.Runner(self.path, precision, file_precision, threads, device)  # refuses a wrong pairing
            _refuse_failed_gate(self.path, meta.granularity, precision)
        except ovplan.OpenVinoError as exc:
            raise SessionError(f"{self.path}: {exc}" if str(self.path) not in str(exc) else str(exc)) from exc
        props = self._runner.props
        log.info("openvino on %s: precision %s, properties %s", self.path.name, precision, props)
        self.info = SessionInfo(
            backend="openvino", precision=precision, device=device, min_batch=1, max_batch=0, meta=meta,
            path=str(self.path),
            extra={"openvino": ovplan.version(), "properties": {k: str(v) for k, v in props.items()},
                   "capabilities": list(ovplan.capabilities(device))},
        )

    def _run_piece(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        try:
            return self._runner.run_piece(x)
        except ovplan.OpenVinoError as exc:
            raise SessionError(str(exc)) from exc
        except RuntimeError as exc:
            raise SessionError(f"{self.path}: OpenVINO failed on a batch of shape {x.shape} "
                               f"({str(exc).splitlines()[0][:200]})") from exc

    def _close(self) -> None:
        self._runner.close()


def _refuse_failed_gate(path: Path, g: float, precision: str) -> None:
    rep = parity_record(path.parent, g, record_key(precision))
    if rep is not None and rep.get("passed") is False:
        raise SessionError(f"{path}: OpenVINO {precision} missed the export's parity gate (mask agreement "
                           f"{rep.get('mask_dice', float('nan')):.5f}); use another precision or backend")
    if rep is None and precision == "bf16":
        log.warning("%s: no OpenVINO bf16 parity record in its export's manifest; running it unchecked", path)


def _problem(path: Path) -> str | None:
    if not _importable("openvino"):
        return "OpenVINO is not installed (pip install 'echoseg[openvino]')"
    if precision_of(path) == "fp16":
        return "the FP16 graph is for TensorRT; OpenVINO runs model.onnx (fp32/bf16) and model.int8.onnx"
    return None


def _defer() -> str | None:
    """Why auto passes OpenVINO over although it could run: a CUDA GPU that ONNX Runtime can use."""
    try:
        metadata.version("onnxruntime-gpu")
    except metadata.PackageNotFoundError:
        return None
    if Path("/dev/nvidia0").exists() or Path("/proc/driver/nvidia/version").exists():
        return "a CUDA GPU and onnxruntime-gpu are here; ONNX Runtime's CUDA provider runs instead"
    return None


def pick(index: ExportIndex, granularity: float | None, precision: str | None = None,
         only: Path | None = None) -> tuple[Path | None, dict[str, Any], str]:
    """auto in an export directory (or on its file ``only``): (file, open options, why), or (None, {}, why not).

    Among the precisions whose OpenVINO parity record passed, the one with the lowest batch-1
    latency the exporter measured (interleaved, on its machine); AUTO_ORDER breaks a missing figure.
    """
    g = 1.0 if granularity is None else float(granularity)
    tried, passed = [], []
    for prec in (AUTO_ORDER if precision is None else [p for p in AUTO_ORDER if p == precision]):
        found = index.select("onnx", granularity, ("int8",) if prec == "int8" else ("fp32",))
        if found is None or found.problem:
            tried.append(f"no {prec} graph" if found is None else f"{found.path.name}: {found.problem}")
            continue
        if only is not None and found.path.resolve() != Path(only).resolve():
            continue  # a file was given: only the ways of running that file
        rep = parity_record(index.dir, g, record_key(prec))
        if rep is None or rep.get("passed") is not True:
            why = ("no OpenVINO parity record in manifest.json (re-export with OpenVINO installed)" if rep is None
                   else rep.get("skipped") or rep.get("error") or "missed the parity gate")
            tried.append(f"{prec}: {why}")
            continue
        try:  # asked only now: OpenVINO is imported only when a record says it may run (auto stays light)
            if prec == "bf16" and not ovplan.has_bf16():
                tried.append(f"bf16: this CPU reports no BF16 ({', '.join(ovplan.capabilities())})")
                continue
        except ovplan.OpenVinoError as exc:
            return None, {}, str(exc)
        passed.append((rep.get("latency_ms_b1", float("inf")), AUTO_ORDER.index(prec), prec, found.path, rep))
    if not passed:
        return None, {}, "; ".join(tried) or f"precision {precision} is not one OpenVINO runs"
    passed.sort(key=lambda p: (p[0], p[1]))
    _, _, prec, path, rep = passed[0]
    timings = ", ".join(f"{p[2]} {p[0]:.2f} ms" for p in passed)
    why = (f"OpenVINO {prec}: fastest that passed parity (mask agreement {rep['mask_dice']:.4f} vs FP32; "
           f"batch-1 latency at export: {timings})")
    return path, {"precision": prec}, "; ".join(tried + [why])


def _unavailable(precision: str) -> str | None:
    """echo-bench: why this CPU cannot run ``precision`` with OpenVINO (None: it can)."""
    if precision == "bf16" and not ovplan.has_bf16():
        return f"this CPU reports no BF16 to OpenVINO ({', '.join(ovplan.capabilities())})"
    return None


BACKEND = register(Backend(name="openvino", artifact="onnx", rank=15, open=OpenVinoSession, problem=_problem,
                           options=("precision", "threads", "device"), defer=_defer, pick=pick,
                           description="OpenVINO on the CPU: fp32, bf16 (where the CPU has it) and the INT8 QDQ graph",
                           label="OpenVINO", bench_precisions=("fp32", "bf16", "int8"),
                           file_precision={"bf16": "fp32"},  # the FP32 graph run in BF16; FP16 graphs left to TensorRT
                           unavailable=_unavailable, plan_check="library", library="openvino",
                           bench_options=("threads", "precision"),
                           table1_rank=25))  # table1's auto keeps ONNX Runtime first; --backend openvino for its row
