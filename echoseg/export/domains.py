"""Opset domains an exported graph declares: only those its nodes use.

ONNX Runtime's quantizer (and its pre-processing) leave imports such as ``ai.onnx.training``,
``com.microsoft.experimental`` or ``org.pytorch.aten`` in a graph that has no node from them;
stricter consumers (TensorRT's ONNX parser, other runtimes, model-repository checks) may warn
about or refuse a domain they do not know. :func:`prune_domains` drops every import no node
uses (the default domain stays: every graph here uses it), :func:`unused_domains` is the check
the exporter runs on each graph it keeps.
"""

from __future__ import annotations

from typing import Iterable

from .onnx import ExportError

#: the default ONNX operator set, under both of its names
DEFAULT_DOMAINS = ("", "ai.onnx")


def _nodes(graph) -> Iterable:
    for node in graph.node:
        yield node
        for attr in node.attribute:  # If/Loop/Scan bodies
            if attr.HasField("g"):
                yield from _nodes(attr.g)
            for sub in attr.graphs:
                yield from _nodes(sub)


def used_domains(proto) -> set[str]:
    """Domains of every node in the graph, its subgraphs and its local functions ('' for the default)."""
    used = {n.domain for n in _nodes(proto.graph)}
    for fn in proto.functions:
        used.add(fn.domain)  # a call to the function names its domain
        used.update(n.domain for n in fn.node)
    return {"" if d == "ai.onnx" else d for d in used}


def unused_domains(proto) -> list[str]:
    """Domains the model imports that none of its nodes use (the default domain never counts)."""
    used = used_domains(proto)
    return sorted({o.domain for o in proto.opset_import
                   if o.domain not in DEFAULT_DOMAINS and o.domain not in used})


def prune_domains(proto) -> list[str]:
    """Drop the opset imports no node uses, in place; returns the dropped domains."""
    dropped = unused_domains(proto)
    if dropped:
        keep = [o for o in proto.opset_import if o.domain not in dropped]
        del proto.opset_import[:]
        proto.opset_import.extend(keep)
    return dropped


def check_domains(proto, what: str) -> None:
    """Raise ExportError when ``proto`` imports a domain none of its nodes use."""
    extra = unused_domains(proto)
    if extra:
        raise ExportError(f"{what} declares opset domains no node uses ({', '.join(extra)}); "
                          "prune them (echoseg.export.domains.prune_domains) before saving")


def keep_ir_version(proto, source_ir: int) -> int:
    """Give a converted graph (FP16, INT8) the IR version of the FP32 graph it came from, or the lowest
    its opsets need if that is higher: a converter that rebuilds the model (at its onnx's newest IR)
    must not make it newer than the graph the runtimes were tested to load."""
    from onnx import helper

    need = helper.find_min_ir_version_for(list(proto.opset_import), ignore_unknown=True)
    proto.ir_version = max(int(source_ir), int(need))
    return proto.ir_version
