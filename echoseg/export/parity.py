"""The parity gate: an exported graph must give the masks the PyTorch model gives.

Each comparison reports max/mean |logit difference|, pooled mask agreement (Dice) and the
LV-area error in pixels per frame; :func:`check` raises :class:`ExportParityError` with the
numbers when a gate is missed. Masks are ``sigmoid(logit) > threshold``, i.e. ``logit >
log(t / (1 - t))``, with the checkpoint's threshold.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any, Callable

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


def check(report: dict[str, Any], gate: str, what: str) -> dict[str, Any]:
    """Mark ``report`` with the gate's verdict; raise ExportParityError with the numbers on a miss."""
    missed = misses(report, gate)
    report["gate"] = dict(GATES[gate])
    report["passed"] = not missed
    if missed:
        raise ExportParityError(
            f"{what}: parity gate missed ({'; '.join(missed)}; LV area error {report['lv_area_err_px_mean']:.1f} px "
            f"mean over {report['frames']} frames); re-export with --no-parity to keep it anyway, or "
            f"{'fewer fragile ops in reduced precision' if gate != 'fp32' else 'check the model exports deterministically'}"
        )
    return report


def run_onnx(path: str | os.PathLike | bytes, batch: np.ndarray, *, optimize: bool = True,
             chunk: int = 16) -> np.ndarray:
    """Logits of an ONNX graph on ONNX Runtime's CPU provider, run ``chunk`` frames at a time."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                     else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    opts.log_severity_level = 3
    src = path if isinstance(path, bytes) else str(path)
    try:
        sess = ort.InferenceSession(src, sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's own exception types
        name = "graph" if isinstance(path, bytes) else os.fspath(path)
        raise ExportError(f"{name}: ONNX Runtime cannot load it ({str(exc).splitlines()[0][:200]})") from exc
    name_in = sess.get_inputs()[0].name
    outs = [sess.run(None, {name_in: np.ascontiguousarray(batch[i:i + chunk], dtype=np.float32)})[0]
            for i in range(0, len(batch), chunk)]
    return np.concatenate(outs).astype(np.float32)


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
