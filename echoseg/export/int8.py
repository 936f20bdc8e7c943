"""FP32 ONNX -> INT8 ONNX with explicit QuantizeLinear/DequantizeLinear (QDQ) nodes.

Static quantization with ONNX Runtime's tools, calibrated on preprocessed training frames, in
one of two forms (``FORMS``), because no single graph serves every runtime:

- ``cpu`` (the default): activations uint8 with a zero point (asymmetric, per tensor), weights
  int8 symmetric per output channel, biases float. ONNX Runtime folds each ReLU into the
  quantizer after it (fewer Q/DQ round trips) and OpenVINO's CPU plugin computes it exactly as
  written. Measured (README, "INT8 forms"): ORT 2.4x FP32 at matae-unet width 16, OpenVINO 2.8x,
  mask agreement 0.996 with FP32 on real frames.
- ``tensorrt``: activations int8 symmetric (zero point 0), ConvTranspose weights per tensor
  (TensorRT's explicit quantization takes only zero points of 0 and no per-channel scale on a
  deconvolution's axis 1). ONNX Runtime runs it too (2.0x), but OpenVINO 2026.4 on a CPU without
  AMX does not compute its signed activations as written (agreement 0.96 and below; its gate
  then keeps auto off it).

Convolutions with fewer than MIN_INT8_CHANNELS input or output channels stay in float (no Q/DQ
around them): the first layer (3 input channels), the 1-channel head and every layer of a thin
Matryoshka sub-network, where quantizing and dequantizing costs more than the integer kernel
saves (measured: matae-unet width 16 g=1/4 went from 0.67x FP32 speed to 1.00x; README, "INT8").
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from echoseg.config import ArtifactMeta

from echoseg.atomic import temp_for

from .domains import keep_ir_version, prune_domains
from .onnx import INPUT_NAME, ExportError, set_metadata, save_onnx

log = logging.getLogger(__name__)

CALIB_METHODS = ("minmax", "entropy", "percentile")
#: INT8 graph forms: what each is for is in the module docstring
FORMS = ("cpu", "tensorrt")
#: Convolutions with fewer input or output channels than this are left in float.
MIN_INT8_CHANNELS = 16


@dataclass
class Int8Info:
    calib_frames: int
    calib_source: str
    method: str
    quantized_nodes: int
    op_types: dict[str, int]
    float_convs: list[str]
    form: str = "cpu"

    def to_dict(self) -> dict[str, Any]:
        return {"calib_frames": self.calib_frames, "calib_source": self.calib_source, "method": self.method,
                "quantized_nodes": self.quantized_nodes, "op_types": dict(self.op_types),
                "float_convs": list(self.float_convs), "form": self.form, "format": FORMAT[self.form]}


FORMAT = {
    "cpu": "QDQ; activations uint8 asymmetric per tensor; weights int8 symmetric per output channel; float bias; "
           f"convolutions with fewer than {MIN_INT8_CHANNELS} channels in float",
    "tensorrt": "QDQ; activations int8 symmetric (zero point 0) per tensor; weights int8 symmetric, per output "
                f"channel (Conv) / per tensor (ConvTranspose); float bias; convolutions with fewer than "
                f"{MIN_INT8_CHANNELS} channels in float",
}


def frame_reader(batch: np.ndarray, batch_size: int = 8):
    """An ONNX Runtime CalibrationDataReader over normalised float32 frames N,C,H,W."""
    from onnxruntime.quantization import CalibrationDataReader

    class FrameReader(CalibrationDataReader):
        def __init__(self) -> None:
            self._start = 0

        def get_next(self):
            if self._start >= len(batch):
                return None
            chunk = np.ascontiguousarray(batch[self._start:self._start + batch_size], dtype=np.float32)
            self._start += batch_size
            return {INPUT_NAME: chunk}

        def rewind(self) -> None:
            self._start = 0

    return FrameReader()


def quantize_int8(src: str | os.PathLike, out: str | os.PathLike, calib: np.ndarray, meta: ArtifactMeta, *,
                  calib_source: str = "", method: str = "minmax", form: str = "cpu") -> Int8Info:
    """Quantize the FP32 graph ``src`` to ``out`` in ``form`` using ``calib`` (float32 N,C,H,W) for ranges."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in CALIB_METHODS:
        raise ExportError(f"unknown calibration method {method!r}; choose one of {', '.join(CALIB_METHODS)}")
    if form not in FORMS:
        raise ExportError(f"unknown INT8 form {form!r}; choose one of {', '.join(FORMS)}")
    if len(calib) == 0:
        raise ExportError("INT8 calibration needs at least one frame; pass --calib N with N >= 1")
    out = Path(out)
    prepared = temp_for(out).with_suffix(".prep.onnx")
    raw = temp_for(out).with_suffix(".q.onnx")
    try:
        quant_pre_process(str(src), str(prepared))  # shape inference + ORT's basic graph optimisation
        thin = thin_convs(onnx.load(str(prepared)), MIN_INT8_CHANNELS)
        calib_method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                        "percentile": CalibrationMethod.Percentile}[method]
        trt = form == "tensorrt"
        quantize_static(
            str(prepared), str(raw), frame_reader(calib),
            quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QInt8 if trt else QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=calib_method, nodes_to_exclude=thin,
            # tensorrt: zero points 0, what TensorRT's explicit quantization takes; cpu: a zero point
            # at the bottom of a ReLU's range lets ORT drop the ReLU. Biases float in both (TensorRT
            # needs it; OpenVINO was no slower with it); ORT still fuses each Conv into QLinearConv
            extra_options={"ActivationSymmetric": trt, "WeightSymmetric": True, "QuantizeBias": False},
        )
        proto = onnx.load(str(raw))
    except ExportError:
        raise
    except Exception as exc:  # onnxruntime.quantization raises many types
        raise ExportError(f"INT8 quantization of {Path(src).name} failed ({str(exc).splitlines()[0][:200]})") from exc
    finally:
        for p in (prepared, raw):
            p.unlink(missing_ok=True)
        for extra in out.parent.glob(f"{temp_for(out).stem}*.data"):
            extra.unlink(missing_ok=True)
    if form == "tensorrt":
        per_tensor_conv_transpose(proto)
    dropped = prune_domains(proto)  # quantizer leftovers: ai.onnx.training, com.microsoft.experimental, ...
    if dropped:
        log.info("INT8 graph: dropped opset imports no node uses: %s", ", ".join(dropped))
    keep_ir_version(proto, onnx.load(str(src), load_external_data=False).ir_version)
    set_metadata(proto, meta)
    onnx.checker.check_model(proto)
    save_onnx(proto, out)
    ops: dict[str, int] = {}
    for node in proto.graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    q = ops.get("QuantizeLinear", 0)
    log.info("wrote %s (%s form, %d QuantizeLinear nodes, %s calibration on %d frames)", out, form, q, method,
             len(calib))
    return Int8Info(calib_frames=int(len(calib)), calib_source=calib_source, method=method,
                    quantized_nodes=q, op_types=ops, float_convs=thin, form=form)


def form_of(proto) -> str:
    """'cpu' when any QuantizeLinear of the graph has a uint8 zero point, else 'tensorrt' (all signed)."""
    from onnx import TensorProto

    inits = {i.name: i for i in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type == "QuantizeLinear" and len(node.input) > 2 and node.input[2] in inits:
            if inits[node.input[2]].data_type == TensorProto.UINT8:
                return "cpu"
    return "tensorrt"


def thin_convs(proto, min_channels: int) -> list[str]:
    """Names of the Conv/ConvTranspose nodes whose weight has fewer than ``min_channels`` in or out channels."""
    dims = {i.name: list(i.dims) for i in proto.graph.initializer}
    return [n.name for n in proto.graph.node
            if n.op_type in ("Conv", "ConvTranspose") and len(n.input) > 1 and len(dims.get(n.input[1], [])) >= 2
            and min(dims[n.input[1]][:2]) < min_channels]


def per_tensor_conv_transpose(proto) -> int:
    """Requantize every ConvTranspose weight behind a per-channel DequantizeLinear to one scale.

    The float weights are recovered from the int8 values and their per-channel scales, then
    quantized again symmetrically with a single scale (max |w| / 127). Returns how many changed.
    """
    from onnx import numpy_helper

    inits = {i.name: i for i in proto.graph.initializer}
    producers = {o: n for n in proto.graph.node for o in n.output}
    changed = 0
    for node in proto.graph.node:
        if node.op_type != "ConvTranspose" or len(node.input) < 2:
            continue
        dq = producers.get(node.input[1])
        if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in inits or dq.input[1] not in inits:
            continue
        scale = numpy_helper.to_array(inits[dq.input[1]]).astype(np.float64)
        if scale.size <= 1:
            continue
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
        q = numpy_helper.to_array(inits[dq.input[0]]).astype(np.float64)
        shape = [1] * q.ndim
        shape[axis] = -1
        w = q * scale.reshape(shape)
        s1 = float(np.abs(w).max()) / 127.0 or 1.0
        q1 = np.clip(np.round(w / s1), -127, 127).astype(np.int8)
        names = [f"{dq.input[0]}_per_tensor", f"{dq.input[1]}_per_tensor", f"{dq.input[0]}_per_tensor_zp"]
        proto.graph.initializer.extend([numpy_helper.from_array(q1, names[0]),
                                        numpy_helper.from_array(np.array(s1, np.float32), names[1]),
                                        numpy_helper.from_array(np.array(0, np.int8), names[2])])
        dq.input[:] = names
        kept = [a for a in dq.attribute if a.name != "axis"]
        del dq.attribute[:]
        dq.attribute.extend(kept)
        changed += 1
    used = {i for n in proto.graph.node for i in n.input}
    keep = [i for i in proto.graph.initializer if i.name in used]
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(keep)
    return changed
