"""--antialias: max-blur pooling in the encoder (no weights of its own), kept by checkpoints, exports and
sliced networks, refused on --resume of a run trained without it."""

from __future__ import annotations

import numpy as np
import pytest
from test_export_fixtures import onnx_logits


def _shift_change(pool, x):
    """How much the pooled map moves when the input moves one pixel right, against the map's size."""
    import torch

    a = pool(x)[..., 2:-2, 2:-2]
    b = pool(torch.roll(x, 1, dims=-1))[..., 2:-2, 2:-2]
    return float((a - b).norm() / a.norm())


def test_max_blur_pool_keeps_max_pools_grid_and_changes_less_with_a_one_pixel_shift():
    import torch
    import torch.nn.functional as F

    from echoseg.models.blocks import max_blur_pool

    for size in (112, 56, 28, 14):
        x = torch.randn(2, 5, size, size, generator=torch.Generator().manual_seed(size))
        assert max_blur_pool(x).shape == F.max_pool2d(x, 2).shape
    flat = max_blur_pool(torch.full((1, 2, 16, 16), 3.0))
    assert torch.allclose(flat[..., 1:-1, 1:-1], torch.tensor(3.0))  # a blur, not a gain
    # a bright dot at (4, 4) stays centred where max pooling puts it: output (2, 2) of an 8x8 map
    dot = torch.zeros(1, 1, 16, 16)
    dot[..., 4, 4] = 1.0
    assert int(max_blur_pool(dot)[0, 0].argmax()) == int(F.max_pool2d(dot, 2)[0, 0].argmax()) == 2 * 8 + 2
    x = torch.rand(1, 8, 64, 64, generator=torch.Generator().manual_seed(0))
    plain, blurred = _shift_change(lambda t: F.max_pool2d(t, 2), x), _shift_change(max_blur_pool, x)
    assert blurred < 0.6 * plain, (plain, blurred)


def test_antialiased_network_loads_plain_weights_and_slices_with_it():
    import torch

    from echoseg.config import ModelConfig
    from echoseg.models import build_model

    torch.manual_seed(0)
    plain = build_model(ModelConfig(name="matae-unet", width=8, granularities=(0.5, 1.0))).eval()
    cfg = ModelConfig(name="matae-unet", width=8, granularities=(0.5, 1.0), antialias=True)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    assert ModelConfig.from_dict({"name": "unet", "width": 8}).antialias is False  # records from before it
    smooth = build_model(cfg).eval()
    smooth.load_state_dict(plain.state_dict())  # strict: no weights of its own
    x = torch.randn(2, 3, 112, 112, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        deep_plain, deep_smooth = plain.encode(x, 1.0)[-1], smooth.encode(x, 1.0)[-1]
        assert deep_plain.shape == deep_smooth.shape
        assert float((deep_plain - deep_smooth).norm() / deep_plain.norm()) > 0.1  # it does pool differently
        sub = smooth.sliced(0.5).eval()
        assert sub.antialias and sub.width == 4
        assert torch.allclose(sub(x), smooth(x, 0.5), atol=1e-5)
    unet = build_model(ModelConfig(name="unet", width=8, antialias=True))
    assert unet.antialias


def test_antialiased_export_matches_pytorch(tmp_path):
    import torch

    from echoseg.config import ArtifactMeta, InputSpec, ModelConfig
    from echoseg.export.onnx import export_onnx, sub_network
    from echoseg.models import build_model

    cfg = ModelConfig(name="unet", width=8, antialias=True)
    model = build_model(cfg).eval()
    meta = ArtifactMeta(model=cfg, input_spec=InputSpec())
    info = export_onnx(sub_network(model, 1.0), meta, tmp_path / "aa.onnx")
    x = np.random.default_rng(2).normal(size=(3, 3, 112, 112)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    assert np.abs(onnx_logits(info.path, x) - ref).max() <= 1e-3


def test_resume_without_antialias_names_the_difference(tmp_path):
    from echoseg.config import TrainConfig
    from echoseg.data.synthetic import write_frames
    from echoseg.train.loop import TrainError, train

    data = write_frames(tmp_path / "data", videos=7, frames=8, seed=1, every=4)
    cfg = TrainConfig(data=str(data), model="unet", width=8, epochs=1, batch_size=4, out=str(tmp_path / "run"),
                      antialias=True, workers=0, bn_recal_frames=8)
    train(cfg)
    with pytest.raises(TrainError, match="with max-blur pooling \\(--antialias\\), not unet width 8"):
        train(TrainConfig(**{**cfg.to_dict(), "antialias": False, "epochs": 2}), resume=True)


def test_a_plain_models_record_is_written_as_before():
    """Checkpoints and exports of a plain model describe it without the new key, so runtimes from before
    --antialias read them; an antialiased one says so."""
    from echoseg.config import ModelConfig

    assert "antialias" not in ModelConfig(name="unet", width=8).to_dict()
    assert ModelConfig(name="unet", width=8, antialias=True).to_dict()["antialias"] is True


def test_resume_of_a_sweep_from_before_the_option_refuses_antialias(tmp_path):
    """A sweep whose cv.json has no antialias key was trained without it: --resume --antialias is another
    recipe, said in one line; without the option it goes on."""
    import json

    from typer.testing import CliRunner

    from echoseg.data.synthetic import write_frames
    from echoseg.train.cli import train_app

    runner = CliRunner()
    data = write_frames(tmp_path / "d", videos=6, frames=8, seed=4, every=4)
    out = tmp_path / "cv"
    args = ["--data", str(data), "--model", "unet", "--width", "8", "--epochs", "1", "--batch-size", "4",
            "--init", "none", "--folds", "3", "--seeds", "1", "--out", str(out)]
    assert runner.invoke(train_app, args + ["--fold", "0"]).exit_code == 0
    cv = json.loads((out / "cv.json").read_text())
    del cv["config"]["antialias"]  # as a sweep from before the option wrote it
    (out / "cv.json").write_text(json.dumps(cv))
    r = runner.invoke(train_app, args + ["--fold", "1", "--resume", "--antialias"])
    lines = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
    assert r.exit_code == 2 and len(lines) == 1, r.output
    assert "another recipe (antialias False there, True now)" in lines[0]
    assert not (out / "fold1-seed1").exists()
    r = runner.invoke(train_app, args + ["--fold", "1", "--resume"])
    assert r.exit_code == 0, r.output
