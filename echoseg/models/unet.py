"""The paper's vanilla U-Net: four 2x down levels (112 -> 7), skip concatenation, one logit out."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import ConvBlock, SlimConv2d, SlimConvTranspose2d, SwitchableBatchNorm2d, max_blur_pool, nested

LEVELS = 4  # 112 -> 56 -> 28 -> 14 -> 7


class UNet(nn.Module):
    """U-Net with channels w, 2w, 4w, 8w and a 16w bottleneck; every layer nested.

    ``granularities`` lists the widths (as fractions) this network can run at; the vanilla
    U-Net has only (1.0,). ``forward(x, g)`` runs the leading fraction g of every layer.
    ``antialias`` down-samples with max-blur pooling instead of max pooling (no weights of its own).
    """

    name = "unet"

    def __init__(self, width: int = 64, in_channels: int = 3,
                 granularities: Sequence[float] = (1.0,), antialias: bool = False) -> None:
        super().__init__()
        self.width = int(width)
        self.antialias = bool(antialias)
        self.in_channels = int(in_channels)
        self.granularities = tuple(sorted(float(g) for g in granularities))
        if self.granularities[-1] != 1.0:
            raise ValueError(f"granularities must include 1.0, got {list(self.granularities)}")
        gs = self.granularities
        chans = [self.width * 2 ** i for i in range(LEVELS + 1)]  # w .. 16w
        self.channels = chans
        self.down = nn.ModuleList()
        prev = self.in_channels
        for c in chans:
            self.down.append(ConvBlock(prev, c, gs))
            prev = c
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        for i in reversed(range(LEVELS)):
            self.up.append(SlimConvTranspose2d(chans[i + 1], chans[i]))
            self.dec.append(ConvBlock(2 * chans[i], chans[i], gs, in_parts=(chans[i], chans[i])))
        self.head = SlimConv2d(chans[0], 1, 1, fixed_out=True)

    def default_granularity(self, g: float | None) -> float:
        if g is None:
            return 1.0
        g = float(g)
        if not any(abs(g - k) < 1e-9 for k in self.granularities):
            raise ValueError(f"granularity {g} is not one of this model's {list(self.granularities)}")
        return g

    def encode(self, x: torch.Tensor, g: float) -> list[torch.Tensor]:
        """Feature maps of every level, the bottleneck last."""
        feats = []
        for i, block in enumerate(self.down):
            if i:
                x = max_blur_pool(x) if self.antialias else F.max_pool2d(x, 2)
            x = block(x, g)
            feats.append(x)
        return feats

    def decode(self, feats: list[torch.Tensor], g: float) -> torch.Tensor:
        x = feats[-1]
        for up, dec, skip in zip(self.up, self.dec, reversed(feats[:-1])):
            x = up(x, g)
            x = dec(torch.cat([x, skip], dim=1), g, used_in=(x.shape[1], skip.shape[1]))
        return self.head(x, g)

    def forward(self, x: torch.Tensor, g: float | None = None) -> torch.Tensor:
        """Logits N,1,H,W at granularity g (default: full width)."""
        g = self.default_granularity(g)
        return self.decode(self.encode(x, g), g)

    def sub_width(self, g: float) -> int:
        """Base width of the stand-alone network that granularity g is."""
        w = nested(self.width, g)
        for i, c in enumerate(self.channels):
            if nested(c, g) != w * 2 ** i:
                raise ValueError(
                    f"width {self.width} does not nest cleanly at g={g}; use a width divisible by "
                    f"{round(1 / min(self.granularities))}"
                )
        return w

    def sliced(self, g: float) -> "UNet":
        """A stand-alone network that is granularity g of this one, with copied weights.

        Its output equals ``self(x, g)`` (in eval mode); it has the real, smaller number of
        multiply-accumulates, so it can be exported and deployed on its own.
        """
        g = self.default_granularity(g)
        sub = self.__class__(**{**self.init_kwargs(), "width": self.sub_width(g), "granularities": (1.0,)})
        with torch.no_grad():
            small_by_name = dict(sub.named_modules())
            for name, full in self.named_modules():
                small = small_by_name.get(name)
                if small is None:
                    continue
                if isinstance(full, SlimConv2d):
                    w, b = full.sliced_weight(g, small.in_parts)
                    small.weight.copy_(w)
                    if b is not None:
                        small.bias.copy_(b)
                elif isinstance(full, SlimConvTranspose2d):
                    small.weight.copy_(full.weight[: small.in_channels, : small.out_channels])
                    small.bias.copy_(full.bias[: small.out_channels])
                elif isinstance(full, SwitchableBatchNorm2d):
                    small.bns[0].load_state_dict(full.bns[full.index(g)].state_dict())
        return sub.train(self.training)

    def init_kwargs(self) -> dict:
        return {"width": self.width, "in_channels": self.in_channels, "granularities": self.granularities,
                "antialias": self.antialias}
