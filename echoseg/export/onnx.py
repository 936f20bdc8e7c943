"""PyTorch -> ONNX: one network at one granularity, self-describing, checked and simplified.

The graph takes ``frames`` (float32 N,3,H,W, normalised with the artifact's InputSpec, dynamic
batch) and returns ``logits`` (float32 N,1,H,W). Its metadata_props carry the whole
:class:`~echoseg.config.ArtifactMeta` as JSON under the key ``echoseg``, so the runtime reads
preprocessing and the threshold from the file.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from echoseg.atomic import atomic_path, temp_for
from echoseg.artifacts import set_onnx_meta
from echoseg.config import ArtifactMeta
from echoseg.errors import EchosegError

log = logging.getLogger(__name__)

INPUT_NAME = "frames"
OUTPUT_NAME = "logits"
BATCH_DIM = "batch"
OPSET = 17


class ExportError(EchosegError, RuntimeError):
    """An export step that cannot be done as asked; the message says why and what to do."""


@dataclass
class OnnxInfo:
    """What :func:`export_onnx` wrote."""

    path: Path
    opset: int
    nodes: int
    simplified_by: str  # "onnxslim X.Y" or "" when no simplifier ran
    op_types: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.path.name, "opset": self.opset, "nodes": self.nodes,
                "simplified_by": self.simplified_by, "op_types": dict(self.op_types)}


def save_onnx(proto, path: str | os.PathLike) -> Path:
    """Write an ONNX ModelProto atomically (temp name, then rename)."""
    import onnx

    with atomic_path(path) as tmp:
        onnx.save(proto, str(tmp))
    return Path(path)


def set_metadata(proto, meta: ArtifactMeta) -> None:
    """Store ``meta`` in the graph's metadata (the one writer: :func:`echoseg.artifacts.set_onnx_meta`)."""
    set_onnx_meta(proto, meta)


def simplify(proto) -> tuple[Any, str]:
    """The graph simplified by onnxslim (constant folding, BN folding, dead nodes), if installed."""
    try:
        import onnxslim
    except ImportError:
        log.info("onnxslim not installed; keeping the graph as exported (pip install onnxslim)")
        return proto, ""
    try:
        slim = onnxslim.slim(proto)
    except Exception as exc:  # a simplifier bug must not lose the export; keep the checked original
        log.warning("onnxslim failed (%s); keeping the graph as exported", str(exc).splitlines()[0][:200])
        return proto, ""
    return slim, f"onnxslim {getattr(onnxslim, '__version__', '?')}"


def _logits_only(net):
    """``net`` wrapped so the traced graph has one input and one output (logits)."""
    import torch

    class LogitsOnly(torch.nn.Module):
        def __init__(self, inner) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, frames):
            return self.inner(frames)

    return LogitsOnly(net).eval()


def export_onnx(net, meta: ArtifactMeta, out: str | os.PathLike, *, opset: int = OPSET,
                do_simplify: bool = True) -> OnnxInfo:
    """Trace ``net`` (a stand-alone network: ``model.sliced(g)``) to ``out`` with metadata.

    The file is checked with onnx.checker (full check, with shape inference) after
    simplification and only then renamed into place.
    """
    import onnx
    import torch

    if opset < 17:
        raise ExportError(f"opset {opset} is too old; use 17 or newer")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    spec = meta.input_spec
    example = torch.zeros(2, spec.channels, spec.height, spec.width)
    raw = temp_for(out).with_suffix(".raw")
    wrapped = _logits_only(net)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer warnings about python ints in the nested layers
            torch.onnx.export(wrapped, (example,), str(raw), dynamo=False, opset_version=opset,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              dynamic_axes={INPUT_NAME: {0: BATCH_DIM}, OUTPUT_NAME: {0: BATCH_DIM}},
                              do_constant_folding=True)
        proto = onnx.load(str(raw))
    except Exception as exc:  # torch's exporter raises many types
        raise ExportError(f"torch.onnx.export failed for {meta.model.name} ({str(exc).splitlines()[0][:200]})") from exc
    finally:
        raw.unlink(missing_ok=True)
    slim, by = simplify(proto) if do_simplify else (proto, "")
    set_metadata(slim, meta)
    try:
        onnx.checker.check_model(slim, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"exported graph fails onnx.checker ({str(exc).splitlines()[0][:200]})") from exc
    save_onnx(slim, out)
    ops: dict[str, int] = {}
    for node in slim.graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    opset_used = next((o.version for o in slim.opset_import if o.domain in ("", "ai.onnx")), opset)
    log.info("wrote %s (%d nodes, %s)", out, len(slim.graph.node), by or "not simplified")
    return OnnxInfo(path=out, opset=int(opset_used), nodes=len(slim.graph.node), simplified_by=by, op_types=ops)


def sub_network(model, g: float):
    """The stand-alone network that is granularity g of ``model`` (eval mode), for export."""
    try:
        model.default_granularity(g)
    except ValueError as exc:
        raise ExportError(f"{model.name}: {exc}") from exc
    return model.sliced(g).eval()
