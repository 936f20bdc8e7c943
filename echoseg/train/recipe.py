"""The training recipe's moving parts, each small enough to test on its own.

* a learning-rate schedule: linear warm-up, then cosine decay to a floor;
* EMA weights (the model that is validated, selected and shipped);
* a reconstruction weight that starts at its full value and decays to 0, so the autoencoder
  shapes the encoder early and stops competing with segmentation late;
* the Matryoshka loss with in-place distillation: the full network learns from the labels,
  every smaller granularity from the labels and from the full network's soft masks;
* switchable batch-norm recalibration: exact per-granularity statistics for the EMA weights;
* the granularities a width can really hold (a nested network needs a few channels to be one).
"""

from __future__ import annotations

import copy
import math
from typing import Sequence

import numpy as np

from echoseg.config import DEFAULT_GRANULARITIES

#: The smallest first-level width a nested sub-network may have. At width 16, g = 1/8 would be a
#: 2-channel network: it scores near 0 on real echo and its training pulls on the shared
#: leading channels of every layer, so the defaults leave it out (it can still be asked for).
MIN_NESTED_WIDTH = 4


def granularities_for(width: int, candidates: Sequence[float] = DEFAULT_GRANULARITIES) -> tuple[float, ...]:
    """The default nested granularities of a matae-unet of base ``width``: those whose first
    level keeps at least MIN_NESTED_WIDTH channels (always including 1)."""
    keep = [g for g in candidates if g == 1.0 or width * g >= MIN_NESTED_WIDTH - 1e-9]
    return tuple(sorted(set(keep) | {1.0}))


def lr_at(step: int, total: int, base_lr: float, warmup: int, floor: float = 0.01) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine from ``base_lr`` to ``floor * base_lr``."""
    if warmup > 0 and step < warmup:
        return base_lr * (step + 1) / warmup
    span = max(1, total - warmup)
    t = min(1.0, (step - warmup) / span)
    return base_lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t)))


def recon_weight_at(step: int, total: int, weight: float, until: float) -> float:
    """The reconstruction weight: ``weight`` at the start, cosine-decayed to 0 at ``until`` (a
    fraction of training); ``until`` >= 1 keeps the full weight throughout, 0 turns it off."""
    if weight <= 0 or until <= 0:
        return 0.0
    if until >= 1:
        return weight
    t = step / (until * max(1, total))
    return weight * 0.5 * (1 + math.cos(math.pi * t)) if t < 1 else 0.0


class EMA:
    """An exponential moving average of a model's parameters (buffers are copied).

    The decay ramps up as (1 + t) / (10 + t) so early averages are not dominated by the random
    initialisation.
    """

    def __init__(self, model, decay: float) -> None:
        self.decay = float(decay)
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.updates = 0

    def update(self, model) -> None:
        import torch

        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        with torch.no_grad():  # one fused update over all tensors, not two kernels per tensor
            ema_p = list(self.model.parameters())
            torch._foreach_mul_(ema_p, d)
            torch._foreach_add_(ema_p, [p.detach() for p in model.parameters()], alpha=1 - d)
            bufs = list(self.model.buffers())
            if bufs:
                torch._foreach_copy_(bufs, list(model.buffers()))

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "model": self.model.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.decay = float(state["decay"])
        self.updates = int(state["updates"])
        self.model.load_state_dict(state["model"])


def full_only(model, granularities: Sequence[float], device: str = "cpu") -> list:
    """(parameter, mask) pairs marking the elements that only the full network uses: the outer
    channels of every layer and the full width's own batch norms.

    Found by what each width's output is made of: an element whose gradient is non-zero at g = 1
    and zero at every smaller granularity, on one fixed random batch. Batch norms normalise with
    the batch's own statistics (as in training), so no channel is switched off for the whole
    batch; their running statistics are put back afterwards.
    """
    import torch

    smaller = [g for g in granularities if g < 1]
    if not smaller:
        return []
    was = model.training
    kept = [b.detach().clone() for b in model.buffers()]
    model.train()
    x = torch.randn(4, model.in_channels, 64, 64, generator=torch.Generator().manual_seed(0)).to(device)

    def touched(gs):
        model.zero_grad(set_to_none=True)
        for g in gs:
            model(x, g).float().square().sum().backward()
        return [None if p.grad is None else p.grad != 0 for p in model.parameters()]

    small, full = touched(smaller), touched([1.0])
    model.zero_grad(set_to_none=True)
    with torch.no_grad():
        for b, k in zip(model.buffers(), kept):
            b.copy_(k)
    model.train(was)
    pairs = []
    for p, f, sm in zip(model.parameters(), full, small):
        mask = None if f is None else f if sm is None else f & ~sm
        if mask is not None and bool(mask.any()):
            pairs.append((p, mask))
    return pairs


class FullOnlyRate:
    """Trains the elements only the full network uses at ``ratio`` x the optimiser's step.

    ``before()`` notes those elements, ``after()`` (after ``optimizer.step()``) keeps ``ratio`` of
    their change. For Adam without weight decay the step is the learning rate times a
    scale-free direction, so this is exactly a learning rate of ``ratio`` x lr for them, on the
    same warm-up and cosine.
    """

    def __init__(self, model, granularities: Sequence[float], ratio: float, device: str = "cpu") -> None:
        self.ratio = float(ratio)
        self.pairs = full_only(model, granularities, device) if self.ratio != 1 else []
        self._before: list = []

    def before(self) -> None:
        self._before = [p.detach().clone() for p, _ in self.pairs]

    def after(self) -> None:
        import torch

        with torch.no_grad():
            for (p, mask), old in zip(self.pairs, self._before):
                p.copy_(torch.where(mask, old + self.ratio * (p - old), p))
        self._before = []


#: shift_consistency compares pixels at least this far from the edges of both frames (the frame and
#: the rolled one): padding changes a network's output near a frame's edge, and the roll's seam lies on
#: the rolled frame's edge.
CONSISTENCY_BAND = 8


def _inner(n: int, d: int, band: int):
    """Positions 0..n-1 at least ``band`` from the edges of a line and of that line rolled by ``d``."""
    import torch

    j = torch.arange(n)
    k = (j + d) % n
    return (j >= band) & (j < n - band) & (k >= band) & (k < n - band)


def shift_consistency(model, x, logits, g: float, shift: tuple[int, int], band: int = CONSISTENCY_BAND):
    """How far the network's soft mask moves other than with the frame: the mean squared difference
    between the probabilities on ``x`` (``logits``) and on ``x`` rolled by ``shift`` = (dy, dx)
    pixels, rolled back, over the pixels ``band`` or more from the edges of both frames. Both views
    take its gradient."""
    import torch

    dy, dx = shift
    other = model(torch.roll(x, (dy, dx), (2, 3)), g).float()
    other = torch.roll(other, (-dy, -dx), (2, 3))
    h, w = logits.shape[-2:]
    keep = (_inner(h, dy, band)[:, None] & _inner(w, dx, band)[None, :]).to(logits.device)
    diff = (torch.sigmoid(logits) - torch.sigmoid(other)).square()
    return diff[..., keep].mean()


def matryoshka_loss(model, x, y, granularities: Sequence[float], seg_loss, *, distill: float,
                    recon_weight: float = 0.0, recon_loss=None, unlabelled=None,
                    consistency: float = 0.0, shift: tuple[int, int] | None = None):
    """The summed loss of one batch over every granularity, largest first.

    The full network learns from the labels; a smaller one from ``(1 - distill)`` x labels plus
    ``distill`` x the full network's (detached) soft masks, the in-place distillation of slimmable
    networks. With ``recon_weight`` > 0 the reconstruction MSE of every granularity is added,
    on ``x`` and on the unlabelled frames ``unlabelled``. With ``consistency`` > 0 and a ``shift``,
    every granularity also pays ``consistency`` x shift_consistency: its masks should move with
    the frame, not with max pooling's grid.
    """
    import torch
    import torch.nn.functional as F

    total, soft = 0.0, None
    for g in sorted(granularities, reverse=True):
        if recon_weight > 0:
            logits, recon = model(x, g, return_recon=True)
            total = total + recon_weight * recon_loss(recon.float(), x)
            if unlabelled is not None:
                total = total + recon_weight * recon_loss(model.reconstruct(unlabelled, g).float(), unlabelled)
        else:
            logits = model(x, g)
        logits = logits.float()
        if consistency > 0 and shift is not None:
            total = total + consistency * shift_consistency(model, x, logits, g, shift)
        if soft is None:
            total = total + seg_loss(logits, y)
            soft = torch.sigmoid(logits.detach()) if len(granularities) > 1 else None
        else:
            label_part = seg_loss(logits, y)
            kd_part = F.binary_cross_entropy_with_logits(logits, soft)
            total = total + (1 - distill) * label_part + distill * kd_part
    return total


def recalibrate_bn(model, images: np.ndarray, spec, granularities: Sequence[float], device: str,
                   batch: int = 32) -> None:
    """Recompute every batch norm's running statistics for the model's current weights.

    Each granularity has its own (switchable) statistics, so each is run over the same frames;
    momentum None makes them exact averages rather than a lagging EMA.
    """
    import torch
    from torch import nn

    from .predict import normalise

    if len(images) == 0:
        return
    recon = getattr(model, "recon", None)
    skip = {id(m) for m in recon.modules()} if recon is not None else set()
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and id(m) not in skip]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    was_training = model.training
    model.train()
    try:
        with torch.no_grad():
            for g in granularities:
                for i in range(0, len(images), batch):
                    x = torch.from_numpy(images[i:i + batch]).to(device).permute(0, 3, 1, 2).float()
                    model(normalise(x, spec), g)
    finally:
        for m, mom in zip(bns, saved):
            m.momentum = mom
        model.train(was_training)
