"""Export directories -> a Triton Inference Server model repository.

Each graph becomes one Triton model: ``<run>`` (model.onnx), ``<run>_fp16``, ``<run>_int8``
(``onnxruntime_onnx``) and ``<run>_trt_fp16`` (the engine, ``tensorrt_plan``); a nested
sub-network adds ``_g0_25`` and the like to the run's name. Rejected graphs are left out. Each model directory holds
``config.pbtxt`` (batch limit from the export's profile, dynamic batching, input/output names,
types and dims, and the echoseg description as a parameter, so clients can read the
preprocessing) and version ``1/`` with the file.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from echoseg import artifacts
from echoseg.atomic import copy_file, write_text

from .manifest import read_manifest, read_sidecar
from .onnx import INPUT_NAME, OUTPUT_NAME, ExportError

#: artifact kind in the manifest -> (model-name suffix, Triton platform, file name Triton looks for)
ARTIFACTS: dict[str, tuple[str, str, str]] = {
    "fp32": ("", "onnxruntime_onnx", "model.onnx"),
    "fp16": ("_fp16", "onnxruntime_onnx", "model.onnx"),
    "int8": ("_int8", "onnxruntime_onnx", "model.onnx"),
    "engine": ("_trt_fp16", "tensorrt_plan", "model.plan"),
}
MAX_QUEUE_DELAY_US = 2000


@dataclass(frozen=True)
class TritonModel:
    name: str
    platform: str
    source: Path
    max_batch_size: int
    config: str  # the config.pbtxt text


def model_name(text: str) -> str:
    """A Triton-safe model name (letters, digits, '_' and '-')."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", text)


def _pb_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def triton_config(name: str, platform: str, max_batch_size: int, input_dims: Sequence[int],
                  output_dims: Sequence[int], *, preferred: Sequence[int] = (), gpu: bool = False,
                  parameters: dict[str, str] | None = None) -> str:
    """config.pbtxt text; dims exclude the batch axis (Triton adds it when max_batch_size > 0)."""
    def dims(d: Sequence[int]) -> str:
        return ", ".join(str(int(v)) for v in d)

    pref = sorted({int(b) for b in preferred if 1 <= int(b) <= max_batch_size})
    lines = [
        f"name: {_pb_string(name)}",
        f"platform: {_pb_string(platform)}",
        f"max_batch_size: {int(max_batch_size)}",
        "input [",
        "  {",
        f"    name: {_pb_string(INPUT_NAME)}",
        "    data_type: TYPE_FP32",
        f"    dims: [ {dims(input_dims)} ]",
        "  }",
        "]",
        "output [",
        "  {",
        f"    name: {_pb_string(OUTPUT_NAME)}",
        "    data_type: TYPE_FP32",
        f"    dims: [ {dims(output_dims)} ]",
        "  }",
        "]",
        "dynamic_batching {",
    ]
    if pref:
        lines.append(f"  preferred_batch_size: [ {dims(pref)} ]")
    lines += [f"  max_queue_delay_microseconds: {MAX_QUEUE_DELAY_US}", "}"]
    if gpu:
        lines += ["instance_group [", "  {", "    count: 1", "    kind: KIND_GPU", "  }", "]"]
    for key, value in (parameters or {}).items():
        lines += ["parameters {", f"  key: {_pb_string(key)}", f"  value: {{ string_value: {_pb_string(value)} }}", "}"]
    return "\n".join(lines) + "\n"


def export_dirs_under(root: str | os.PathLike) -> list[Path]:
    """Every export directory at or one level below ``root`` (see :func:`echoseg.artifacts.export_dirs_under`)."""
    return artifacts.export_dirs_under(root)


def models_of(export_dir: str | os.PathLike, refused: list[str] | None = None) -> list[TritonModel]:
    """The Triton models of an export directory: one per kept graph and granularity.

    Files come from the artifacts index, so rejected graphs, hidden or temporary files and files
    that do not match the sha256 in manifest.json are never served; each file's precision and
    granularity are its own description's. A refused file is one line in ``refused`` (the others
    go on) or, without that list, an ExportError. Each config carries the served file's sha256.
    """
    d = Path(export_dir)
    manifest = read_manifest(d)
    prof = manifest.get("profile", {})
    onnx_max, onnx_opt = int(prof.get("max", 64)), int(prof.get("opt", 16))
    models = []
    index = artifacts.index_export_dir(d)
    for _, why in index.refused:
        if refused is None:
            raise ExportError(why)
        refused.append(why)
    for a in index.files:
        if a.problem or a.meta is None:
            raise ExportError(a.problem or f"{a.path}: no description")
        g = a.granularity
        base = model_name(d.name if g == 1.0 else f"{d.name}_g{g:g}")
        if a.kind == "engine":
            if a.precision != "fp16":
                continue
            side = read_sidecar(a.path)
            suffix, platform, _ = ARTIFACTS["engine"]
            max_b, opt_b = side.profile[2], side.profile[1]
            params = {"echoseg": a.meta.to_json(), "tensorrt_version": side.tensorrt_version,
                      "compute_capability": side.compute_capability}
        else:
            suffix, platform, _ = ARTIFACTS[a.precision]
            max_b, opt_b = onnx_max, onnx_opt
            params = {"echoseg": a.meta.to_json()}
        params["sha256"] = artifacts.cached_sha256(a.path)
        spec = a.meta.input_spec
        name = base + suffix
        if any(m.name == name for m in models):
            continue  # one model per (granularity, precision): the index lists the standard file first
        text = triton_config(name, platform, max_b, spec.shape, (1, spec.height, spec.width),
                             preferred=(opt_b, max_b), gpu=platform == "tensorrt_plan", parameters=params)
        models.append(TritonModel(name=name, platform=platform, source=a.path, max_batch_size=max_b, config=text))
    if not models:
        raise ExportError(f"{d}: no exported graph that passed parity to serve; run echo-export build first")
    return models


def write_repository(export_dirs: Iterable[str | os.PathLike], out: str | os.PathLike,
                     errors: list[str] | None = None) -> list[TritonModel]:
    """Write (or refresh) one Triton model directory per graph of every export directory.

    With an ``errors`` list, a bad export directory is recorded there and the others go on;
    without one, the first problem raises ExportError.
    """
    repo = Path(out)
    written: list[TritonModel] = []
    names: set[str] = set()
    for d in export_dirs:
        try:
            models = models_of(d, errors)
            clash = [m.name for m in models if m.name in names]
            if clash:
                raise ExportError(f"{d}: Triton model name {clash[0]!r} is taken by another export; "
                                  "export them under different run names")
        except ExportError as exc:
            if errors is None:
                raise
            errors.append(str(exc))
            continue
        for m in models:
            names.add(m.name)
            version = repo / m.name / "1"
            version.mkdir(parents=True, exist_ok=True)
            dst = version / ("model.plan" if m.platform == "tensorrt_plan" else "model.onnx")
            copy_file(m.source, dst)
            write_text(repo / m.name / "config.pbtxt", m.config)
            written.append(m)
    return written
