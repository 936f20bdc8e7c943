"""Training augmentation on torch batches: intensity, rotation/scale/shift; the heavy preset adds
blur, noise, contrast and dark blotches (for models trained on synthetic echo that must meet real).

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
    # heavy preset only (0 = off, and no random numbers drawn for them)
    max_blur: float = 0.0  # Gaussian blur sigma, px
    max_noise: float = 0.0  # additive Gaussian noise sd, grey levels
    contrast: float = 0.0  # contrast changed by up to this fraction around the image mean
    blotches: int = 0  # up to this many dark blotches (dropout, shadows) per image


STRENGTHS = {
    "light": AugmentConfig(),
    "heavy": AugmentConfig(max_rotate_deg=15.0, scale=(0.8, 1.25), max_shift=0.1, gain=(0.6, 1.5), gamma=(0.6, 1.6),
                           max_blur=1.2, max_noise=10.0, contrast=0.35, blotches=3),
}


def augment_config(strength: str) -> AugmentConfig:
    try:
        return STRENGTHS[strength]
    except KeyError:
        raise ValueError(f"unknown augmentation strength {strength!r}; use one of {', '.join(STRENGTHS)}") from None


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
    if cfg.max_blur or cfg.max_noise or cfg.contrast or cfg.blotches:
        images = _degrade(images, generator, cfg, uniform)
    return images.clamp(0, 255), masks


def _degrade(images, generator, cfg: AugmentConfig, uniform):
    """The heavy preset's image-only changes: blur, contrast, dark blotches, noise."""
    import torch
    import torch.nn.functional as F

    n, ch, h, w = images.shape
    dev = images.device
    if cfg.max_blur:
        sigma = uniform(0.0, cfg.max_blur)
        r = int(math.ceil(3 * cfg.max_blur))
        xs = torch.arange(-r, r + 1, dtype=images.dtype, device=dev)
        k = torch.exp(-xs[None] ** 2 / (2 * sigma.clamp(min=1e-3)[:, None] ** 2))
        k = k / k.sum(1, keepdim=True)  # N, K: one separable kernel per image
        flat = images.reshape(1, n * ch, h, w)
        kk = k.repeat_interleave(ch, 0)
        flat = F.conv2d(F.pad(flat, (r, r, 0, 0), mode="replicate"), kk[:, None, None, :], groups=n * ch)
        flat = F.conv2d(F.pad(flat, (0, 0, r, r), mode="replicate"), kk[:, None, :, None], groups=n * ch)
        images = flat.reshape(n, ch, h, w)
    if cfg.contrast:
        c = uniform(1 - cfg.contrast, 1 + cfg.contrast).view(n, 1, 1, 1)
        mean = images.mean(dim=(1, 2, 3), keepdim=True)
        images = (images - mean) * c + mean
    if cfg.blotches:
        yy, xx = torch.meshgrid(torch.arange(h, device=dev), torch.arange(w, device=dev), indexing="ij")
        shade = torch.ones(n, 1, h, w, device=dev)
        for _ in range(cfg.blotches):
            on = (torch.rand(n, generator=generator) < 0.5).to(dev).view(n, 1, 1)
            cx, cy = uniform(0, w), uniform(0, h)
            rad = uniform(4, 16)
            depth = uniform(0.2, 0.9)
            d2 = (xx[None] - cx.view(n, 1, 1)) ** 2 + (yy[None] - cy.view(n, 1, 1)) ** 2
            blot = 1 - depth.view(n, 1, 1) * torch.exp(-d2 / (2 * rad.view(n, 1, 1) ** 2)) * on
            shade = shade * blot[:, None]
        images = images * shade
    if cfg.max_noise:
        sd = uniform(0, cfg.max_noise).view(n, 1, 1, 1)
        noise = torch.randn(n, 1, h, w, generator=generator).to(dev) * sd
        images = images + noise  # the same noise in every channel: the frames are greyscale
    return images
