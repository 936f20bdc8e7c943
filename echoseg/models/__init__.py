"""Model registry: names to constructors, and multiply-accumulate counting."""

from __future__ import annotations

from typing import Callable

from echoseg.config import DEFAULT_GRANULARITIES, ModelConfig
from echoseg.errors import EchosegError


def _unet(cfg: ModelConfig):
    from .unet import UNet

    return UNet(width=cfg.width, granularities=(1.0,), antialias=cfg.antialias)


def _matae(cfg: ModelConfig):
    from .matae import MatAEUNet

    gs = cfg.granularities if len(cfg.granularities) > 1 or cfg.granularities == (1.0,) else DEFAULT_GRANULARITIES
    return MatAEUNet(width=cfg.width, granularities=gs, antialias=cfg.antialias)


REGISTRY: dict[str, Callable[[ModelConfig], object]] = {"unet": _unet, "matae-unet": _matae}
MODEL_NAMES = tuple(REGISTRY)


class UnknownModelError(EchosegError, ValueError):
    """A model name that is not in the registry."""


def check_name(name: str) -> str:
    if name not in REGISTRY:
        raise UnknownModelError(f"unknown model {name!r}; valid models are: {', '.join(MODEL_NAMES)}")
    return name


def default_config(name: str, width: int) -> ModelConfig:
    """The ModelConfig `echo-train` uses for a model name and base width."""
    check_name(name)
    if name == "matae-unet":
        return ModelConfig(name=name, width=width, granularities=DEFAULT_GRANULARITIES)  # recon weight: the run's
    return ModelConfig(name=name, width=width, granularities=(1.0,))


def build_model(cfg: ModelConfig):
    """A freshly initialised torch module for ``cfg`` (imports torch); an ensemble when ``cfg.members`` > 1."""
    make = REGISTRY[check_name(cfg.name)]
    if cfg.members > 1:
        from .ensemble import Ensemble, member_config

        return Ensemble([make(member_config(cfg)) for _ in range(cfg.members)])
    return make(cfg)


def count_macs(model, g: float = 1.0, size: tuple[int, int] = (112, 112)) -> int:
    """Multiply-accumulates of one frame's segmentation forward at granularity g."""
    import torch

    from .blocks import MacCounter, total_macs

    for m in model.modules():
        if isinstance(m, MacCounter):
            m.last_macs = 0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, model.in_channels, *size), g)
    model.train(was_training)
    return total_macs(model) - _recon_macs(model)


def _recon_macs(model) -> int:
    """What the reconstruction heads (one per member of an ensemble) counted."""
    from .blocks import total_macs

    return sum(total_macs(m.recon) for m in model.modules() if getattr(m, "recon", None) is not None)
