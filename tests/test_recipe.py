"""The recipe's parts: schedules, EMA, in-place distillation, BN recalibration, granularities."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from echoseg.config import InputSpec, ModelConfig
from echoseg.models import build_model
from echoseg.train.recipe import (EMA, granularities_for, lr_at, matryoshka_loss, recalibrate_bn,
                                  recon_weight_at)


def test_granularities_a_width_can_hold():
    assert granularities_for(64) == (0.125, 0.25, 0.5, 1.0)
    assert granularities_for(16) == (0.25, 0.5, 1.0)  # 1/8 would be a 2-channel network
    assert granularities_for(8) == (0.5, 1.0)
    assert granularities_for(2) == (1.0,)


def test_lr_warms_up_then_decays_to_the_floor():
    lrs = [lr_at(s, 100, 1e-3, warmup=10) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))  # monotone after warm-up
    assert lrs[-1] == pytest.approx(1e-5, rel=0.05)


def test_reconstruction_weight_decays_to_zero():
    assert recon_weight_at(0, 100, 0.1, 0.5) == pytest.approx(0.1)
    assert recon_weight_at(25, 100, 0.1, 0.5) == pytest.approx(0.05)
    assert recon_weight_at(50, 100, 0.1, 0.5) == 0.0 and recon_weight_at(99, 100, 0.1, 0.5) == 0.0
    assert recon_weight_at(99, 100, 0.1, 1.0) == pytest.approx(0.1)  # until=1: constant
    assert recon_weight_at(0, 100, 0.1, 0.0) == 0.0


def test_ema_tracks_the_average_of_the_weights():
    model = torch.nn.Linear(2, 1)
    ema = EMA(model, decay=0.5)
    with torch.no_grad():
        model.weight.fill_(1.0)
    start = ema.model.weight.detach().clone()
    ema.update(model)  # ramped decay min(0.5, 2/11) = 2/11
    d = 2 / 11
    assert torch.allclose(ema.model.weight, d * start + (1 - d) * 1.0)
    for _ in range(50):
        ema.update(model)
    assert torch.allclose(ema.model.weight, torch.ones_like(model.weight), atol=1e-6)
    assert not any(p.requires_grad for p in ema.model.parameters())
    copy = EMA(model, decay=0.9)
    copy.load_state_dict(ema.state_dict())
    assert copy.updates == ema.updates and torch.equal(copy.model.weight, ema.model.weight)


def _matae(width=8, gs=(0.5, 1.0)):
    torch.manual_seed(0)
    return build_model(ModelConfig(name="matae-unet", width=width, granularities=gs))


def test_distillation_replaces_labels_for_smaller_granularities():
    from echoseg.train.losses import segmentation_loss

    model = _matae()
    x = torch.randn(2, 3, 32, 32)
    y = (torch.rand(2, 1, 32, 32) > 0.5).float()
    flipped = 1 - y
    # distill=1: the smaller granularity learns only from the full network, so the loss changes
    # with the labels only through the full network's term.
    with torch.no_grad():
        full_only = {lab: float(segmentation_loss(model(x, 1.0), lab)) for lab in (y, flipped)}
        total = {lab: float(matryoshka_loss(model, x, lab, (0.5, 1.0), segmentation_loss, distill=1.0))
                 for lab in (y, flipped)}
    assert total[y] - full_only[y] == pytest.approx(total[flipped] - full_only[flipped], rel=1e-5)
    # distill=0: both granularities learn from the labels.
    with torch.no_grad():
        plain = float(matryoshka_loss(model, x, y, (0.5, 1.0), segmentation_loss, distill=0.0))
        expect = float(segmentation_loss(model(x, 1.0), y) + segmentation_loss(model(x, 0.5), y))
    assert plain == pytest.approx(expect, rel=1e-5)
    # the full network's soft masks are a target, not a path for gradients
    model.zero_grad()
    loss = matryoshka_loss(model, x, y, (0.5, 1.0), segmentation_loss, distill=1.0)
    loss.backward()
    assert model.head.weight.grad is not None


def test_full_only_marks_the_outer_channels_and_the_full_widths_own_batch_norms():
    from echoseg.models.blocks import SlimConv2d, SwitchableBatchNorm2d
    from echoseg.train.recipe import full_only

    model = _matae(width=8, gs=(0.5, 1.0))
    stats = [b.clone() for b in model.buffers()]
    marks = {id(p): m for p, m in full_only(model, (0.5, 1.0))}
    assert all(torch.equal(a, b) for a, b in zip(stats, model.buffers())) and model.training
    recon = {id(m) for m in model.recon.modules()}
    inner = [m for m in model.modules() if isinstance(m, SlimConv2d) and id(m) not in recon
             and not m.fixed_out and len(m.in_parts) == 1 and m.in_channels > model.in_channels]
    assert len(inner) >= 4
    for conv in inner:
        mask = marks[id(conv.weight)]
        o, i = conv.out_channels // 2, conv.in_channels // 2
        assert not mask[:o, :i].any()  # the half-width network's slice is shared
        assert mask[o:].all() and mask[:, i:].all()  # everything outside it is the full network's
    bns = [m for m in model.modules() if isinstance(m, SwitchableBatchNorm2d) and id(m) not in recon]
    for bn in bns:
        assert id(bn.bns[bn.index(0.5)].weight) not in marks and marks[id(bn.bns[bn.index(1.0)].weight)].all()
    assert not any(id(p) in marks for p in model.recon.parameters())  # unused without reconstruction
    assert full_only(model, (1.0,)) == []


def test_full_only_rate_scales_the_step_of_those_elements_alone():
    from echoseg.train.losses import segmentation_loss
    from echoseg.train.recipe import FullOnlyRate

    x = torch.randn(4, 3, 32, 32)
    y = (torch.rand(4, 1, 32, 32) > 0.5).float()

    def stepped(ratio):
        model = _matae(width=8, gs=(0.5, 1.0))
        start = [p.detach().clone() for p in model.parameters()]
        rate = FullOnlyRate(model, (0.5, 1.0), ratio)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        matryoshka_loss(model, x, y, (0.5, 1.0), segmentation_loss, distill=0.0).backward()
        rate.before()
        opt.step()
        rate.after()
        marks = {id(p): m for p, m in rate.pairs}
        return [marks.get(id(p)) for p in model.parameters()], [p.detach() - s for p, s in zip(model.parameters(), start)]

    none, plain = stepped(1.0)
    masks, slower = stepped(0.3)
    assert all(m is None for m in none) and sum(m is not None for m in masks) > 10
    for mask, a, b in zip(masks, plain, slower):
        if mask is None:
            torch.testing.assert_close(b, a)
            continue
        assert a[mask].abs().sum() > 0
        torch.testing.assert_close(b[mask], 0.3 * a[mask], rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(b[~mask], a[~mask])


def test_reconstruction_term_is_added_only_with_a_weight():
    from echoseg.train.losses import reconstruction_loss, segmentation_loss

    model = _matae()
    x, y = torch.randn(2, 3, 32, 32), torch.zeros(2, 1, 32, 32)
    with torch.no_grad():
        no = float(matryoshka_loss(model, x, y, (0.5, 1.0), segmentation_loss, distill=0.5))
        yes = float(matryoshka_loss(model, x, y, (0.5, 1.0), segmentation_loss, distill=0.5,
                                    recon_weight=0.1, recon_loss=reconstruction_loss))
    assert yes > no


def test_bn_recalibration_gives_each_granularity_its_population_statistics():
    model = _matae()
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (40, 32, 32, 3), dtype=np.uint8)
    spec = InputSpec(height=32, width=32, mean=(100.0,) * 3, std=(50.0,) * 3)
    model.eval()
    recalibrate_bn(model, frames, spec, (0.5, 1.0), "cpu", batch=40)  # one batch: stats are exact
    x = (torch.from_numpy(frames).permute(0, 3, 1, 2).float() - 100.0) / 50.0
    for g, idx in ((1.0, 1), (0.5, 0)):
        bn = model.down[0].bn1.bns[idx]
        pre = model.down[0].conv1(x, g)
        assert torch.allclose(bn.running_mean, pre.mean((0, 2, 3)), atol=1e-4)
        assert torch.allclose(bn.running_var, pre.var((0, 2, 3), unbiased=True), rtol=1e-3, atol=1e-4)
        assert bn.momentum == 0.1  # restored
    assert not model.training  # mode restored
