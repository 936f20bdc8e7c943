"""Shared fixtures: a small synthetic EchoNet-Dynamic dataset and tiny checkpoints.

Session-scoped so the whole suite synthesises and initialises them once.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """12 synthetic videos x 40 frames in the EchoNet-Dynamic layout."""
    from echoseg.data.synthetic import write_dataset

    return write_dataset(tmp_path_factory.mktemp("synth"), videos=12, frames=40, seed=7)


def _make_checkpoint(path: Path, name: str, width: int) -> Path:
    """A width-`width` model whose batch-norm statistics come from synthetic frames (non-trivial outputs)."""
    import torch

    from echoseg.config import InputSpec
    from echoseg.data.synthetic import make_video
    from echoseg.models import build_model, default_config
    from echoseg.train.checkpoint import save_checkpoint
    from echoseg.train.loop import compute_input_spec, normalise

    torch.manual_seed(0)
    cfg = default_config(name, width)
    model = build_model(cfg)
    frames = np.concatenate([make_video(s, frames=8).frames for s in range(2)])
    spec: InputSpec = compute_input_spec(frames)
    x = normalise(torch.from_numpy(frames).permute(0, 3, 1, 2).float(), spec)
    model.train()
    with torch.no_grad():
        for g in model.granularities:
            model(x, g)
    model.eval()
    return save_checkpoint(path, model, cfg, spec, metrics={"val_dice": 0.5})


@pytest.fixture(scope="session")
def unet_ckpt(tmp_path_factory) -> Path:
    return _make_checkpoint(tmp_path_factory.mktemp("unet") / "best.pt", "unet", 8)


@pytest.fixture(scope="session")
def matae_ckpt(tmp_path_factory) -> Path:
    return _make_checkpoint(tmp_path_factory.mktemp("matae") / "best.pt", "matae-unet", 8)
