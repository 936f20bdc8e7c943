"""FP32 ONNX -> FP16 ONNX with FP32 inputs and outputs, and a CPU emulation of it.

The FP16 graph stores weights and activations in FP16, with one Cast at the input and one at
the output so callers still pass and receive float32: the form a strongly typed TensorRT
network takes (TensorRT 11 removed the FP16 builder flag; precision comes from the graph).
The conversion is ONNX Runtime's ``onnxruntime.transformers.float16`` with ``keep_io_types``;
ops on its block list, plus any asked for, stay FP32, and the result records which.

Running it on a CPU: ONNX Runtime's CPU provider has no FP16 Conv/ConvTranspose kernels on
x86, so it wraps them in Casts to FP32 and then removes the Cast pairs between nodes; the
graph runs as FP32 arithmetic on FP16-rounded weights and activations are *not* rounded. That
alone would overstate parity, so :func:`emulate_fp16` also builds an FP32 twin of the FP16
graph that rounds every FP16 tensor to FP16 (an explicit Cast to FP16 and back, which ORT
keeps): FP16 storage with FP32 arithmetic inside each op, as on a GPU's tensor cores.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

from .domains import keep_ir_version, prune_domains

log = logging.getLogger(__name__)

HOW_RUN_ON_CPU = (
    "ONNX Runtime CPU runs the FP16 graph by casting Conv/ConvTranspose to FP32 (no x86 FP16 kernels) "
    "and drops the intermediate FP16 rounding; parity is therefore also measured on an emulation that "
    "rounds every FP16 tensor to FP16 (explicit Cast pairs), FP32 math inside each op"
)


@dataclass
class Fp16Info:
    """What :func:`convert_fp16` did."""

    kept_fp32_ops: list[str] = field(default_factory=list)  # op types of the graph left in FP32
    kept_fp32_nodes: list[str] = field(default_factory=list)  # node names left in FP32
    block_list: list[str] = field(default_factory=list)  # op types asked to stay FP32
    io_type: str = "float32"

    def to_dict(self) -> dict[str, Any]:
        return {"kept_fp32_ops": list(self.kept_fp32_ops), "kept_fp32_nodes": list(self.kept_fp32_nodes),
                "block_list": list(self.block_list), "io_type": self.io_type, "how_run_on_cpu": HOW_RUN_ON_CPU}


def convert_fp16(proto, *, keep_fp32_ops: Sequence[str] = (), keep_fp32_nodes: Sequence[str] = ()):
    """(FP16 ModelProto with FP32 I/O, Fp16Info). ``proto`` is not modified."""
    import copy

    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    block = sorted(set(DEFAULT_OP_BLOCK_LIST) | set(keep_fp32_ops))
    src = copy.deepcopy(proto)
    present = {n.op_type for n in src.graph.node}
    names = {n.name for n in src.graph.node}
    missing = [n for n in keep_fp32_nodes if n not in names]
    if missing:
        log.warning("nodes %s are not in the graph; nothing to keep in FP32 for them", missing)
    out = convert_float_to_float16(src, keep_io_types=True, op_block_list=block,
                                   node_block_list=[n for n in keep_fp32_nodes if n in names])
    topo_sort(out.graph)
    dropped = prune_domains(out)
    if dropped:
        log.info("FP16 graph: dropped opset imports no node uses: %s", ", ".join(dropped))
    keep_ir_version(out, proto.ir_version)
    info = Fp16Info(kept_fp32_ops=sorted(present & set(block)),
                    kept_fp32_nodes=[n for n in keep_fp32_nodes if n in names], block_list=block)
    return out, info


def topo_sort(graph) -> None:
    """Reorder ``graph.node`` so every node comes after the producers of its inputs (in place).

    The converter appends its input Casts at the end; onnx.checker and TensorRT's parser need
    topological order. Ties keep the original order.
    """
    known = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending = list(graph.node)
    ordered = []
    while pending:
        rest = []
        for node in pending:
            if all(i in known for i in node.input):
                ordered.append(node)
                known.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            missing = sorted({i for n in rest for i in n.input if i not in known})[:3]
            raise ValueError(f"graph has a cycle or dangling inputs {missing}")
        pending = rest
    copies = [type(n)() for n in ordered]
    for c, n in zip(copies, ordered):
        c.CopyFrom(n)
    del graph.node[:]
    graph.node.extend(copies)


def last_compute_node(proto) -> str:
    """Name of the node that produces the graph output (the logit head), for keeping it FP32."""
    out = proto.graph.output[0].name
    for node in reversed(proto.graph.node):
        if out in node.output:
            return node.name
    return ""


def tensor_types(proto) -> dict[str, Any]:
    """Element types at the edges and inside: what tests and the manifest check.

    Returns input/output type names, the count of initializers per type, and the op types
    whose outputs are FP32 inside the graph (excluding the final output Cast).
    """
    import onnx
    from onnx import TensorProto

    inferred = onnx.shape_inference.infer_shapes(proto)
    name = TensorProto.DataType.Name
    types = {v.name: v.type.tensor_type.elem_type
             for v in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)}
    inits: dict[str, int] = {}
    for init in proto.graph.initializer:
        k = name(init.data_type).lower()
        inits[k] = inits.get(k, 0) + 1
    fp32_ops = sorted({n.op_type for n in inferred.graph.node if n.op_type != "Cast"
                       and any(types.get(o) == TensorProto.FLOAT for o in n.output)})
    return {
        "inputs": [name(v.type.tensor_type.elem_type).lower() for v in proto.graph.input],
        "outputs": [name(v.type.tensor_type.elem_type).lower() for v in proto.graph.output],
        "initializers": inits,
        "fp32_compute_ops": fp32_ops,
    }


def emulate_fp16(proto16):
    """An all-FP32 twin of an FP16 graph that rounds each FP16 tensor to FP16, for CPU parity.

    FP16 initializers become FP32 (exactly), every node output that was FP16 goes through
    Cast(FP16) -> Cast(FP32), and Casts to FP16 become that same rounding pair.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.shape_inference.infer_shapes(proto16)
    g = model.graph
    f16 = TensorProto.FLOAT16
    types = {v.name: v.type.tensor_type.elem_type for v in list(g.value_info) + list(g.input) + list(g.output)}
    for init in g.initializer:
        types[init.name] = init.data_type
    graph_outputs = {o.name for o in g.output}

    inits = []
    for init in g.initializer:
        arr = numpy_helper.to_array(init)
        if init.data_type == f16:
            arr = arr.astype("float32")
        inits.append(numpy_helper.from_array(arr, init.name))

    nodes = []
    for i, node in enumerate(g.node):
        new = onnx.NodeProto()
        new.CopyFrom(node)
        if node.op_type == "Cast":
            to = next(a.i for a in node.attribute if a.name == "to")
            if to == f16:  # rounding pair instead of a real FP16 tensor
                mid = f"{node.output[0]}__f16"
                nodes.append(helper.make_node("Cast", [node.input[0]], [mid], to=f16, name=f"{node.name}__round"))
                nodes.append(helper.make_node("Cast", [mid], [node.output[0]], to=TensorProto.FLOAT,
                                              name=f"{node.name}__back"))
                continue
            nodes.append(new)
            continue
        if node.op_type == "Constant":
            for a in new.attribute:
                if a.name == "value" and a.t.data_type == f16:
                    a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype("float32"), a.t.name))
        rounded = []
        for j, out in enumerate(node.output):
            if types.get(out) == f16 and out not in graph_outputs:
                raw = f"{out}__fp32"
                new.output[j] = raw
                rounded.append((raw, out))
        nodes.append(new)
        for raw, out in rounded:
            nodes.append(helper.make_node("Cast", [raw], [f"{out}__f16"], to=f16, name=f"{out}__round{i}"))
            nodes.append(helper.make_node("Cast", [f"{out}__f16"], [out], to=TensorProto.FLOAT, name=f"{out}__back{i}"))

    def fp32_io(values):
        outs = []
        for v in values:
            t = v.type.tensor_type
            dims = [d.dim_param or d.dim_value for d in t.shape.dim]
            elem = TensorProto.FLOAT if t.elem_type == f16 else t.elem_type
            outs.append(helper.make_tensor_value_info(v.name, elem, dims))
        return outs

    graph = helper.make_graph(nodes, f"{g.name}_fp16_emulated", fp32_io(g.input), fp32_io(g.output), inits)
    emu = helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    return emu
