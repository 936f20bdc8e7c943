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
