"""The bundled model's training weights as a plain .npz: read without pickle, by numpy alone.

The shipped ONNX graphs have batch norm folded into the convolutions and hold one granularity
each, so they cannot restart training; this file holds the checkpoint's full state (every
granularity's batch-norm statistics, the reconstruction branch) in FP16, with the model's
description as JSON. ``echo-train --init pretrained`` starts from it. ``np.load(...,
allow_pickle=False)`` reads it: no object arrays, so opening it runs no code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from echoseg.errors import EchosegError

FILE = "weights.npz"
FORMAT = "echoseg-weights"
VERSION = 1
_META = "__meta__"


class WeightsError(EchosegError, ValueError):
    """A weights file that is missing, unreadable or not echoseg's."""


def write_weights(path: str | Path, state: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> Path:
    """Write ``state`` (name -> array; floating arrays stored as FP16) and ``meta`` (model,
    input_spec, threshold, source_sha256: JSON-able) atomically."""
    from echoseg.atomic import atomic_path

    if _META in state:
        raise WeightsError(f"a tensor may not be called {_META}")
    arrays = {}
    for k, v in state.items():
        a = np.asarray(v)
        arrays[k] = a.astype(np.float16) if np.issubdtype(a.dtype, np.floating) else a
    arrays[_META] = np.array(json.dumps({"format": FORMAT, "version": VERSION, **meta}))
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:  # a file object: np.savez would append .npz to a bare temp name
            np.savez_compressed(fh, **arrays)
    return path


def read_weights(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(state, meta) of a weights file; FP16 arrays come back as FP16. A file that manifest.json beside it
    lists must match the sha256 recorded there (a damaged file is refused in one line, never loaded)."""
    from echoseg.artifacts import integrity_problem

    path = Path(path)
    why = integrity_problem(path) if path.is_file() else None  # checked against manifest.json's sha256
    if why is not None:
        raise WeightsError(why)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(str(arrays.pop(_META)))
    except FileNotFoundError:
        raise WeightsError(f"{path}: no such weights file; rebuild the bundle with `make pretrained`") from None
    except (OSError, ValueError, KeyError) as exc:
        raise WeightsError(f"{path}: not a readable echoseg weights file ({type(exc).__name__}: {exc})") from None
    if meta.get("format") != FORMAT:
        raise WeightsError(f"{path}: not an echoseg weights file (format {meta.get('format')!r})")
    return arrays, meta
