"""Several trained networks of one architecture as one model: their probabilities averaged.

Networks trained alike from different seeds err differently on frames unlike their training data;
averaging their probabilities (then cutting at the threshold as for one network) removes the part
of the error that is seed luck. On the real dev frames five ``echo3`` runs averaged gained about
0.01 Dice over all nine patients and steadied the worst one (docs/bundle-history.md, "seed ensembles").

An ensemble is a :class:`ModelConfig` with ``members`` > 1; its state dict holds each member's
under ``members.<i>.``. Each member was trained on its own data, so each expects its own input
normalisation: the ensemble takes the first member's (its input spec) and turns it into member
i's with a per-channel scale and shift (``inputs.<i>.``: ``x * s0 / si + (m0 - mi) / si``), two
element-wise ops in the graph. It runs at every granularity its members share (each member at g, then
averaged), slices into an ensemble of slices, and exports as one ONNX graph whose output is still
logits: ``log(p) - log(1 - p)`` of the mean probability ``p``, clipped to ``[EPS, 1 - EPS]`` so an
FP16 graph cannot reach an infinite logit. ``combine`` makes an ensemble checkpoint from runs
(``echo-export ensemble RUN1 RUN2 ...``); ``member_state`` takes one member back out (what
``--init`` starts a training from).
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from echoseg.config import InputSpec, ModelConfig

#: Probabilities are clipped to [EPS, 1 - EPS] before they become logits again (|logit| <= 9.2).
EPS = 1e-4
PREFIX = "members."


class InputAdapter(nn.Module):
    """The ensemble's normalised input as one member expects it: ``x * scale + shift`` per channel."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("scale", torch.ones(1, channels, 1, 1))
        self.register_buffer("shift", torch.zeros(1, channels, 1, 1))

    def set(self, first: InputSpec, own: InputSpec) -> "InputAdapter":
        m0, s0 = torch.tensor(first.mean), torch.tensor(first.std)
        mi, si = torch.tensor(own.mean), torch.tensor(own.std)
        with torch.no_grad():
            self.scale.copy_((s0 / si).view(1, -1, 1, 1))
            self.shift.copy_(((m0 - mi) / si).view(1, -1, 1, 1))
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift  # exact for the first member (1 and 0)


class Ensemble(nn.Module):
    """Members of one architecture, width and granularities; forward averages their probabilities."""

    def __init__(self, members: Sequence[nn.Module], inputs: Sequence[InputAdapter] | None = None) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {len(members)}")
        first = members[0]
        for m in members[1:]:
            if (type(m), m.init_kwargs()) != (type(first), first.init_kwargs()):
                raise ValueError("ensemble members must be the same model, width and granularities")
        self.members = nn.ModuleList(members)
        self.inputs = nn.ModuleList(inputs if inputs is not None else
                                    [InputAdapter(first.in_channels) for _ in members])
        self.name = first.name
        self.width = first.width
        self.in_channels = first.in_channels
        self.granularities = first.granularities
        self.antialias = first.antialias
        self.channels = first.channels

    def default_granularity(self, g: float | None) -> float:
        return self.members[0].default_granularity(g)

    def forward(self, x: torch.Tensor, g: float | None = None) -> torch.Tensor:
        """Logits of the members' mean probability, N,1,H,W."""
        g = self.default_granularity(g)
        p = torch.stack([torch.sigmoid(m(a(x), g)) for m, a in zip(self.members, self.inputs)])
        p = p.mean(0).clamp(EPS, 1.0 - EPS)
        return torch.log(p) - torch.log1p(-p)

    def sub_width(self, g: float) -> int:
        return self.members[0].sub_width(g)

    def sliced(self, g: float) -> "Ensemble":
        """An ensemble of each member's stand-alone granularity-g network."""
        import copy

        return Ensemble([m.sliced(g) for m in self.members],
                        [copy.deepcopy(a) for a in self.inputs]).train(self.training)

    def init_kwargs(self) -> dict:
        return self.members[0].init_kwargs()


def member_config(cfg: ModelConfig) -> ModelConfig:
    """One member's description."""
    return replace(cfg, members=1)


def member_state(state: dict[str, Any], index: int = 0) -> dict[str, Any]:
    """Member ``index``'s tensors out of an ensemble's state dict, under the single network's names."""
    head = f"{PREFIX}{index}."
    out = {k[len(head):]: v for k, v in state.items() if k.startswith(head)}
    if not out:
        raise ValueError(f"no member {index} in this state (keys start {next(iter(state), '')!r})")
    return out


def combine(runs: Sequence[str | os.PathLike], out: str | os.PathLike) -> Path:
    """Write ``out`` (a run folder, or a .pt file) holding the ensemble of ``runs``' checkpoints.

    Every run must be the same model, width, granularities, input size and threshold (each may
    have its own normalisation: the first member's is the ensemble's); anything else is a one-line
    :class:`CheckpointError` naming the run that differs. The checkpoint records each member's
    path and sha256 (``ensemble_of``), and the first member's training options.
    """
    from echoseg.artifacts import file_sha256

    from .checkpoint import CheckpointError, build_from_checkpoint, load_checkpoint, save_checkpoint

    if len(runs) < 2:
        raise CheckpointError(f"an ensemble needs at least two runs, got {len(runs)}; name two or more run folders")
    ckpts = [load_checkpoint(r) for r in runs]
    first = ckpts[0]
    for c in ckpts:
        if c.model.members != 1:
            raise CheckpointError(f"{c.path}: already an ensemble of {c.model.members}; name its member runs instead")
    for c in ckpts[1:]:
        for what, a, b in (("model", first.model, c.model), ("input size", _size(first.input_spec), _size(c.input_spec)),
                           ("threshold", first.threshold, c.threshold)):
            if a != b:
                raise CheckpointError(f"{c.path}: its {what} ({_brief(b)}) differs from {first.path}'s "
                                      f"({_brief(a)}); an ensemble's members must be trained alike")
    model = Ensemble([build_from_checkpoint(c) for c in ckpts],
                     [InputAdapter(first.input_spec.channels).set(first.input_spec, c.input_spec) for c in ckpts])
    cfg = replace(first.model, members=len(ckpts))
    target = Path(out)
    if target.suffix != ".pt":
        target.mkdir(parents=True, exist_ok=True)
        target = target / "best.pt"
    sources = [{"checkpoint": str(c.path), "sha256": file_sha256(c.path)} for c in ckpts]
    return save_checkpoint(target, model, cfg, first.input_spec, threshold=first.threshold,
                           train_config=first.train_config, ensemble_of=sources)


def _size(spec: InputSpec) -> tuple[int, int, int]:
    return (spec.height, spec.width, spec.channels)


def _brief(x: Any) -> str:
    d = x.to_dict() if hasattr(x, "to_dict") else x
    return str(d)[:120]
