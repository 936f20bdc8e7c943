"""--shift-consistency: a loss on masks that move other than with the frame (max pooling's grid)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from echoseg.config import ConfigError, ModelConfig, TrainConfig
from echoseg.models import build_model
from echoseg.train.losses import segmentation_loss
from echoseg.train.recipe import matryoshka_loss, shift_consistency


class _PerPixel(nn.Module):
    """A 1x1 convolution: every output pixel depends on its own input pixel only (moves with the frame)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 1)

    def forward(self, x, g=1.0):
        return self.conv(x)


class _Pooled(_PerPixel):
    """Max pooling by 4 and back up: what it outputs depends on where the frame falls on the grid."""

    def forward(self, x, g=1.0):
        return nn.functional.interpolate(nn.functional.max_pool2d(self.conv(x), 4), scale_factor=4)


def test_zero_for_a_network_that_moves_with_the_frame_and_not_for_a_pooled_one():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    per_pixel, pooled = _PerPixel(), _Pooled()
    pooled.load_state_dict(per_pixel.state_dict())
    with torch.no_grad():
        for shift in ((1, 2), (3, 3), (7, 1), (1, 15)):
            assert float(shift_consistency(per_pixel, x, per_pixel(x), 1.0, shift)) < 1e-12
            assert float(shift_consistency(pooled, x, pooled(x), 1.0, shift)) > 1e-4
        # a shift by the whole grid leaves max pooling's output where it was (inside the band kept)
        assert float(shift_consistency(pooled, x, pooled(x), 1.0, (4, 4))) < 1e-12


def test_the_edges_of_both_frames_are_left_out():
    """Near a frame's edge padding changes what a network outputs, and the roll's seam lies on the
    rolled frame's edge: a network that marks only its frame's border agrees with itself everywhere
    the loss looks, whatever the shift; one that marks a fixed spot inside the frame does not."""

    class Edges(nn.Module):
        def forward(self, x, g=1.0):
            out = torch.full_like(x[:, :1], -5.0)
            out[..., :4, :] = out[..., -4:, :] = out[..., :, :4] = out[..., :, -4:] = 5.0
            return out

    class Spot(nn.Module):
        def forward(self, x, g=1.0):
            out = torch.full_like(x[:, :1], -5.0)
            out[..., 28:32, 28:32] = 5.0
            return out

    x = torch.randn(1, 3, 64, 64)
    for net, agrees in ((Edges(), True), (Spot(), False)):
        for shift in ((1, 1), (2, 9), (15, 3)):
            value = float(shift_consistency(net, x, net(x), 1.0, shift))
            assert (value == 0.0) is agrees, (type(net).__name__, shift, value)


def test_matryoshka_loss_adds_the_weighted_term_at_every_granularity_and_both_views_learn():
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="matae-unet", width=8, granularities=(0.5, 1.0))).train()
    x, y = torch.randn(2, 3, 64, 64), (torch.rand(2, 1, 64, 64) > 0.5).float()
    model.eval()  # batch statistics out of it: each forward the same
    with torch.no_grad():  # logits that vary (a fresh head gives near-constant masks)
        model.head.weight.mul_(50)
    with torch.no_grad():
        plain = float(matryoshka_loss(model, x, y, (0.5, 1.0), segmentation_loss, distill=0.0))
        off = float(matryoshka_loss(model, x, y, (0.5, 1.0), segmentation_loss, distill=0.0,
                                    consistency=0.0, shift=(3, 5)))
        on = float(matryoshka_loss(model, x, y, (0.5, 1.0), segmentation_loss, distill=0.0,
                                   consistency=2.0, shift=(3, 5)))
        terms = sum(float(shift_consistency(model, x, model(x, g).float(), g, (3, 5))) for g in (0.5, 1.0))
    assert off == pytest.approx(plain, rel=1e-6)
    assert terms > 1e-7
    assert on - plain == pytest.approx(2.0 * terms, rel=1e-2)  # float32 sums of ~1.4: a small term's digits
    # the term alone has gradients (both views are the same weights): it trains the network
    model.zero_grad()
    shift_consistency(model, x, model(x, 1.0).float(), 1.0, (3, 5)).backward()
    assert model.head.weight.grad is not None and float(model.head.weight.grad.abs().sum()) > 0


def test_a_negative_weight_is_refused():
    with pytest.raises(ConfigError, match="shift_consistency must be >= 0"):
        TrainConfig(shift_consistency=-0.1)


def test_echo_train_records_it_and_a_sweep_without_it_is_another_recipe(tmp_path):
    import json

    from typer.testing import CliRunner

    from echoseg.data.synthetic import write_frames
    from echoseg.train.cli import train_app

    runner = CliRunner()
    data = write_frames(tmp_path / "d", videos=6, frames=8, seed=4, every=4)
    out = tmp_path / "cv"
    args = ["--data", str(data), "--model", "matae-unet", "--width", "8", "--epochs", "1", "--batch-size", "4",
            "--init", "none", "--folds", "3", "--seeds", "1", "--out", str(out)]
    r = runner.invoke(train_app, args + ["--fold", "0", "--shift-consistency", "0.5"])
    assert r.exit_code == 0, r.output
    cv = json.loads((out / "cv.json").read_text())
    assert cv["config"]["shift_consistency"] == 0.5
    assert json.loads((out / "fold0-seed1" / "train_config.json").read_text())["shift_consistency"] == 0.5
    r = runner.invoke(train_app, args + ["--fold", "1", "--resume", "--shift-consistency", "0"])
    lines = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
    assert r.exit_code == 2 and len(lines) == 1, r.output
    assert "shift_consistency 0.5 there, 0.0 now" in lines[0]
    # not named again: the sweep goes on as it started
    r = runner.invoke(train_app, args + ["--fold", "1", "--resume"])
    assert r.exit_code == 0, r.output
    assert json.loads((out / "fold1-seed1" / "train_config.json").read_text())["shift_consistency"] == 0.5
    # a sweep from before the option (no key) was trained without it, and goes on without it
    cv = json.loads((out / "cv.json").read_text())
    del cv["config"]["shift_consistency"]
    (out / "cv.json").write_text(json.dumps(cv))
    r = runner.invoke(train_app, args + ["--fold", "2", "--resume"])
    assert r.exit_code == 0, r.output
    assert json.loads((out / "fold2-seed1" / "train_config.json").read_text())["shift_consistency"] == 0.0


def test_the_training_loop_uses_it(tmp_path):
    """The same run with and without the loss ends with other weights (the loop passes a shift each
    step), and the run with it is reproducible from its seed."""
    from echoseg.data.synthetic import write_frames
    from echoseg.models.checkpoint import load_checkpoint
    from echoseg.train.loop import train

    data = write_frames(tmp_path / "data", videos=6, frames=8, seed=2, every=4)

    def weights(name, weight):
        cfg = TrainConfig(data=str(data), model="unet", width=8, epochs=1, batch_size=4, workers=0, seed=5,
                          bn_recal_frames=8, out=str(tmp_path / name), shift_consistency=weight)
        train(cfg)
        return load_checkpoint(tmp_path / name / "last.pt").state_dict

    off, on, again = weights("off", 0.0), weights("on", 5.0), weights("again", 5.0)
    assert any(not torch.equal(off[k], on[k]) for k in off if off[k].is_floating_point())
    assert all(torch.equal(on[k], again[k]) for k in on)
