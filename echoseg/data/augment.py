"""Light training augmentation on torch batches: intensity, small rotation/scale/shift.

No flips: a mirrored apical four-chamber view would put the LV on the wrong side of the heart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class AugmentConfig:
    max_rotate_deg: float = 10.0
    scale: tuple[float, float] = (0.9, 1.1)
    max_shift: float = 0.06  # fraction of the image size
    gain: tuple[float, float] = (0.8, 1.2)
    gamma: tuple[float, float] = (0.8, 1.25)


def augment_batch(images, masks, generator, cfg: AugmentConfig = AugmentConfig()):
    """images N,C,H,W float 0..255 and masks N,1,H,W float 0/1 -> augmented copies."""
    import torch
    import torch.nn.functional as F

    n = images.shape[0]
    dev = images.device

    def uniform(lo: float, hi: float):
        return torch.rand(n, generator=generator).to(dev) * (hi - lo) + lo

    angle = uniform(-cfg.max_rotate_deg, cfg.max_rotate_deg) * math.pi / 180
    scale = uniform(*cfg.scale)
    tx, ty = uniform(-cfg.max_shift, cfg.max_shift) * 2, uniform(-cfg.max_shift, cfg.max_shift) * 2
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    images = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    masks = (F.grid_sample(masks, grid, mode="bilinear", padding_mode="zeros", align_corners=False) > 0.5).float()
    gain = uniform(*cfg.gain).view(n, 1, 1, 1)
    gamma = uniform(*cfg.gamma).view(n, 1, 1, 1)
    images = 255.0 * (images.clamp(0, 255) / 255.0) ** gamma * gain
    return images.clamp(0, 255), masks
