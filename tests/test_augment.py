"""The training augmentation presets: light (the default) and heavy (synthetic-to-real)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from echoseg.data.augment import STRENGTHS, augment_batch, augment_config  # noqa: E402


def _batch():
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(6, 1, 48, 48, generator=g) * 200).repeat(1, 3, 1, 1)  # greyscale, as echo frames are
    y = torch.zeros(6, 1, 48, 48)
    y[:, :, 16:32, 18:30] = 1
    x[:, :, 16:32, 18:30] *= 0.1  # a dark cavity where the mask is
    return x, y


def _run(strength: str, seed: int = 3):
    x, y = _batch()
    return augment_batch(x, y, torch.Generator().manual_seed(seed), augment_config(strength))


def test_light_is_the_default_config_and_deterministic():
    x, y = _batch()
    a = augment_batch(x, y, torch.Generator().manual_seed(3))
    b = _run("light")
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_heavy_changes_the_image_beyond_light_but_moves_masks_only_geometrically():
    (lx, ly), (hx, hy) = _run("light"), _run("heavy")
    assert hx.min() >= 0 and hx.max() <= 255
    assert set(torch.unique(hy).tolist()) <= {0.0, 1.0}
    # the same pixel-level roughness check: heavy adds noise, so neighbours differ more on average
    rough = lambda t: (t[..., 18:30, 19:30] - t[..., 18:30, 18:29]).abs().mean()  # noqa: E731  (inside the frame)
    flat = torch.full((6, 3, 48, 48), 100.0), torch.zeros(6, 1, 48, 48)
    lf = augment_batch(*flat, torch.Generator().manual_seed(1), STRENGTHS["light"])[0]
    hf = augment_batch(*flat, torch.Generator().manual_seed(1), STRENGTHS["heavy"])[0]
    assert rough(lf) < 1e-3 < rough(hf)
    # masks stay aligned with the dark cavity they were made with
    inside = hx[:, :1][hy > 0.5].mean()
    outside = hx[:, :1][hy < 0.5].mean()
    assert inside < outside
    # channels stay identical (greyscale frames)
    assert torch.equal(hx[:, 0], hx[:, 1]) and torch.equal(hx[:, 1], hx[:, 2])


def test_unknown_strength_is_refused_in_one_line():
    with pytest.raises(ValueError, match="unknown augmentation strength 'wild'"):
        augment_config("wild")
    from echoseg.config import ConfigError, TrainConfig

    with pytest.raises(ConfigError, match="augment_strength"):
        TrainConfig(augment_strength="wild")


def _ellipse(n: int, size: int, cy: float, cx: float, ry: float, rx: float, tilt_deg: float = 0.0):
    """n masks of one filled ellipse whose long axis runs down the image (apex up), tilted by tilt_deg."""
    import math

    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                            indexing="ij")
    t = math.radians(tilt_deg)
    dy, dx = yy - cy, xx - cx
    along, across = dy * math.cos(t) + dx * math.sin(t), -dy * math.sin(t) + dx * math.cos(t)
    m = ((along / ry) ** 2 + (across / rx) ** 2 <= 1).float()
    return m.expand(n, 1, size, size).clone()


def _shade(masks, share=1.0, seed=0):
    from echoseg.data.augment import _valve_shade

    g = torch.Generator().manual_seed(seed)
    n = masks.shape[0]
    uniform = lambda lo, hi: torch.rand(n, generator=g) * (hi - lo) + lo  # noqa: E731
    return _valve_shade(masks, g, share, uniform)


@pytest.mark.parametrize("tilt", [0.0, 25.0, -25.0])
def test_valve_dropout_darkens_the_band_past_the_base_not_the_apex(tilt):
    import math

    masks = _ellipse(8, 96, cy=40, cx=48, ry=24, rx=11, tilt_deg=tilt)
    shade = _shade(masks)
    assert shade.shape == masks.shape and shade.max() <= 1 and shade.min() >= 0
    t = math.radians(tilt)
    down = (math.cos(t), math.sin(t))  # unit vector (y, x) from apex to base
    at = lambda d: shade[:, 0, round(40 + d * down[0]), round(48 + d * down[1])]  # noqa: E731
    assert (at(25) < 0.75).all()  # just past the basal end: darkened in every image
    assert (at(-24) > 0.999).all() and (at(0) > 0.99).all()  # apex and centre untouched
    # the darkest pixel of each image lies beyond the middle, towards the base
    flat = shade[:, 0].reshape(8, -1).argmin(1)
    ys, xs = (flat // 96).float(), (flat % 96).float()
    assert (((ys - 40) * down[0] + (xs - 48) * down[1]) > 15).all()


def test_valve_dropout_spares_images_without_a_mask_and_its_share_is_kept():
    empty = torch.zeros(4, 1, 64, 64)
    assert torch.equal(_shade(empty), torch.ones_like(empty))
    masks = _ellipse(400, 64, cy=26, cx=32, ry=16, rx=8)
    hit = (_shade(masks, share=0.5).amin((1, 2, 3)) < 0.9).float().mean().item()
    assert 0.4 < hit < 0.6
    assert torch.equal(_shade(masks, share=0.0), torch.ones_like(masks))


def test_heavy_valve_changes_images_only_and_heavy_stays_as_it_was():
    x, y = _batch()
    (hx, hy), (vx, vy) = _run("heavy"), _run("heavy-valve")
    assert torch.equal(hy, vy)  # labels never move with the valve band
    assert not torch.equal(hx, vx)
    assert STRENGTHS["heavy"].valve_dropout == 0 and STRENGTHS["heavy-valve"].valve_dropout > 0
    from dataclasses import replace

    assert replace(STRENGTHS["heavy-valve"], valve_dropout=0.0) == STRENGTHS["heavy"]
