"""One training step's loss as a module call, so DistributedDataParallel sees one forward per
backward however many granularities the step runs."""

from __future__ import annotations

from torch import nn

from .recipe import matryoshka_loss


class StepLoss(nn.Module):
    def __init__(self, model: nn.Module, granularities, seg_loss, distill: float, recon_loss,
                 consistency: float = 0.0) -> None:
        super().__init__()
        self.model = model
        self.granularities = tuple(granularities)
        self.seg_loss, self.distill, self.recon_loss = seg_loss, distill, recon_loss
        self.consistency = consistency

    def forward(self, x, y, recon_weight: float, unlabelled=None, shift=None):
        return matryoshka_loss(self.model, x, y, self.granularities, self.seg_loss, distill=self.distill,
                               recon_weight=recon_weight, recon_loss=self.recon_loss, unlabelled=unlabelled,
                               consistency=self.consistency, shift=shift)
