"""How an echoseg precision becomes an OpenVINO compile plan, written once (torch-free, openvino lazy).

The OpenVINO backend (runtime/openvino.py) and the exporter's OpenVINO parity gate
(export/openvino_gate.py) both run through :class:`Runner`, so the graph that passed the gate is
compiled exactly as the runtime compiles it. Precisions:

* ``fp32``: the FP32 graph with ``INFERENCE_PRECISION_HINT=f32`` (OpenVINO's CPU plugin would
  otherwise pick bf16 by itself on a CPU with AVX512-BF16 or AMX);
* ``bf16``: the FP32 graph with ``INFERENCE_PRECISION_HINT=bf16``; only where the CPU plugin
  lists ``BF16`` in ``OPTIMIZATION_CAPABILITIES`` (else it would be emulated or silently f32);
* ``int8``: the QDQ graph (``model.int8.onnx``): OpenVINO's low-precision pass runs the quantized
  convolutions with integer kernels; the layers left in float run in bf16 where the CPU has it,
  else f32.

:class:`Runner` compiles the graph for one static batch size: the largest it has been given so far,
up to :data:`MAX_COMPILED_BATCH`. A smaller batch is zero-padded up to it, a larger one recompiles it
once (the old compiled model is released), and one beyond the cap runs in pieces. Measured on the
shipped model (width 16, INT8): 12 MB less memory at batch 8 and 23 MB less at batch 16 than one
compiled model with a dynamic batch axis, and no slower (README, "echo-run"). Growing matters: a
stream's first call is often a one-frame probe (echo-run checks the model on one zero frame), and a
graph kept at that size would run every later batch of 8 as eight one-frame calls.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

OV_PRECISIONS = ("fp32", "bf16", "int8")
#: The largest batch a Runner compiles; longer batches run in pieces of this size (memory stays bounded).
MAX_COMPILED_BATCH = 32


class OpenVinoError(RuntimeError):
    """OpenVINO missing, or a precision this CPU or file cannot run."""


def import_openvino():
    try:
        import openvino
    except ImportError as exc:
        raise OpenVinoError(f"OpenVINO is not installed ({exc}); pip install 'echoseg[openvino]'") from exc
    return openvino


@lru_cache(maxsize=4)
def core():
    return import_openvino().Core()


@lru_cache(maxsize=4)
def capabilities(device: str = "CPU") -> tuple[str, ...]:
    """What the device's plugin reports in OPTIMIZATION_CAPABILITIES (e.g. FP32, BF16, INT8)."""
    try:
        return tuple(str(c) for c in core().get_property(device, "OPTIMIZATION_CAPABILITIES"))
    except RuntimeError as exc:
        raise OpenVinoError(f"OpenVINO has no usable {device} device ({str(exc).splitlines()[0][:160]})") from exc


def has_bf16(device: str = "CPU") -> bool:
    return "BF16" in capabilities(device)


def version() -> str:
    return str(import_openvino().__version__)


def compile_properties(precision: str, file_precision: str, threads: int = 0, device: str = "CPU") -> dict[str, Any]:
    """The compile_model properties for ``precision`` on a graph of ``file_precision``; raises when impossible."""
    if precision not in OV_PRECISIONS:
        raise OpenVinoError(f"OpenVINO precision {precision!r} is not one of {', '.join(OV_PRECISIONS)}")
    if file_precision == "fp16":
        raise OpenVinoError("the FP16 graph is for TensorRT; run model.onnx (fp32 or bf16) or model.int8.onnx with OpenVINO")
    if (precision == "int8") != (file_precision == "int8"):
        raise OpenVinoError(f"precision {precision} needs the {'INT8 (model.int8.onnx)' if precision == 'int8' else 'FP32 (model.onnx)'} "
                            f"graph, not the {file_precision} one; pass the matching file or export directory")
    if precision == "bf16" and not has_bf16(device):
        raise OpenVinoError(f"this {device} reports no BF16 ({', '.join(capabilities(device))}); use precision fp32 or int8")
    hint = {"fp32": "f32", "bf16": "bf16"}.get(precision) or ("bf16" if has_bf16(device) else "f32")
    props: dict[str, Any] = {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        props["INFERENCE_NUM_THREADS"] = int(threads)
    return props


class Runner:
    """``path`` at ``precision``, compiled for the largest batch it has run, up to MAX_COMPILED_BATCH (module docstring)."""

    def __init__(self, path: str | Path, precision: str, file_precision: str, threads: int = 0,
                 device: str = "CPU") -> None:
        self.path, self.device = Path(path), device
        self.props = compile_properties(precision, file_precision, threads, device)  # refuses a wrong pairing
        try:
            self._model = core().read_model(str(path))
        except RuntimeError as exc:
            raise OpenVinoError(f"{path}: OpenVINO cannot read it ({str(exc).splitlines()[0][:200]})") from exc
        self.size = 0  # the compiled batch size; 0 until the first run
        self._request = None

    def _compile(self, n: int) -> None:
        shape = list(self._model.input(0).get_partial_shape())
        self._request, self.size = None, 0  # the smaller compiled model goes before the larger one is built
        try:
            self._model.reshape([n, *[d.get_length() for d in shape[1:]]])
            self._request = core().compile_model(self._model, self.device, self.props).create_infer_request()
        except RuntimeError as exc:  # OpenVINO raises RuntimeError subclasses for bad graphs and properties
            raise OpenVinoError(f"{self.path}: OpenVINO cannot compile it ({str(exc).splitlines()[0][:200]})") from exc
        self.size = n

    def run(self, batch):
        """Logits (float32 copy) of a float32 N,C,H,W batch."""
        import numpy as np

        n = len(batch)
        if n > self.size and self.size < MAX_COMPILED_BATCH:
            self._compile(min(n, MAX_COMPILED_BATCH))
        outs = []
        for i in range(0, n, self.size):
            part = batch[i:i + self.size]
            k = len(part)
            if k < self.size:
                part = np.concatenate([part, np.zeros((self.size - k, *part.shape[1:]), part.dtype)])
            outs.append(infer(self._request, np.ascontiguousarray(part, np.float32))[:k])
        return outs[0] if len(outs) == 1 else np.concatenate(outs)

    def close(self) -> None:
        self._request = self._model = None


def infer(request, batch) -> Any:
    """Run one infer request on a float32 N,C,H,W batch; a copy of output 0 (the request reuses its buffer)."""
    import numpy as np

    request.infer({0: batch})
    return np.array(request.get_output_tensor(0).data, dtype=np.float32, copy=True)
