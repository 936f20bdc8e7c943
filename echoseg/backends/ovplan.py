"""How an echoseg precision becomes an OpenVINO compile plan, written once (torch-free, openvino lazy).

The OpenVINO backend (backends/openvino.py) and the exporter's OpenVINO parity gate
(export/openvino_gate.py) both run through :class:`Runner`, so the graph that passed the gate is
compiled exactly as the runtime compiles it. Precisions:

* ``fp32``: the FP32 graph with ``INFERENCE_PRECISION_HINT=f32`` (OpenVINO's CPU plugin would
  otherwise pick bf16 by itself on a CPU with AVX512-BF16 or AMX);
* ``bf16``: the FP32 graph with ``INFERENCE_PRECISION_HINT=bf16``; only where the CPU plugin
  lists ``BF16`` in ``OPTIMIZATION_CAPABILITIES`` (else it would be emulated or silently f32);
* ``int8``: the QDQ graph (``model.int8.onnx``): OpenVINO's low-precision pass runs the quantized
  convolutions with integer kernels; the layers left in float run in bf16 where the CPU has it,
  else f32.

:class:`Runner` compiles the graph for static batch shapes (at most two at a time): the batch it
is given when none compiled so far holds it (up to :data:`MAX_COMPILED_BATCH`; longer ones run in
pieces), a smaller batch zero-padded up to the smallest shape that holds it. Measured on the shipped
model (width 16, INT8): 12 MB less memory at batch 8 and 23 MB less at batch 16 than one compiled
model with a dynamic batch axis, and no slower (README, "echo-run"). The rules for when a smaller
batch gets a shape of its own are in the class docstring.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from echoseg.errors import EchosegError

OV_PRECISIONS = ("fp32", "bf16", "int8")
#: The largest batch a Runner compiles; longer batches run in pieces of this size (memory stays bounded).
MAX_COMPILED_BATCH = 32
#: Compiled batch shapes a Runner keeps at once.
MAX_SHAPES = 2
#: Calls in a row that a compiled shape would pad to more than twice their size before one is compiled for them.
REFIT_AFTER = 3


class OpenVinoError(EchosegError, RuntimeError):
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
    """``path`` at ``precision`` behind static batch shapes (module docstring): at most MAX_SHAPES compiled.

    A batch runs on the smallest compiled shape that holds it, zero-padded. A batch larger than
    every shape compiles one for it (up to MAX_COMPILED_BATCH; beyond that it runs in pieces). A
    batch that would be padded to more than twice its size runs padded the first times, and gets a
    shape of its own after REFIT_AFTER such calls in a row: a stream's short last batch is padded
    once, while single frames after a batch of 8 stop costing eight frames each. The least recently
    used shape goes when a third is compiled.
    """

    def __init__(self, path: str | Path, precision: str, file_precision: str, threads: int = 0,
                 device: str = "CPU") -> None:
        self.path, self.device = Path(path), device
        self.props = compile_properties(precision, file_precision, threads, device)  # refuses a wrong pairing
        try:
            self._model = core().read_model(str(path))
        except RuntimeError as exc:
            raise OpenVinoError(f"{path}: OpenVINO cannot read it ({str(exc).splitlines()[0][:200]})") from exc
        self._requests: dict[int, Any] = {}  # batch size -> infer request, least recently used first
        self._misfit = (0, 0)  # (batch size, calls in a row padded to more than twice their size)

    @property
    def sizes(self) -> list[int]:
        """The compiled batch sizes, smallest first (empty until the first run)."""
        return sorted(self._requests)

    def _compile(self, n: int):
        if len(self._requests) >= MAX_SHAPES:
            del self._requests[next(iter(self._requests))]  # freed before the new one is built
        shape = list(self._model.input(0).get_partial_shape())
        try:
            self._model.reshape([n, *[d.get_length() for d in shape[1:]]])
            request = core().compile_model(self._model, self.device, self.props).create_infer_request()
        except RuntimeError as exc:  # OpenVINO raises RuntimeError subclasses for bad graphs and properties
            raise OpenVinoError(f"{self.path}: OpenVINO cannot compile it ({str(exc).splitlines()[0][:200]})") from exc
        self._requests[n] = request
        return n

    def _shape_for(self, k: int) -> int:
        fits = [s for s in self._requests if s >= k]
        if not fits:
            return self._compile(k)
        size = min(fits)
        if size > 2 * k:
            calls = self._misfit[1] + 1 if self._misfit[0] == k else 1
            self._misfit = (k, calls)
            if calls >= REFIT_AFTER:
                self._misfit = (0, 0)
                return self._compile(k)
        else:
            self._misfit = (0, 0)
        self._requests[size] = self._requests.pop(size)  # most recently used last
        return size

    def run(self, batch):
        """Logits (float32 copy) of a float32 N,C,H,W batch, in pieces of at most MAX_COMPILED_BATCH."""
        outs = [self.run_piece(batch[i:i + MAX_COMPILED_BATCH]) for i in range(0, len(batch), MAX_COMPILED_BATCH)]
        return outs[0] if len(outs) == 1 else np.concatenate(outs)

    def run_piece(self, part):
        """Logits of at most MAX_COMPILED_BATCH frames, on the smallest compiled shape that holds them (zero-padded)."""
        k = len(part)
        size = self._shape_for(k)
        if k < size:
            part = np.concatenate([part, np.zeros((size - k, *part.shape[1:]), part.dtype)])
        return infer(self._requests[size], np.ascontiguousarray(part, np.float32))[:k]

    def close(self) -> None:
        self._requests, self._model = {}, None


def infer(request, batch) -> Any:
    """Run one infer request on a float32 N,C,H,W batch; a copy of output 0 (the request reuses its buffer)."""
    request.infer({0: batch})
    return np.array(request.get_output_tensor(0).data, dtype=np.float32, copy=True)
