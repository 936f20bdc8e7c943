"""A tiny, torch-free ONNX 'segmenter' (one 1x1 convolution) carrying echoseg metadata, for fast tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from echoseg.artifacts import set_onnx_meta
from echoseg.config import ArtifactMeta, InputSpec, ModelConfig

#: The IR version echo-export's graphs carry (torch's exporter at opset 17); test-made graphs use it too,
#: because onnx's own default (the newest IR it knows) is more than older ONNX Runtimes load.
EXPORT_IR_VERSION = 8


def make_model(graph, opset: int = 17):
    """A ModelProto of ``graph`` at opset ``opset`` and the exporter's IR version."""
    from onnx import helper

    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=EXPORT_IR_VERSION)


def tiny_meta(g: float = 1.0, name: str = "matae-unet") -> ArtifactMeta:
    spec = InputSpec(mean=(40.0, 40.0, 40.0), std=(50.0, 50.0, 50.0))
    return ArtifactMeta(model=ModelConfig(name, 8, (0.25, 0.5, 1.0)), input_spec=spec, granularity=g)


def write_tiny_onnx(path: Path, meta: ArtifactMeta | None = None) -> Path:
    """logits = mean of the normalised channels minus 0.1 (bright pixels are 'LV'), dynamic batch."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    meta = meta or tiny_meta()
    spec = meta.input_spec
    w = numpy_helper.from_array(np.full((1, spec.channels, 1, 1), 1.0 / spec.channels, np.float32), "w")
    b = numpy_helper.from_array(np.array([-0.1], np.float32), "b")
    node = helper.make_node("Conv", ["frames", "w", "b"], ["logits"])
    graph = helper.make_graph(
        [node], "tiny",
        [helper.make_tensor_value_info("frames", TensorProto.FLOAT, ["batch", spec.channels, spec.height, spec.width])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1, spec.height, spec.width])],
        [w, b])
    proto = make_model(graph)
    set_onnx_meta(proto, meta)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(path))
    return path
