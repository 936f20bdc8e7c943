"""The OpenVINO parity gate: each OpenVINO precision against ONNX Runtime FP32, recorded in the manifest.

Run by echo-export where OpenVINO is installed, on the same frames as the other gates, with each
graph opened as the runtime opens it (:class:`echoseg.backends.openvino.OpenVinoSession`, compiled
by :mod:`echoseg.backends.ovplan`) and judged by :func:`echoseg.export.parity.gate`. BF16 is not a
file but a way of running ``model.onnx``, so a miss rejects nothing: the report says ``passed: false``
and the runtime's ``auto`` never picks that precision (asking for it explicitly is refused).
Gates (export/parity.py): fp32 as ONNX FP32 vs PyTorch, bf16 like fp16 (mask agreement >= 0.99),
int8 like the INT8 graph (>= 0.98). BF16 is gated only where the CPU runs it natively; elsewhere
the report says why it was skipped.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any, Callable

import numpy as np

from echoseg.backends import ovplan
from echoseg.backends.session import SessionError

from .onnx import ExportError
from .parity import batch1_latency_ms, gate, missed_text


def available() -> bool:
    try:
        return importlib.util.find_spec("openvino") is not None
    except (ImportError, ValueError):
        return False


class _NoRecordWarning(logging.Filter):
    """While the export writes the directory there is no manifest yet, so OpenVinoSession's warning
    that a bf16 run has no parity record is true but beside the point: this is the run that makes it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "parity record" not in record.getMessage()


def open_session(path: str | Path, precision: str):
    """``path`` at OpenVINO ``precision`` (CPU), as the runtime opens it; the caller closes it."""
    from echoseg.backends.openvino import OpenVinoSession

    logger = logging.getLogger("echoseg.backends.openvino")
    quiet = _NoRecordWarning()
    logger.addFilter(quiet)
    try:
        return OpenVinoSession(path, precision)
    finally:
        logger.removeFilter(quiet)


def gate_all(fp32_path: Path, int8_path: Path | None, x: np.ndarray, y32: np.ndarray, threshold: float,
             say: Callable[[str], None], int8_form: str = "cpu") -> dict[str, dict[str, Any]]:
    """{openvino_<precision>_vs_fp32: report} for fp32, bf16 and (with an INT8 graph) int8."""
    out: dict[str, dict[str, Any]] = {}
    live: dict[str, Any] = {}
    native = ovplan.has_bf16()
    plan = [("fp32", fp32_path, "fp32"), ("bf16", fp32_path, "bf16")] + ([("int8", int8_path, "int8")] if int8_path else [])
    for prec, path, name in plan:
        key = f"openvino_{prec}_vs_fp32"
        if prec == "bf16" and not native:
            out[key] = {"passed": None, "skipped": f"this CPU reports no BF16 ({', '.join(ovplan.capabilities())})"}
            continue
        try:
            sess = open_session(path, prec)
            try:
                rep = gate(y32, sess, x, name, threshold=threshold,
                           extra={"openvino": ovplan.version(), "capabilities": list(ovplan.capabilities())})
            finally:
                sess.close()
        except (SessionError, ExportError) as exc:
            out[key] = {"passed": False, "error": str(exc)}
            say(f"OpenVINO {prec}: {exc}")
            continue
        if rep["passed"]:
            live[key] = path, prec
        else:
            rep["missed"] = missed_text(rep, name)
            hint = ("; OpenVINO does not compute the tensorrt form's signed activations as written on every CPU: "
                    "export --int8-form cpu for OpenVINO" if prec == "int8" and int8_form == "tensorrt" else "")
            say(f"OpenVINO {prec} missed its parity gate ({rep['missed']}); auto will not pick it{hint}")
        out[key] = rep
    if live and len(x):
        # each timed at batch 1 on its own session, compiled for batch 1 (what auto ranks by)
        sessions: dict[str, Any] = {}
        try:
            for k, (p, prec) in live.items():
                sessions[k] = open_session(p, prec)
            for key, ms in batch1_latency_ms({k: s.run for k, s in sessions.items()}, x).items():
                out[key]["latency_ms_b1"] = ms
        finally:
            for s in sessions.values():
                s.close()
    for key in live:
        r = out[key]
        say(f"OpenVINO {key.split('_')[1]} vs ONNX Runtime FP32: mask agreement {r['mask_dice']:.5f}, "
            f"max |dlogit| {r['max_abs_logit']:.2e}, batch 1 {r.get('latency_ms_b1', float('nan')):.2f} ms here")
    return out
