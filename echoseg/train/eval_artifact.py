"""Scoring an exported model (an export folder, an .onnx file, or the bundled ``pretrained`` one)
through the runtime's sessions, chosen as echo-run chooses them (``auto``: e.g. the INT8 graph on
OpenVINO on a CPU) unless a backend is named: no PyTorch involved. What ran is in metrics.json."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import numpy as np

from echoseg.config import logit_cut


def artifact_scorer(target: str | Path, backend: str = "auto", tta: str = "none"):
    from echoseg import pretrained
    from echoseg.artifacts import ArtifactError, index_export_dir, preprocess, read_manifest
    from echoseg.backends.choose import open_session, resolve_model
    from echoseg.runtime.tta import check_tta, with_tta

    from .scorer import Scorer

    check_tta(tta)
    path = resolve_model(target)
    export_dir = path if path.is_dir() else path.parent
    if path.is_dir():
        gs = sorted({f.granularity for f in index_export_dir(path).files if f.kind == "onnx"}, reverse=True)
    else:
        gs = [None]  # one graph: its own granularity
    sessions, ran = {}, {}
    with ExitStack() as opened:  # every session opened here is closed if the scorer is not returned
        for g in gs:
            sess = opened.enter_context(open_session(path, backend, granularity=g))
            sessions[float(sess.info.meta.granularity)] = sess
            info = sess.info
            ran[f"{info.meta.granularity:g}"] = f"{info.backend} {info.precision} {Path(info.path).name}"
        # a full-width graph must be among them: the top-level metrics are g = 1's
        if 1.0 not in sessions:
            raise ArtifactError(f"{path}: no full-width (g=1) graph to score; pass the export folder")
        close = opened.pop_all().close  # from here on the scorer's close (``with scorer:``) frees them
    first = next(iter(sessions.values())).info.meta
    try:
        macs = read_manifest(export_dir).get("macs_per_frame", {})
    except ArtifactError:
        macs = {}

    def predict(images: np.ndarray, g: float, batch: int = 32) -> np.ndarray:
        sess = with_tta(sessions[g], tta)
        meta = sess.info.meta
        cut = logit_cut(meta.threshold, meta.output)
        out = [sess.run(preprocess(images[i:i + batch], meta))[:, 0] > cut for i in range(0, len(images), batch)]
        return np.concatenate(out) if out else np.zeros(images.shape[:3], bool)

    def gmacs(g: float) -> float:
        v = macs.get(f"{g:g}")
        return float(v) / 1e9 if v is not None else float("nan")

    label = "pretrained" if pretrained.is_name(target) else str(path)
    default_out = Path("eval-pretrained") if pretrained.is_name(target) else export_dir
    return Scorer(first.model.name, first.model.width, label, (first.input_spec.height, first.input_spec.width),
                  tuple(sorted(sessions)), predict, gmacs, default_out, ran, close)
