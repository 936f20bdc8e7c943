"""Both models' shapes, the Matryoshka slicing property, MACs and the registry."""

from __future__ import annotations

import pytest
import torch

from echoseg.config import ModelConfig
from echoseg.models import UnknownModelError, build_model, count_macs, default_config


@pytest.mark.parametrize("name", ["unet", "matae-unet"])
def test_output_shapes(name):
    model = build_model(default_config(name, 8)).eval()
    x = torch.randn(2, 3, 112, 112)
    assert model(x).shape == (2, 1, 112, 112)
    if name == "matae-unet":
        logits, recon = model(x, 0.25, return_recon=True)
        assert logits.shape == (2, 1, 112, 112) and recon.shape == (2, 3, 112, 112)


def test_sliced_subnetwork_equals_full_model_at_granularity():
    torch.manual_seed(0)
    model = build_model(default_config("matae-unet", 16))
    x = torch.randn(3, 3, 112, 112)
    model.train()
    for g in model.granularities:  # give every switchable batch norm its own statistics
        model(x, g)
    model.eval()
    macs_full = count_macs(model, 1.0)
    previous = 0
    for g in model.granularities:
        sub = model.sliced(g).eval()
        assert sub.width == int(16 * g) and sub.granularities == (1.0,)
        with torch.no_grad():
            diff = (sub(x) - model(x, g)).abs().max().item()
        assert diff < 1e-5, (g, diff)
        n_sub = sum(p.numel() for p in sub.parameters())
        macs = count_macs(sub)
        assert macs == count_macs(model, g)
        assert previous < macs <= macs_full
        previous = macs
        if g < 1:
            assert n_sub < sum(p.numel() for p in model.parameters())
    # Width scales channels, so MACs scale about quadratically: 1/8 width ~ 1/64 of the work.
    assert count_macs(model, 0.125) < macs_full / 40


def test_granularities_differ_from_each_other():
    model = build_model(default_config("matae-unet", 8)).eval()
    x = torch.randn(1, 3, 112, 112)
    with torch.no_grad():
        assert (model(x, 0.5) - model(x, 1.0)).abs().max() > 1e-4


def test_registry_errors():
    with pytest.raises(UnknownModelError, match="valid models are: unet, matae-unet"):
        build_model(ModelConfig(name="resnet", width=8))
    with pytest.raises(ValueError, match="not one of this model's"):
        build_model(default_config("unet", 8))(torch.zeros(1, 3, 112, 112), 0.5)
    with pytest.raises(ValueError, match="does not nest cleanly"):
        build_model(ModelConfig(name="matae-unet", width=12, granularities=(0.125, 1.0))).sliced(0.125)
