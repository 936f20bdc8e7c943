"""The OpenVINO parity gate: each OpenVINO precision against ONNX Runtime FP32, recorded in the manifest.

Run by echo-export where OpenVINO is installed, on the same frames as the other gates, with the
graph compiled exactly as the runtime compiles it (:mod:`echoseg.backends.ovplan`). BF16 is not a file
but a way of running ``model.onnx``, so a miss rejects nothing: the report says ``passed: false``
and the runtime's ``auto`` never picks that precision (asking for it explicitly is refused).
Gates (export/parity.py): fp32 as ONNX FP32 vs PyTorch, bf16 like fp16 (mask agreement >= 0.99),
int8 like the INT8 graph (>= 0.98). BF16 is gated only where the CPU runs it natively; elsewhere
the report says why it was skipped.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Callable

import numpy as np

from echoseg.backends import ovplan
from echoseg.artifacts import precision_of

from .parity import ExportParityError, batch1_latency_ms, check, compare


def available() -> bool:
    try:
        return importlib.util.find_spec("openvino") is not None
    except (ImportError, ValueError):
        return False


def run_openvino(path: str | Path, batch: np.ndarray, precision: str) -> np.ndarray:
    """Logits of ``path`` on OpenVINO (CPU) at ``precision``, through the runtime's Runner (its pieces)."""
    return ovplan.Runner(path, precision, precision_of(path)).run(np.ascontiguousarray(batch, np.float32))


def gate_all(fp32_path: Path, int8_path: Path | None, x: np.ndarray, y32: np.ndarray, threshold: float,
             say: Callable[[str], None], int8_form: str = "cpu") -> dict[str, dict[str, Any]]:
    """{openvino_<precision>_vs_fp32: report} for fp32, bf16 and (with an INT8 graph) int8."""
    out: dict[str, dict[str, Any]] = {}
    live: dict[str, Any] = {}
    native = ovplan.has_bf16()
    plan = [("fp32", fp32_path, "fp32"), ("bf16", fp32_path, "bf16")] + ([("int8", int8_path, "int8")] if int8_path else [])
    for prec, path, gate in plan:
        key = f"openvino_{prec}_vs_fp32"
        if prec == "bf16" and not native:
            out[key] = {"passed": None, "skipped": f"this CPU reports no BF16 ({', '.join(ovplan.capabilities())})"}
            continue
        try:
            rep = compare(y32, run_openvino(path, x, prec), threshold)
        except ovplan.OpenVinoError as exc:
            out[key] = {"passed": False, "error": str(exc)}
            say(f"OpenVINO {prec}: {exc}")
            continue
        rep.update(openvino=ovplan.version(), capabilities=list(ovplan.capabilities()))
        try:
            check(rep, gate, f"{path.name} on OpenVINO {prec} vs ONNX Runtime FP32")
        except ExportParityError as exc:
            rep["missed"] = str(exc).split(": parity gate missed ", 1)[-1]
            hint = ("; OpenVINO does not compute the tensorrt form's signed activations as written on every CPU: "
                    "export --int8-form cpu for OpenVINO" if prec == "int8" and int8_form == "tensorrt" else "")
            say(f"OpenVINO {prec} missed its parity gate ({rep['missed']}); auto will not pick it{hint}")
        else:
            live[key] = path, prec
        out[key] = rep
    if live and len(x):
        # each timed at batch 1 on its own runner, compiled for batch 1 (what auto ranks by)
        runners = {k: ovplan.Runner(p, prec, precision_of(p)).run for k, (p, prec) in live.items()}
        for key, ms in batch1_latency_ms(runners, x).items():
            out[key]["latency_ms_b1"] = ms
    for key in live:
        r = out[key]
        say(f"OpenVINO {key.split('_')[1]} vs ONNX Runtime FP32: mask agreement {r['mask_dice']:.5f}, "
            f"max |dlogit| {r['max_abs_logit']:.2e}, batch 1 {r.get('latency_ms_b1', float('nan')):.2f} ms here")
    return out
