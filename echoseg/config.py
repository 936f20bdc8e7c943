"""Frozen configuration records shared by every part, with JSON in/out.

These are the only shapes that cross module boundaries: a checkpoint, an ONNX file's
metadata and an engine's sidecar all carry an :class:`InputSpec` and a :class:`ModelConfig`,
so the runtime reads preprocessing from the artifact instead of re-typing it.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping

from echoseg.errors import EchosegError

#: Granularities of the nested (Matryoshka) channel widths, smallest first.
DEFAULT_GRANULARITIES: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0)

#: Key under which an ONNX model's metadata_props carry the whole artifact description.
ONNX_META_KEY = "echoseg"


def logit_cut(threshold: float, output: str = "logits") -> float:
    """The cut on a model's raw output that equals probability > ``threshold``.

    Artifacts output logits (the cut is logit(threshold)); an output already in probabilities
    is cut at the threshold itself.
    """
    if output != "logits":
        return float(threshold)
    t = min(max(float(threshold), 1e-6), 1 - 1e-6)
    return math.log(t / (1 - t))


class ConfigError(EchosegError, ValueError):
    """A configuration or artifact description that cannot be used as given."""


def _from_mapping(cls: type, data: Mapping[str, Any], what: str) -> Any:
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{what}: unknown keys {unknown}; expected some of {sorted(names)}")
    return cls(**dict(data))


class _Record:
    """JSON in/out for the flat frozen records: tuples become lists, unknown keys are an error."""

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]):
        return _from_mapping(cls, data, cls.__name__)


@dataclass(frozen=True)
class InputSpec(_Record):
    """What a model expects: an N,C,H,W float32 batch made as (pixel - mean) / std.

    Pixels are 0..255 in OpenCV's channel order (BGR), the order every reader here uses.
    """

    height: int = 112
    width: int = 112
    channels: int = 3
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ConfigError(
                f"InputSpec: mean/std need {self.channels} values each, got {len(self.mean)}/{len(self.std)}"
            )
        if any(s <= 0 for s in self.std):
            raise ConfigError(f"InputSpec: std must be positive, got {self.std}")

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)


@dataclass(frozen=True)
class ModelConfig(_Record):
    """Which network and how wide: enough to rebuild it before loading weights."""

    name: str = "unet"
    width: int = 64
    granularities: tuple[float, ...] = (1.0,)
    recon_weight: float = 0.0
    antialias: bool = False  # max-blur pooling for the encoder's down-sampling (models.blocks.max_blur_pool)
    members: int = 1  # > 1: that many networks like this one, probabilities averaged (models.ensemble)

    def __post_init__(self) -> None:
        object.__setattr__(self, "granularities", tuple(float(g) for g in self.granularities))
        if self.width < 1:
            raise ConfigError(f"ModelConfig: width must be >= 1, got {self.width}")
        if self.members < 1:
            raise ConfigError(f"ModelConfig: members must be >= 1, got {self.members}")

    def to_dict(self) -> dict[str, Any]:
        """As every record, but ``antialias`` only when on and ``members`` only when above 1: a plain
        model's checkpoint and exports describe it as before, so runtimes from before the options read them."""
        d = super().to_dict()
        if not self.antialias:
            del d["antialias"]
        if self.members == 1:
            del d["members"]
        return d


@dataclass(frozen=True)
class TrainConfig(_Record):
    """Everything `echo-train` was asked to do, saved next to the run for reproducibility."""

    data: str = ""
    model: str = "unet"
    width: int = 64
    epochs: int = 20
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.0
    dice_loss: bool = False
    # matae-unet's reconstruction MSE: off by default (on real echo it cost the atypical unseen patient 3-11
    # Dice points, README "On real echo"); --unlabelled-frames trains the autoencoder and needs it > 0
    recon_weight: float = 0.0
    recon_until: float = 0.5  # fraction of training over which the reconstruction weight decays to 0
    unlabelled_frames: bool = False
    unlabelled_per_step: int = 8
    augment: bool = True
    augment_strength: str = "light"  # light | heavy | heavy-valve (echoseg.data.augment.STRENGTHS)
    device: str = "auto"
    seed: int = 0
    out: str = "runs/unet"
    granularities: tuple[float, ...] = ()  # matae-unet; () = what the width can hold (recipe.granularities_for)
    max_train_frames: int = 0
    train_every: int = 1  # train on every k-th frame of each video (screening runs); 1 = all
    warmup_epochs: int = 1
    ema_decay: float = 0.995  # 0 = no EMA weights
    distill: float = 0.5  # matae-unet: share of a smaller granularity's loss taken from the full one's soft masks
    full_lr: float = 0.0  # matae-unet: peak rate of the weights only the full network uses; 0 = lr
    antialias: bool = False  # the network down-samples with max-blur pooling (ModelConfig.antialias)
    shift_consistency: float = 0.0  # weight of the loss on masks that move other than with the frame; 0 = off
    bn_recal_frames: int = 256
    select: str = "last"  # last | smooth | best (echoseg.train.select)
    workers: int = -1  # DataLoader workers; -1 = echoseg.train.batches.default_workers
    init: str = ""  # start from these weights: "pretrained", a run folder or a checkpoint (echoseg.train.init)
    init_sha256: str = ""  # of the file init read (the bundle's weights.npz, a checkpoint)

    def __post_init__(self) -> None:
        object.__setattr__(self, "granularities", tuple(float(g) for g in self.granularities))
        for name in ("epochs", "batch_size", "train_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"TrainConfig: {name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ConfigError(f"TrainConfig: lr must be positive, got {self.lr}")
        if not 0 <= self.ema_decay < 1:
            raise ConfigError(f"TrainConfig: ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.full_lr < 0:
            raise ConfigError(f"TrainConfig: full_lr must be >= 0 (0: the same as lr), got {self.full_lr}")
        if self.full_lr and self.model != "matae-unet":
            raise ConfigError(f"--full-lr {self.full_lr:g}: only a matae-unet has weights that only its full "
                              "network uses; use --lr for a unet")
        if self.shift_consistency < 0:
            raise ConfigError(f"TrainConfig: shift_consistency must be >= 0 (0: off), got {self.shift_consistency}")
        if not 0 <= self.distill <= 1:
            raise ConfigError(f"TrainConfig: distill must be in [0, 1], got {self.distill}")
        if self.recon_weight < 0:
            raise ConfigError(f"TrainConfig: recon_weight must be >= 0, got {self.recon_weight}")
        if self.unlabelled_frames and self.recon_weight <= 0:
            raise ConfigError("unlabelled frames train matae-unet's autoencoder, which is off at reconstruction "
                              "weight 0; give a weight (--recon-weight 0.1) or leave out --unlabelled-frames")
        from echoseg.data.augment import STRENGTHS  # the presets' one list (no torch at import)

        if self.augment_strength not in STRENGTHS:
            raise ConfigError(f"TrainConfig: augment_strength must be one of {', '.join(STRENGTHS)}, "
                              f"got {self.augment_strength!r}")
        if self.select not in ("last", "smooth", "best"):
            raise ConfigError(f"TrainConfig: select must be last, smooth or best, got {self.select!r}")


@dataclass(frozen=True)
class ArtifactMeta:
    """The self-description every exported artifact carries (ONNX metadata, engine sidecar)."""

    model: ModelConfig
    input_spec: InputSpec
    granularity: float = 1.0
    threshold: float = 0.5
    output: str = "logits"
    source_sha256: str = ""
    metrics: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.to_dict(),
            "input_spec": self.input_spec.to_dict(),
            "granularity": self.granularity,
            "threshold": self.threshold,
            "output": self.output,
            "source_sha256": self.source_sha256,
            "metrics": dict(self.metrics),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ArtifactMeta":
        try:
            return cls(
                model=ModelConfig.from_dict(data["model"]),
                input_spec=InputSpec.from_dict(data["input_spec"]),
                granularity=float(data.get("granularity", 1.0)),
                threshold=float(data.get("threshold", 0.5)),
                output=str(data.get("output", "logits")),
                source_sha256=str(data.get("source_sha256", "")),
                metrics=dict(data.get("metrics", {})),
            )
        except KeyError as exc:
            raise ConfigError(f"artifact description lacks key {exc}; expected 'model' and 'input_spec'") from exc

    @classmethod
    def from_json(cls, text: str) -> "ArtifactMeta":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"artifact description is not JSON ({exc})") from exc
        return cls.from_dict(data)


@dataclass(frozen=True)
class EngineSidecar:
    """``<engine>.json`` beside a TensorRT engine: what it was built with and for.

    An engine only runs on the GPU model (compute capability) and TensorRT version that built
    it; :meth:`compat_problem` turns a mismatch into an explanation with the rebuild command.
    """

    meta: ArtifactMeta
    tensorrt_version: str
    cuda_version: str
    gpu_name: str
    compute_capability: str  # "7.5" for a T4
    onnx_sha256: str
    onnx_file: str
    precision: str  # fp16 | int8 | fp32
    profile: tuple[int, int, int]  # min, opt, max batch
    build_seconds: float
    input_name: str = "frames"
    output_name: str = "logits"
    strongly_typed: bool = False

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["meta"] = self.meta.to_dict()
        d["profile"] = list(self.profile)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "EngineSidecar":
        d = dict(data)
        try:
            d["meta"] = ArtifactMeta.from_dict(d["meta"])
            d["profile"] = tuple(int(b) for b in d["profile"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"engine sidecar lacks or mangles {exc}") from exc
        return _from_mapping(cls, d, "EngineSidecar")

    def compat_problem(self, tensorrt_version: str, compute_capability: str, gpu_name: str = "",
                       engine_path: str = "model.fp16.engine") -> str | None:
        """None if this engine can run here; otherwise why not (one line) and how to rebuild it.

        TensorRT loads an engine only with the exact release that built it (x.y.z: NVIDIA, "Version
        Compatibility": engines are compatible only with the version used to build them) and only on
        the GPU architecture it was built for, so both must match exactly.
        """
        flags = "--int8 --int8-form tensorrt" if self.precision == "int8" else "--fp16"
        rebuild = (f"rebuild it here with: echo-export build "
                   f"{self.meta.source_sha256 and '<checkpoint>' or '<run>'} {flags} --engine")
        if tensorrt_release(tensorrt_version) != tensorrt_release(self.tensorrt_version):
            return (f"{engine_path} was built with TensorRT {self.tensorrt_version} but this machine has "
                    f"{tensorrt_version}; an engine loads only with the exact TensorRT release (x.y.z) "
                    f"that built it; {rebuild}")
        if compute_capability != self.compute_capability:
            return (f"{engine_path} was built for {self.gpu_name} (compute capability {self.compute_capability}) "
                    f"but this GPU is {gpu_name or 'another model'} ({compute_capability}); {rebuild}")
        return None


def tensorrt_release(version: str) -> tuple[int, ...]:
    """'10.13.3.9' -> (10, 13, 3): the release an engine is tied to (a missing part counts as 0)."""
    parts = []
    for p in str(version).strip().split(".")[:3]:
        digits = "".join(c for c in p if c.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts + [0] * (3 - len(parts)))
