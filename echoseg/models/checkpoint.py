"""Checkpoints that describe themselves: model, widths, granularities, input spec, metrics.

Saved atomically (temp name, then rename) and always loaded with ``weights_only=True``, so a
checkpoint from elsewhere cannot run code.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from echoseg.artifacts import file_sha256  # noqa: F401  (re-exported; hashes live in artifacts)
from echoseg.atomic import atomic_path
from echoseg.config import ArtifactMeta, ConfigError, InputSpec, ModelConfig, TrainConfig
from echoseg.errors import EchosegError

log = logging.getLogger(__name__)

FORMAT = "echoseg-checkpoint"
VERSION = 1


class CheckpointError(EchosegError, ValueError):
    """A checkpoint that is missing, corrupt, or not an echoseg checkpoint."""


@dataclass
class Checkpoint:
    model: ModelConfig
    input_spec: InputSpec
    state_dict: dict[str, Any]
    threshold: float = 0.5
    metrics: dict[str, float] = field(default_factory=dict)
    train_config: TrainConfig | None = None
    epoch: int = 0
    optimizer: dict[str, Any] | None = None
    path: Path | None = None
    ensemble_of: list[dict[str, str]] = field(default_factory=list)  # an ensemble's members: checkpoint, sha256

    def meta(self, granularity: float = 1.0) -> ArtifactMeta:
        """The description an exported artifact of this checkpoint carries."""
        return ArtifactMeta(model=self.model, input_spec=self.input_spec, granularity=granularity,
                            threshold=self.threshold,
                            source_sha256=file_sha256(self.path) if self.path else "",
                            metrics={k: float(v) for k, v in self.metrics.items()
                                     if isinstance(v, (int, float))})


def resolve(path: str | os.PathLike) -> Path:
    """A checkpoint file from a run directory (best.pt, else last.pt) or a file path."""
    p = Path(path)
    if p.is_dir():
        for name in ("best.pt", "last.pt"):
            if (p / name).is_file():
                return p / name
        raise CheckpointError(f"{p}: no best.pt or last.pt in this run directory; train with echo-train --out {p}")
    if not p.exists():
        raise CheckpointError(f"{p}: no such checkpoint or run directory")
    return p


def save_checkpoint(path: str | os.PathLike, model, cfg: ModelConfig, spec: InputSpec, *,
                    threshold: float = 0.5, metrics: dict[str, float] | None = None,
                    train_config: TrainConfig | None = None, epoch: int = 0,
                    optimizer_state: dict[str, Any] | None = None,
                    ensemble_of: list[dict[str, str]] | None = None) -> Path:
    import torch

    payload = {
        "format": FORMAT,
        "version": VERSION,
        "model": cfg.to_dict(),
        "input_spec": spec.to_dict(),
        "threshold": float(threshold),
        "metrics": {k: float(v) for k, v in (metrics or {}).items()},
        "train_config": train_config.to_dict() if train_config else None,
        "epoch": int(epoch),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer_state,
    }
    if ensemble_of:
        payload["ensemble_of"] = [dict(m) for m in ensemble_of]
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint (file or run directory) without running any code from it."""
    import pickle

    import torch

    p = resolve(path)
    try:
        raw = torch.load(p, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, OSError, ValueError, AttributeError) as exc:
        raise CheckpointError(
            f"{p}: not a readable PyTorch checkpoint (corrupt, truncated, or holding objects beyond "
            f"tensors and plain data; loaded with weights_only=True so no code runs) [{type(exc).__name__}]"
        ) from exc
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise CheckpointError(f"{p}: not an echoseg checkpoint (no format={FORMAT!r} key); "
                              "pass a best.pt/last.pt written by echo-train")
    try:
        tc = raw.get("train_config")
        return Checkpoint(
            model=ModelConfig.from_dict(raw["model"]),
            input_spec=InputSpec.from_dict(raw["input_spec"]),
            state_dict=raw["state_dict"],
            threshold=float(raw.get("threshold", 0.5)),
            metrics=dict(raw.get("metrics") or {}),
            train_config=_train_config(tc, p),
            epoch=int(raw.get("epoch", 0)),
            optimizer=raw.get("optimizer"),
            path=p,
            ensemble_of=[dict(m) for m in raw.get("ensemble_of") or []],
        )
    except (KeyError, ConfigError, TypeError) as exc:
        raise CheckpointError(f"{p}: echoseg checkpoint with a bad description ({exc})") from exc


def _train_config(data: dict | None, path: Path) -> TrainConfig | None:
    """The recorded training options; a record this version cannot read (another version's
    options) is only a warning: the weights and their description are what a checkpoint is for."""
    if not data:
        return None
    try:
        return TrainConfig.from_dict(data)
    except (ConfigError, TypeError) as exc:
        log.warning("%s: its training options are not readable by this version (%s); loading the weights anyway",
                    path, exc)
        return None


def build_from_checkpoint(ckpt: Checkpoint):
    """The model of a checkpoint with its weights, in eval mode on the CPU."""
    from echoseg.models import build_model

    model = build_model(ckpt.model)
    try:
        model.load_state_dict(ckpt.state_dict)
    except RuntimeError as exc:
        raise CheckpointError(f"{ckpt.path}: weights do not fit {ckpt.model.name} width {ckpt.model.width} "
                              f"({str(exc).splitlines()[0]})") from exc
    return model.eval()
