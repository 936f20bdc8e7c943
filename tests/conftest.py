"""Shared fixtures: a small synthetic EchoNet-Dynamic dataset and tiny, briefly trained checkpoints.

Session-scoped so the whole suite synthesises and initialises them once.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(autouse=True)
def _hide_the_shipped_bundle(request, monkeypatch, tmp_path_factory):
    """Tests see an install without the bundled model unless marked ``shipped_bundle``: a test of
    "no model found" must not pass or fail by what ``make pretrained`` last put in the tree."""
    if request.node.get_closest_marker("shipped_bundle"):
        return
    from echoseg import pretrained

    monkeypatch.setattr(pretrained, "FOLDER", tmp_path_factory.getbasetemp() / "no-bundle" / pretrained.FOLDER.name)


@pytest.fixture(autouse=True)
def _cpu_unless_marked_gpu(request, monkeypatch):
    """Tests run on the CPU even where CUDA is visible, unless marked ``gpu`` or ``trt``: the same
    numbers as in CI (no TF32 or autocast in tiny trainings), and no CUDA start-up in every
    subprocess. In-process, torch reports no GPU; subprocesses get CUDA_VISIBLE_DEVICES="". """
    if request.node.get_closest_marker("gpu") or request.node.get_closest_marker("trt"):
        return
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    torch = sys.modules.get("torch")
    if torch is None:
        try:
            import torch
        except ImportError:  # a runtime-only install: nothing to pin
            return
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture(scope="session")
def load_script():
    """Import a file of scripts/ as a module, fresh on each call (scripts/ is not a package; each
    script puts what it imports itself on sys.path)."""
    import importlib.util

    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod

    return load


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """12 synthetic videos x 40 frames in the EchoNet-Dynamic layout."""
    from echoseg.data.synthetic import write_dataset

    return write_dataset(tmp_path_factory.mktemp("synth"), videos=12, frames=40, seed=7)


def _make_checkpoint(path: Path, name: str, width: int, steps: int = 40, seed: int = 0) -> Path:
    """A width-`width` model trained for a few Adam steps on synthetic frames.

    Enough that its masks are real LV-like blobs (not empty, not everything), so agreement
    and Dice checks built on it can fail; a few seconds on 2 cores.
    """
    import torch

    from echoseg.data.synthetic import make_video
    from echoseg.models import build_model, default_config
    from echoseg.models.checkpoint import save_checkpoint
    from echoseg.train.loop import compute_input_spec
    from echoseg.train.predict import normalise
    from echoseg.train.losses import segmentation_loss

    torch.manual_seed(seed)
    cfg = default_config(name, width)
    model = build_model(cfg)
    videos = [make_video(s, frames=12) for s in range(4)]
    frames = np.concatenate([v.frames for v in videos])
    masks = np.concatenate([v.masks for v in videos])
    spec = compute_input_spec(frames)
    x = normalise(torch.from_numpy(frames).permute(0, 3, 1, 2).float(), spec)
    y = torch.from_numpy(masks.astype(np.float32))[:, None]
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (8,), generator=gen)
        loss = sum(segmentation_loss(model(x[idx], g), y[idx], dice=True) for g in model.granularities)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return save_checkpoint(path, model, cfg, spec, metrics={"val_dice": 0.5})


@pytest.fixture(scope="session")
def unet_ckpt(tmp_path_factory) -> Path:
    return _make_checkpoint(tmp_path_factory.mktemp("unet") / "best.pt", "unet", 8)


@pytest.fixture(scope="session")
def matae_ckpt(tmp_path_factory) -> Path:
    return _make_checkpoint(tmp_path_factory.mktemp("matae") / "best.pt", "matae-unet", 8)


@pytest.fixture(scope="session")
def matae_ckpt_b(tmp_path_factory) -> Path:
    """matae_ckpt's twin from another seed (an ensemble's second member)."""
    return _make_checkpoint(tmp_path_factory.mktemp("matae-b") / "best.pt", "matae-unet", 8, seed=1)
