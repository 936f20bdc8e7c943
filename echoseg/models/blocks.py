"""Layers whose channels are nested: the first fraction g of them is a complete smaller layer.

Every layer here holds weights for its largest width and, at granularity g, uses only the
leading ``nested(c, g)`` output channels and whatever input channels it is given. With g = 1
they are ordinary layers, so the vanilla U-Net and the Matryoshka U-Net share one code path.
Batch norm is *switchable* (one set of statistics per granularity), as in slimmable networks:
the statistics of a 1/8-width network differ from those of the full one.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def nested(channels: int, g: float) -> int:
    """Channels used at granularity g (at least one)."""
    return max(1, int(round(channels * g)))


class MacCounter:
    """Mixin: a layer records the multiply-accumulates of its last forward in ``last_macs``."""

    last_macs: int = 0


class SlimConv2d(nn.Conv2d, MacCounter):
    """A convolution that uses the first ``nested(out, g)`` filters over the channels it is given.

    ``in_parts`` describes an input made by concatenating several nested tensors (a U-Net
    skip): the full-width sizes of the parts, so that at a small g the leading channels of
    *each* part are matched with their own weights.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int, *, fixed_out: bool = False,
                 in_parts: Sequence[int] | None = None, bias: bool = True) -> None:
        super().__init__(in_ch, out_ch, kernel, padding=kernel // 2, bias=bias)
        self.fixed_out = fixed_out
        self.in_parts = tuple(in_parts) if in_parts else (in_ch,)
        if sum(self.in_parts) != in_ch:
            raise ValueError(f"in_parts {self.in_parts} must add up to in_ch {in_ch}")

    def sliced_weight(self, g: float, used_in: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor | None]:
        out = self.out_channels if self.fixed_out else nested(self.out_channels, g)
        w = self.weight[:out]
        if tuple(used_in) != self.in_parts:
            pieces, start = [], 0
            for full, used in zip(self.in_parts, used_in):
                pieces.append(w[:, start:start + used])
                start += full
            w = torch.cat(pieces, dim=1) if len(pieces) > 1 else pieces[0]
        b = self.bias[:out] if self.bias is not None else None
        return w, b

    def forward(self, x: torch.Tensor, g: float = 1.0,  # type: ignore[override]
                used_in: Sequence[int] | None = None) -> torch.Tensor:
        parts = tuple(used_in) if used_in is not None else (x.shape[1],)
        if len(parts) != len(self.in_parts):
            parts = (x.shape[1],)
        w, b = self.sliced_weight(g, parts)
        y = F.conv2d(x, w, b, padding=self.padding)
        self.last_macs = int(y.shape[1] * y.shape[2] * y.shape[3] * w.shape[1] * w.shape[2] * w.shape[3])
        return y


class SlimConvTranspose2d(nn.ConvTranspose2d, MacCounter):
    """A 2x2 stride-2 up-convolution with nested input and output channels."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__(in_ch, out_ch, kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor, g: float = 1.0) -> torch.Tensor:  # type: ignore[override]
        out = nested(self.out_channels, g)
        w = self.weight[: x.shape[1], :out]
        y = F.conv_transpose2d(x, w, self.bias[:out], stride=2)
        self.last_macs = int(x.shape[1] * x.shape[2] * x.shape[3] * out * 4)
        return y


class SwitchableBatchNorm2d(nn.Module):
    """One BatchNorm2d per granularity, each sized for its nested width."""

    def __init__(self, channels: int, granularities: Sequence[float]) -> None:
        super().__init__()
        self.granularities = tuple(float(g) for g in granularities)
        self.bns = nn.ModuleList(nn.BatchNorm2d(nested(channels, g)) for g in self.granularities)

    def index(self, g: float) -> int:
        for i, known in enumerate(self.granularities):
            if abs(known - g) < 1e-9:
                return i
        raise ValueError(f"granularity {g} is not one of this model's {list(self.granularities)}")

    def forward(self, x: torch.Tensor, g: float = 1.0) -> torch.Tensor:
        return self.bns[self.index(g)](x)


def max_blur_pool(x: torch.Tensor) -> torch.Tensor:
    """Anti-aliased 2x down-sampling (max-blur pooling, Zhang 2019, "Making convolutional networks
    shift-invariant again"): the max over every 2x2 window at stride 1, then a [1 2 1] x [1 2 1] / 16
    blur sampled at stride 2.

    Plain 2x2 max pooling picks one of four grids, so moving the input by a pixel can change what a
    deep layer sees; the blur makes the down-sampled map change smoothly with the shift. No weights
    (old checkpoints load unchanged); the output is the same size and on the same grid as
    ``F.max_pool2d(x, 2)``. It exports as MaxPool and a grouped Conv. Its few multiply-accumulates (9
    per output element) are not counted in ``last_macs``.
    """
    c = int(x.shape[1])  # a constant when traced for export: the blur is a fixed grouped convolution
    k = torch.tensor([1.0, 2.0, 1.0], dtype=x.dtype, device=x.device)
    k = (k[:, None] * k[None, :] / 16).repeat(c, 1, 1, 1)
    return F.conv2d(F.max_pool2d(x, 2, stride=1), k, stride=2, padding=1, groups=c)


class ConvBlock(nn.Module):
    """Two 3x3 convolutions, each followed by batch norm and ReLU (the U-Net block)."""

    def __init__(self, in_ch: int, out_ch: int, granularities: Sequence[float], *,
                 in_parts: Sequence[int] | None = None) -> None:
        super().__init__()
        self.conv1 = SlimConv2d(in_ch, out_ch, 3, in_parts=in_parts, bias=False)
        self.bn1 = SwitchableBatchNorm2d(out_ch, granularities)
        self.conv2 = SlimConv2d(out_ch, out_ch, 3, bias=False)
        self.bn2 = SwitchableBatchNorm2d(out_ch, granularities)

    def forward(self, x: torch.Tensor, g: float = 1.0,
                used_in: Sequence[int] | None = None) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x, g, used_in), g))
        return F.relu(self.bn2(self.conv2(x, g), g))


def total_macs(module: nn.Module) -> int:
    """Sum of the multiply-accumulates recorded by every nested layer's last forward."""
    return sum(m.last_macs for m in module.modules() if isinstance(m, MacCounter))
