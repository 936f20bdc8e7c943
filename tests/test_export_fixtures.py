"""Helpers and fixtures shared by the export tests (imported by tests/test_export_*.py).

The export tests need models whose masks mean something (a parity check on empty masks
proves nothing), so these checkpoints are briefly trained on synthetic frames. To stay fast
on two cores they work at 32x32 (the networks are fully convolutional; the exporter takes
the input size from the checkpoint's InputSpec); the 112x112 export itself is checked with
the suite's shared untrained checkpoints.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

SIZE = 32
STEPS = 60
_CACHE: dict[str, Path] = {}


def synthetic_batch(seed: int, videos: int, frames: int, size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """uint8 frames N,size,size,3 and bool masks N,size,size from synthetic videos."""
    import cv2

    from echoseg.data.synthetic import make_video

    xs, ys = [], []
    for v in range(videos):
        vid = make_video(seed + v, frames=frames)
        xs += [cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in vid.frames]
        ys += [cv2.resize(m.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST) for m in vid.masks]
    return np.stack(xs), np.stack(ys).astype(bool)


def train_checkpoint(path: Path, name: str, granularities: tuple[float, ...] = (0.25, 0.5, 1.0),
                     steps: int = STEPS, data: str = "") -> Path:
    """A width-8 model trained ``steps`` Adam steps on synthetic 32x32 frames, saved as a checkpoint."""
    import torch
    import torch.nn.functional as F

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: one thread is faster, and immune to a busy machine
    try:
        return _train(torch, F, path, name, granularities, steps, data)
    finally:
        torch.set_num_threads(threads)


def _train(torch, F, path, name, granularities, steps, data):
    from echoseg.config import InputSpec, ModelConfig, TrainConfig
    from echoseg.models import build_model
    from echoseg.models.checkpoint import save_checkpoint

    torch.manual_seed(0)
    gs = (1.0,) if name == "unet" else granularities
    cfg = ModelConfig(name=name, width=8, granularities=gs)
    model = build_model(cfg)
    frames, masks = synthetic_batch(seed=100, videos=4, frames=16)
    mean, std = float(frames.mean()), float(frames.std())
    spec = InputSpec(height=SIZE, width=SIZE, mean=(mean,) * 3, std=(std,) * 3)
    x_all = torch.from_numpy(((frames.astype(np.float32) - mean) / std).transpose(0, 3, 1, 2).copy())
    y_all = torch.from_numpy(masks).float()[:, None]
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    rng = np.random.default_rng(0)
    model.train()
    for _ in range(steps):
        idx = torch.from_numpy(rng.integers(0, len(x_all), 16))
        loss = sum(F.binary_cross_entropy_with_logits(model(x_all[idx], g), y_all[idx]) for g in model.granularities)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    tc = TrainConfig(data=data, model=name, width=8, out=str(path.parent), granularities=gs)
    return save_checkpoint(path, model, cfg, spec, threshold=0.5, metrics={"val_dice": 0.0}, train_config=tc)


def cached_checkpoint(base: Path, name: str) -> Path:
    """One trained checkpoint per model name for the whole session (runs/<name>/best.pt under base)."""
    if name not in _CACHE:
        _CACHE[name] = train_checkpoint(base / "runs" / name / "best.pt", name,
                                        data=str(base / "no-such-data"))
    return _CACHE[name]


@pytest.fixture(scope="session")
def export_base(tmp_path_factory) -> Path:
    return tmp_path_factory.getbasetemp() / "export-shared"


@pytest.fixture()
def unet32(export_base) -> Path:
    return cached_checkpoint(export_base, "unet")


@pytest.fixture()
def matae32(export_base) -> Path:
    return cached_checkpoint(export_base, "matae-unet")


def onnx_logits(path: Path, x: np.ndarray) -> np.ndarray:
    """Logits of an ONNX file as the exporter's gates and echo-run open it on a CPU (OrtSession, CPU provider)."""
    from echoseg.export.parity import open_graph

    sess = open_graph(path)
    try:
        return sess.run(x)
    finally:
        sess.close()


def quick_options(out: Path, **kw):
    """BuildOptions with few parity and calibration frames, for tests."""
    from echoseg.export.build import BuildOptions

    base = dict(out=out, parity_frames=12, calib_frames=24)
    base.update(kw)
    return BuildOptions(**base)


def cached_export(base: Path) -> Path:
    """Both trained checkpoints exported once with --fp16 --int8 -g 0.5 (TensorRT left out)."""
    if "exports" not in _CACHE:
        from echoseg.export.build import export_checkpoint

        out = base / "exports"
        for name in ("unet", "matae-unet"):
            res = export_checkpoint(cached_checkpoint(base, name),
                                    quick_options(out, fp16=True, int8=True, granularities=(0.5,)))
            assert res.ok, res.errors
        _CACHE["exports"] = out
    return _CACHE["exports"]


@pytest.fixture()
def exported(export_base, no_tensorrt) -> Path:
    return cached_export(export_base)


@pytest.fixture()
def bundled(monkeypatch, tmp_path, exported):
    """The matae-unet export bundled as the package's model (echoseg.pretrained points at a temp copy)."""
    from echoseg import pretrained
    from echoseg.pretrained.bundle import bundle

    dest = tmp_path / "pkg" / "echo-synth-matae-w16"
    monkeypatch.setattr(pretrained, "FOLDER", dest)
    bundle(exported / "matae-unet", dest)
    return dest


@pytest.fixture()
def no_tensorrt(monkeypatch):
    """Make `import tensorrt` fail, as on a machine without it (also where it is installed)."""
    import sys

    monkeypatch.setitem(sys.modules, "tensorrt", None)


def invoke_export(*args: str):
    """echo-export as a user runs it (wide terminal, so lines are not wrapped)."""
    from typer.testing import CliRunner

    from echoseg.export.cli import app

    return CliRunner().invoke(app, list(args), env={"COLUMNS": "250"})


def place_runs(base: Path, work: Path, runs: dict[str, str]) -> Path:
    """work/runs/<name>/best.pt, each a copy of the cached checkpoint of model ``runs[name]``."""
    import shutil

    for name, model in runs.items():
        dst = work / "runs" / name / "best.pt"
        dst.parent.mkdir(parents=True)
        shutil.copy(cached_checkpoint(base, model), dst)
    return work

