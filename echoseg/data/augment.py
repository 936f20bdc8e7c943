"""Training augmentation on torch batches: intensity, rotation/scale/shift; the heavy preset adds
blur, noise, contrast and dark blotches (for models trained on synthetic echo that must meet real);
heavy-valve also darkens the mitral valve plane in half the frames (a hazy view hides it, and a model
that needs the leaflets then runs the LV into the atrium).

No flips: a mirrored apical four-chamber view would put the LV on the wrong side of the heart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace


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
    valve_dropout: float = 0.0  # share of images whose mitral valve plane (below the mask's base) is darkened


STRENGTHS = {
    "light": AugmentConfig(),
    "heavy": AugmentConfig(max_rotate_deg=15.0, scale=(0.8, 1.25), max_shift=0.1, gain=(0.6, 1.5), gamma=(0.6, 1.6),
                           max_blur=1.2, max_noise=10.0, contrast=0.35, blotches=3),
}
# heavy, and half the images lose their valve plane: the LV must be closed where the walls turn, not at
# leaflets that a hazy view does not show (a real LV then runs into the atrium)
STRENGTHS["heavy-valve"] = replace(STRENGTHS["heavy"], valve_dropout=0.5)


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
    if cfg.max_blur or cfg.max_noise or cfg.contrast or cfg.blotches or cfg.valve_dropout:
        images = _degrade(images, generator, cfg, uniform, masks)
    return images.clamp(0, 255), masks


def _degrade(images, generator, cfg: AugmentConfig, uniform, masks):
    """The heavy preset's image-only changes: blur, contrast, dark blotches, a hidden valve, noise."""
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
    if cfg.valve_dropout:
        images = images * _valve_shade(masks, generator, cfg.valve_dropout, uniform)
    if cfg.max_noise:
        sd = uniform(0, cfg.max_noise).view(n, 1, 1, 1)
        noise = torch.randn(n, 1, h, w, generator=generator).to(dev) * sd
        images = images + noise  # the same noise in every channel: the frames are greyscale
    return images


def _valve_shade(masks, generator, share: float, uniform):
    """N,1,H,W multiplicative shade that darkens the band just past the mask's basal end.

    The mask's long axis (second moments) is oriented away from the apex, which an apical view puts at
    the top; the band is centred a few pixels beyond the farthest mask pixel along it, about as wide as
    the cavity across, so the leaflets and the annulus fade while the walls above stay."""
    import torch

    n, _, h, w = masks.shape
    dev = masks.device
    yy, xx = torch.meshgrid(torch.arange(h, device=dev, dtype=masks.dtype),
                            torch.arange(w, device=dev, dtype=masks.dtype), indexing="ij")
    m = masks[:, 0]
    area = m.sum((1, 2))
    safe = area.clamp(min=1)
    cx = (m * xx).sum((1, 2)) / safe
    cy = (m * yy).sum((1, 2)) / safe
    dx, dy = xx[None] - cx.view(n, 1, 1), yy[None] - cy.view(n, 1, 1)
    sxx, syy, sxy = (m * dx * dx).sum((1, 2)) / safe, (m * dy * dy).sum((1, 2)) / safe, (m * dx * dy).sum((1, 2)) / safe
    angle = 0.5 * torch.atan2(2 * sxy, sxx - syy)  # the major axis
    vx, vy = torch.cos(angle), torch.sin(angle)
    flip = torch.where(vy < 0, -1.0, 1.0).to(masks.dtype)  # towards the base: down, away from the apex
    vx, vy = vx * flip, vy * flip
    along = dx * vx.view(n, 1, 1) + dy * vy.view(n, 1, 1)
    across = -dx * vy.view(n, 1, 1) + dy * vx.view(n, 1, 1)
    base = torch.where(m > 0, along, torch.full_like(along, -1e9)).amax((1, 2))
    minor = ((sxx + syy) / 2 - torch.sqrt(((sxx - syy) / 2) ** 2 + sxy ** 2)).clamp(min=1.0).sqrt()
    past = uniform(-2.0, 4.0)  # band centre beyond the basal end, px
    thick = uniform(3.0, 6.0)  # its sd along the long axis, px
    wide = minor * uniform(1.0, 2.0)  # its sd across
    depth = uniform(0.6, 0.95)
    on = ((torch.rand(n, generator=generator) < share).to(dev) & (area >= 20)).to(masks.dtype)
    d2 = ((along - (base + past).view(n, 1, 1)) / thick.view(n, 1, 1)) ** 2 + (across / wide.view(n, 1, 1)) ** 2
    return (1 - (depth * on).view(n, 1, 1) * torch.exp(-d2 / 2))[:, None]
