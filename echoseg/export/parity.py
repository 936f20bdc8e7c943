"""The parity gate: an exported graph must give the masks the PyTorch model gives.

One function runs every gate of the export: :func:`gate` runs a reference and a candidate on
the same frames and compares them at a named gate of :data:`GATES`. Either side is anything
with ``run(batch) -> logits``: an :mod:`echoseg.backends` session (how every file on disk is
opened, exactly as echo-run opens it), :class:`TorchModel` (the PyTorch model, the FP32
graph's reference), :class:`OnnxGraph` (a graph that exists only in memory), or logits
already computed on those frames (the FP32 graph's, shared by the gates after it).

Each comparison reports max/mean |logit difference|, pooled mask agreement (Dice) and the
LV-area error in pixels per frame; :func:`check` raises :class:`ExportParityError` with the
numbers when a gate is missed. Masks are ``sigmoid(logit) > threshold``, i.e. ``logit >
log(t / (1 - t))``, with the checkpoint's threshold.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol

import numpy as np

from echoseg.config import logit_cut
from echoseg.train.metrics import mask_agreement

from .onnx import ExportError

#: Gates per compared pair: (reference, candidate) -> limits.
GATES: dict[str, dict[str, float]] = {
    "fp32": {"max_abs_logit": 1e-3, "mask_dice": 0.999},  # ONNX Runtime FP32 vs PyTorch
    "fp16": {"mask_dice": 0.99},  # FP16 graph vs ONNX FP32 (ORT CPU and FP16 emulation)
    "int8": {"mask_dice": 0.98},  # INT8 QDQ graph vs ONNX FP32 (ONNX Runtime, and OpenVINO's integer kernels)
    "bf16": {"mask_dice": 0.99},  # FP32 graph run by OpenVINO in BF16 vs ONNX FP32 (as strict as fp16)
}


class ExportParityError(ExportError):
    """An exported graph whose outputs miss the parity gate; the message carries the numbers."""


def compare(reference: np.ndarray, candidate: np.ndarray, threshold: float = 0.5) -> dict[str, Any]:
    """Numbers comparing two logit arrays N,1,H,W (reference first)."""
    ref = np.asarray(reference, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    if ref.shape != cand.shape:
        raise ExportError(f"output shapes differ: reference {ref.shape} vs candidate {cand.shape}")
    cut = logit_cut(threshold)
    m_ref, m_cand = ref > cut, cand > cut
    diff = np.abs(ref - cand)
    axes = tuple(range(1, ref.ndim))
    area_ref, area_cand = m_ref.sum(axes), m_cand.sum(axes)
    area_err = np.abs(area_ref - area_cand).astype(np.float64)
    finite = bool(np.isfinite(cand).all())
    return {
        "frames": int(ref.shape[0]),
        "max_abs_logit": float(diff.max()) if finite else float("inf"),
        "mean_abs_logit": float(diff.mean()) if finite else float("inf"),
        "mask_dice": mask_agreement(m_ref, m_cand),
        "lv_area_ref_px": float(area_ref.mean()),
        "lv_area_err_px_mean": float(area_err.mean()),
        "lv_area_err_px_max": float(area_err.max()),
        "lv_area_err_pct_mean": float((area_err / np.maximum(area_ref, 1)).mean() * 100),
    }


def misses(report: dict[str, Any], gate: str) -> list[str]:
    """Human-readable list of the limits of ``gate`` that ``report`` misses (empty: passed)."""
    out = []
    limits = GATES[gate]
    if "max_abs_logit" in limits and not report["max_abs_logit"] <= limits["max_abs_logit"]:
        out.append(f"max |logit diff| {report['max_abs_logit']:.3g} > {limits['max_abs_logit']:g}")
    if "mask_dice" in limits and not report["mask_dice"] >= limits["mask_dice"]:
        out.append(f"mask agreement {report['mask_dice']:.5f} < {limits['mask_dice']:g}")
    return out


def missed_text(report: dict[str, Any], gate: str) -> str:
    """What ``report`` misses of ``gate`` and what to do, as the miss message says it after ``parity gate missed``."""
    return (f"({'; '.join(misses(report, gate))}; LV area error {report['lv_area_err_px_mean']:.1f} px "
            f"mean over {report['frames']} frames); re-export with --no-parity to keep it anyway, or "
            f"{'fewer fragile ops in reduced precision' if gate != 'fp32' else 'check the model exports deterministically'}")


def check(report: dict[str, Any], gate: str, what: str) -> dict[str, Any]:
    """Mark ``report`` with the gate's verdict; raise ExportParityError with the numbers on a miss."""
    missed = misses(report, gate)
    report["gate"] = dict(GATES[gate])
    report["passed"] = not missed
    if missed:
        raise ExportParityError(f"{what}: parity gate missed {missed_text(report, gate)}")
    return report


class Runner(Protocol):
    """What :func:`gate` runs: float32 N,C,H,W -> float32 logits N,1,H,W (every echoseg.backends session)."""

    def run(self, batch: np.ndarray) -> np.ndarray: ...


#: Worse-of numbers when a gate has several candidates: the larger error, the lower agreement.
_WORST_MAX = ("max_abs_logit", "mean_abs_logit", "lv_area_err_px_mean", "lv_area_err_px_max", "lv_area_err_pct_mean")


def gate(reference: Runner | np.ndarray, candidate: Runner | np.ndarray | Mapping[str, Runner | np.ndarray],
         frames: np.ndarray, name: str, *, threshold: float = 0.5,
         extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Run ``reference`` and ``candidate`` on ``frames`` and judge the candidate at gate ``name`` of GATES.

    Each side is a runner (``run(batch) -> logits``) or the logits it already gave on ``frames``.
    ``candidate`` may also be {label: runner}: several ways of running one graph, judged by the
    worse of each number over them, each report kept in full under its label (FP16: ONNX
    Runtime's CPU kernels and the FP16-tensor emulation). ``extra`` goes into the report before
    the verdict. Returns the report the manifest stores: :func:`compare`'s numbers, then ``gate``
    (the limits) and ``passed``. A miss raises nothing here: the caller rejects what it must
    (renaming a file) and then raises with :func:`check`. A runner's SessionError is an ExportError.
    """
    if name not in GATES:
        raise ExportError(f"unknown parity gate {name!r}; one of {', '.join(GATES)}")
    ref = run_logits(reference, frames)
    if isinstance(candidate, Mapping):
        reports = {label: compare(ref, run_logits(c, frames), threshold) for label, c in candidate.items()}
        report = worst(reports)
    else:
        report = compare(ref, run_logits(candidate, frames), threshold)
    report.update(extra or {})
    missed = misses(report, name)
    report["gate"] = dict(GATES[name])
    report["passed"] = not missed
    return report


def worst(reports: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    """One report over several runs of a graph: the worse of each number, every run's report kept in full."""
    first, *rest = reports.values()
    out = dict(first)
    for k in _WORST_MAX:
        out[k] = max(r[k] for r in reports.values())
    out["mask_dice"] = min(r["mask_dice"] for r in reports.values())
    out.update(reports)
    return out


def run_logits(side: Runner | np.ndarray, frames: np.ndarray) -> np.ndarray:
    """``side``'s logits on ``frames`` (a gate's side: a runner, or logits already computed on them)."""
    if isinstance(side, np.ndarray):
        if len(side) != len(frames):
            raise ExportError(f"logits of {len(side)} frames given for a gate on {len(frames)} frames")
        return side
    from echoseg.backends.session import SessionError

    try:
        return np.asarray(side.run(frames), dtype=np.float32)
    except SessionError as exc:
        raise ExportError(str(exc)) from exc


def open_graph(path: str | os.PathLike):
    """An ONNX file on disk as echo-run opens it on a CPU: echoseg.backends' OrtSession, CPU provider.

    Its SessionError (a graph ONNX Runtime cannot load) is an ExportError here. The caller closes it.
    """
    from echoseg.backends.ort import CPU, OrtSession
    from echoseg.backends.session import SessionError

    try:
        return OrtSession(Path(path), providers=[CPU])
    except SessionError as exc:
        raise ExportError(str(exc)) from exc


class TorchModel:
    """The PyTorch model at granularity ``g`` behind ``run(batch)``: the FP32 graph's reference."""

    def __init__(self, model, g: float, chunk: int = 16) -> None:
        self.model, self.g, self.chunk = model, g, chunk

    def run(self, batch: np.ndarray) -> np.ndarray:
        return torch_logits(self.model, batch, self.g, self.chunk)

    def close(self) -> None:
        pass


class OnnxGraph:
    """An ONNX graph that exists only in memory (a ModelProto or its bytes) on ONNX Runtime's CPU provider.

    Only for what is never a file: the FP16 emulation (:func:`echoseg.export.fp16.emulate_fp16`)
    is built for the gate and thrown away, and must run with ONNX Runtime's graph optimisations
    off (``optimize=False``), which would otherwise remove the Cast pairs that do its FP16
    rounding; an echoseg.backends session opens files only, always optimised. Every exported
    file is opened with :func:`open_graph` instead.
    """

    def __init__(self, graph, *, optimize: bool = False, chunk: int = 16, name: str = "graph") -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                         else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
        opts.log_severity_level = 3
        src = graph if isinstance(graph, bytes) else graph.SerializeToString()
        try:
            self._sess = ort.InferenceSession(src, sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime's own exception types
            raise ExportError(f"{name}: ONNX Runtime cannot load it ({str(exc).splitlines()[0][:200]})") from exc
        self._input = self._sess.get_inputs()[0].name
        self.chunk = chunk

    def run(self, batch: np.ndarray) -> np.ndarray:
        outs = [self._sess.run(None, {self._input: np.ascontiguousarray(batch[i:i + self.chunk], dtype=np.float32)})[0]
                for i in range(0, len(batch), self.chunk)]
        return np.concatenate(outs).astype(np.float32)

    def close(self) -> None:
        self._sess = None


def batch1_latency_ms(runners: dict[str, Callable[[np.ndarray], Any]], frame: np.ndarray, rounds: int = 7,
                      calls: int = 3) -> dict[str, float]:
    """Median batch-1 latency of each runner, measured interleaved (A, B, C, A, B, C, ...) after warm-up.

    What auto ranks passed precisions by, and what the export prints beside the parity numbers: a
    figure from the export machine, not a benchmark (echo-bench compare is that).
    """
    x = np.ascontiguousarray(frame[:1], np.float32)
    for run in runners.values():
        run(x)
    per: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(rounds):
        for k, run in runners.items():
            t = time.perf_counter()
            for _ in range(calls):
                run(x)
            per[k].append((time.perf_counter() - t) / calls * 1e3)
    return {k: statistics.median(v) for k, v in per.items()}


def torch_logits(model, batch: np.ndarray, g: float, chunk: int = 16) -> np.ndarray:
    """Logits of the PyTorch model at granularity g (the reference)."""
    import torch

    model.eval()
    outs = []
    with torch.inference_mode():
        for i in range(0, len(batch), chunk):
            outs.append(model(torch.from_numpy(np.ascontiguousarray(batch[i:i + chunk])), g).float().numpy())
    return np.concatenate(outs)
