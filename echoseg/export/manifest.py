"""manifest.json per export directory, and the ``<engine stem>.json`` sidecar beside an engine.

The manifest lists every file with its size and sha256, the parity report, the MACs per
granularity, how each graph was made and the library versions; a reader can tell what an
export is and whether it passed without loading any model.
"""

from __future__ import annotations

import logging
import os
import platform
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from echoseg import artifacts
from echoseg.artifacts import MANIFEST, MANIFEST_FORMAT as FORMAT, MANIFEST_VERSION as VERSION, PARITY  # noqa: F401
from echoseg.artifacts import ArtifactError, file_entry, sidecar_path, write_sidecar  # noqa: F401
from echoseg.config import EngineSidecar

from .onnx import ExportError

log = logging.getLogger(__name__)

def versions() -> dict[str, str]:
    """Versions of the libraries that made the export (absent ones omitted)."""
    out = {"python": platform.python_version()}
    for dist in ("echoseg", "torch", "onnx", "onnxruntime", "onnxslim", "tensorrt"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


def build_manifest(export_dir: str | os.PathLike, *, meta: dict[str, Any], checkpoint: str,
                   macs: dict[str, int], exports: list[dict[str, Any]], profile: tuple[int, int, int],
                   parity_source: str = "") -> dict[str, Any]:
    """The manifest record of ``export_dir``: one section per exported granularity, files read from disk."""
    d = Path(export_dir)
    files = [file_entry(p) for p in sorted(d.iterdir())
             if p.is_file() and not artifacts.is_hidden(p) and p.name != MANIFEST]
    # the OpenVINO records say which ways of running a kept file passed (auto reads them); a miss there
    # rejects no file, so it does not fail the export
    passed = all("error" not in s and all(r.get("passed", False) for k, r in s.get("parity", {}).items()
                                          if isinstance(r, dict) and not k.startswith("openvino_")) for s in exports)
    return {
        "format": FORMAT,
        "version": VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "checkpoint": checkpoint,
        "source_sha256": meta.get("source_sha256", ""),
        "model": meta.get("model", {}),
        "input_spec": meta.get("input_spec", {}),
        "threshold": meta.get("threshold", 0.5),
        "macs_per_frame": macs,
        "profile": {"min": profile[0], "opt": profile[1], "max": profile[2]},
        "parity_frames_source": parity_source,
        "exports": exports,
        "files": files,
        "passed": bool(exports) and passed,
        "versions": versions(),
    }


def read_manifest(export_dir: str | os.PathLike) -> dict[str, Any]:
    """The export's manifest (see :func:`echoseg.artifacts.read_manifest`), errors as ExportError."""
    try:
        return artifacts.read_manifest(export_dir)
    except ArtifactError as exc:
        raise ExportError(str(exc)) from exc


def read_sidecar(engine: str | os.PathLike) -> EngineSidecar:
    try:
        return artifacts.read_sidecar(engine)
    except ArtifactError as exc:
        raise ExportError(str(exc)) from exc
