"""MatAE-U-Net: a U-Net decoder on a Matryoshka autoencoder encoder.

Matryoshka, after Matryoshka Representation Learning (Kusupati et al. 2022) and its
nested-width follow-ups: every layer's channels are nested, so the first fraction g of them
(g in 1/8, 1/4, 1/2, 1) is a complete smaller network with sliced weights, and training sums
the loss over all granularities. Autoencoder: a reconstruction head rebuilds the (normalised)
input frame from the bottleneck latents alone, with no skips, so the encoder also learns from
unlabelled frames.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from echoseg.config import DEFAULT_GRANULARITIES

from .blocks import SlimConv2d, SlimConvTranspose2d, SwitchableBatchNorm2d
from .unet import LEVELS, UNet


class ReconstructionHead(nn.Module):
    """Bottleneck latents (16w at 7x7) -> input frame (C at 112x112), nested like the encoder."""

    def __init__(self, channels: Sequence[int], out_channels: int, granularities: Sequence[float]) -> None:
        super().__init__()
        self.ups = nn.ModuleList()
        self.convs = nn.ModuleList()
        self.bns = nn.ModuleList()
        for i in reversed(range(LEVELS)):
            self.ups.append(SlimConvTranspose2d(channels[i + 1], channels[i]))
            self.convs.append(SlimConv2d(channels[i], channels[i], 3, bias=False))
            self.bns.append(SwitchableBatchNorm2d(channels[i], granularities))
        self.out = SlimConv2d(channels[0], out_channels, 1, fixed_out=True)

    def forward(self, z: torch.Tensor, g: float) -> torch.Tensor:
        for up, conv, bn in zip(self.ups, self.convs, self.bns):
            z = F.relu(up(z, g))
            z = F.relu(bn(conv(z, g), g))
        return self.out(z, g)


class MatAEUNet(UNet):
    """The nested U-Net plus a reconstruction head on its bottleneck."""

    name = "matae-unet"

    def __init__(self, width: int = 64, in_channels: int = 3,
                 granularities: Sequence[float] = DEFAULT_GRANULARITIES, antialias: bool = False) -> None:
        super().__init__(width=width, in_channels=in_channels, granularities=granularities, antialias=antialias)
        self.recon = ReconstructionHead(self.channels, self.in_channels, self.granularities)

    def forward(self, x: torch.Tensor, g: float | None = None,  # type: ignore[override]
                return_recon: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits at granularity g; with ``return_recon`` also the reconstructed input."""
        g = self.default_granularity(g)
        feats = self.encode(x, g)
        logits = self.decode(feats, g)
        if return_recon:
            return logits, self.recon(feats[-1], g)
        return logits

    def reconstruct(self, x: torch.Tensor, g: float | None = None) -> torch.Tensor:
        """The autoencoder path alone (what unlabelled frames train)."""
        g = self.default_granularity(g)
        return self.recon(self.encode(x, g)[-1], g)
