"""``echo-train --init``: start a training from trained weights instead of random ones.

``pretrained`` is the bundled synthetic-only model (its weights.npz, read without pickle); any
other value is a run folder or checkpoint (read with ``weights_only=True``). The run takes the
source's input spec too (its weights expect that normalisation) and, when no granularities
were asked for, the source's granularities. A unet of the same width may start from a
matae-unet's weights: it takes the full-width network (granularity 1), which is a unet with the
same layers, and leaves the reconstruction head. A model that does not fit the weights (another architecture, width or
granularities) is refused in one line that says what differs.

``auto``, echo-train's default, is the bundled model where it fits the run (unet or matae-unet at
the bundle's width, granularities not asked otherwise) and random weights elsewhere; ``none`` is
random weights. A run that starts from the bundle is fine-tuned unless asked otherwise: heavy
augmentation, as the bundle was trained, for unet a gentler learning rate, for matae-unet
valve-plane dropout on top, no distillation and the weights only its full network uses at 3e-4
(``resolve`` decides them all). On leave-one-patient-out over nine real patients that was the best
start, on the worst patient too (docs/real-echo.md).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from echoseg.config import InputSpec, ModelConfig, TrainConfig
from echoseg.errors import EchosegError

log = logging.getLogger(__name__)


class InitError(EchosegError, ValueError):
    """--init names weights this run cannot start from."""


@dataclass
class InitWeights:
    source: str  # what the user named: "pretrained", a run folder or a checkpoint
    path: str  # the file read
    model: ModelConfig
    input_spec: InputSpec
    state: dict[str, Any]  # name -> numpy array or torch tensor


def load_init(source: str) -> InitWeights:
    """The weights, model description and input spec that ``--init source`` names."""
    from echoseg import pretrained

    if pretrained.is_name(source):
        from echoseg.pretrained.weights import FILE, WeightsError, read_weights

        path = pretrained.FOLDER / FILE
        try:
            state, meta = read_weights(path)
            return InitWeights(source, str(path), ModelConfig.from_dict(meta["model"]),
                               InputSpec.from_dict(meta["input_spec"]), state)
        except WeightsError as exc:
            raise InitError(f"--init pretrained: {exc}") from None
        except (KeyError, TypeError, ValueError) as exc:
            raise InitError(f"--init pretrained: {path} has a bad description ({exc})") from None
    from echoseg.models.checkpoint import CheckpointError, load_checkpoint

    try:
        ckpt = load_checkpoint(source)
    except CheckpointError as exc:
        raise InitError(f"--init {source}: {exc}") from None
    if ckpt.model.members > 1:  # an ensemble (echo-export ensemble): a training starts from one network
        from echoseg.models.ensemble import member_config, member_state

        log.warning("--init %s: an ensemble of %d networks; starting from its first member (%s)", source,
                    ckpt.model.members, (ckpt.ensemble_of[0]["checkpoint"] if ckpt.ensemble_of else "members.0"))
        return InitWeights(source, str(ckpt.path), member_config(ckpt.model), ckpt.input_spec,
                           member_state(ckpt.state_dict, 0))
    return InitWeights(source, str(ckpt.path), ckpt.model, ckpt.input_spec, ckpt.state_dict)


AUTO = "auto"
NONE = ("none", "scratch")
DISTILL = TrainConfig.distill  # --distill for a run that does not start from the bundled model
LR = TrainConfig.lr  # --lr for a run that does not start from the bundled model
FINE_TUNE_LR = 3e-4  # --lr for a unet that starts from it: gentler, so the start's shape knowledge is kept
FULL_LR = 3e-4  # --full-lr for a matae-unet that starts from it: the full network's own weights, gentler
SHIFT_CONSISTENCY = 1.0  # --shift-consistency for a matae-unet that starts from it: masks that move with the frame


@dataclass(frozen=True)
class Resolved:
    init: str  # TrainConfig.init: "" (random weights), "pretrained", a run folder or checkpoint
    said: str = ""  # one line for the user, or nothing
    augment_strength: str = "light"
    distill: float = DISTILL
    lr: float = LR
    full_lr: float = 0.0  # 0: the full network's own weights train at lr like the rest
    shift_consistency: float = 0.0  # 0: off


def resolve(init: str | None, model: str, width: int, granularities: tuple[float, ...] = (),
            earlier: str | None = None, augment: str | None = None, earlier_augment: str | None = None,
            distill: float | None = None, earlier_distill: float | None = None,
            lr: float | None = None, earlier_lr: float | None = None,
            full_lr: float | None = None, earlier_full_lr: float | None = None,
            shift_consistency: float | None = None, earlier_shift_consistency: float | None = None) -> Resolved:
    """What ``--init``, ``--augment-strength``, ``--distill``, ``--lr``, ``--full-lr`` and
    ``--shift-consistency`` (None: not given) mean for this run. ``earlier*`` are what a resumed run
    or sweep was started with: it goes on as it started, whatever the defaults say now. Otherwise a
    run that starts from the bundled model is fine-tuned: heavy augmentation, as the bundle was
    trained; a unet at learning rate 3e-4 instead of 1e-3; a matae-unet at 1e-3 for its shared
    channels (3e-4 for all cost its smaller networks), with valve-plane dropout on top of heavy
    (``heavy-valve``), smaller networks that learn from the labels alone (distillation 0), the
    weights only its full network uses at 3e-4 (``--full-lr``) and a loss on masks that do not move
    with the frame (``--shift-consistency 1``). Each was chosen by leave-one-patient-out on real
    echo, on the worst patient as well as the mean (``--full-lr``: the full network's; it cost the
    half-width network's worst patient, which ``--shift-consistency`` lifted); the figures are in
    docs/real-echo.md.
    Any other run trains with light augmentation, 1e-3 for every weight, without the shift-consistency
    loss and, for a matae-unet, half distillation."""
    from echoseg import pretrained

    if named_source(init) is not None:
        start = Resolved(init)
    elif init is not None and init.lower() in NONE:
        start = Resolved("")
    elif earlier is not None:
        start = Resolved(earlier)
    else:
        start = _auto(model, width, granularities)
    bundle = pretrained.is_name(start.init)
    matae = bundle and model == "matae-unet"
    strength, heavy = _pick(augment, earlier_augment, "heavy-valve" if matae else "heavy" if bundle else "light",
                            bundle)
    share, undistilled = _pick(distill, earlier_distill, 0.0 if matae else DISTILL, matae)
    unet = bundle and model == "unet"  # matae-unet: measured on four folds only, where its smaller networks lost
    rate, gentle = _pick(lr, earlier_lr, FINE_TUNE_LR if unet else LR, unet)
    full, own = _pick(full_lr, earlier_full_lr, FULL_LR if matae else 0.0, matae)
    moves, steady = _pick(shift_consistency, earlier_shift_consistency, SHIFT_CONSISTENCY if matae else 0.0, matae)
    valve, other = (", with valve-plane dropout", "heavy without it, ") if matae else ("", "")
    parts = [(", heavy augmentation, as it was trained" + valve,
              f"heavy augmentation, as the bundled model was trained{valve} (--augment-strength {other}light for "
              "light)", heavy),
             (f", learning rate {_rate(FINE_TUNE_LR)}", f"learning rate {_rate(FINE_TUNE_LR)} (--lr {_rate(LR)}, "
                                                        "the rate from random weights, for more)", gentle),
             (", smaller networks from the labels alone (--distill 0)",
              "smaller networks from the labels alone (--distill 0.5 to distil)", undistilled),
             (f", the full network's own weights at {_rate(FULL_LR)} (--full-lr 0 for --lr)",
              f"the weights only the full network uses at {_rate(FULL_LR)} (--full-lr 0: at --lr like the rest)",
              own),
             (", masks that move with the frame (--shift-consistency 0 for off)",
              "masks that move with the frame, at 1.5x an epoch's time (--shift-consistency 0 for off)", steady)]
    said = start.said
    if said and start.init:  # auto chose the bundle
        said += "".join(auto for auto, _, on in parts if on) + "; --init none for random weights"
    elif any(on for *_, on in parts):
        said = f"--init {start.init}: " + "; ".join(named for _, named, on in parts if on)
    return Resolved(start.init, said, strength, share, rate, full, moves)


def _rate(lr: float) -> str:
    """3e-4, not 0.0003: as people write learning rates."""
    return f"{lr:.0e}".replace("e-0", "e-")


def _pick(asked, earlier, default, bundle_default: bool):
    """(value, whether it is the bundle start's own default, neither asked for nor resumed)."""
    if asked is not None:
        return asked, False
    if earlier is not None:
        return earlier, False
    return default, bundle_default


def named_source(init: str | None) -> str | None:
    """``init`` when it names weights (pretrained, a run, a checkpoint); None for auto and none."""
    if init is None or init == AUTO or init.lower() in NONE:
        return None
    return init


def _auto(model: str, width: int, granularities: tuple[float, ...]) -> Resolved:
    from echoseg import pretrained

    if model not in ("unet", "matae-unet"):
        return Resolved("")
    try:
        src = load_init(pretrained.NAME)
    except InitError as exc:  # a package without weights.npz, or a damaged one: train, and say so
        if width != 16:  # the bundle's width; a run it could not start anyway needs no line
            return Resolved("")
        return Resolved("", f"random weights: the bundled model cannot be started from ({exc}); pass "
                            "--init none to silence this")
    if src.model.width != width:
        return Resolved("")
    gs = tuple(sorted(granularities))
    if model == "matae-unet" and gs and gs != tuple(src.model.granularities):
        return Resolved("", f"random weights: the bundled model holds granularities {_gs(src.model)}, this run "
                            "asks for others; drop --granularity to start from it")
    which = "its full-width network" if model == "unet" else "all its granularities"
    return Resolved(pretrained.NAME, f"starting from the bundled model ({pretrained.FOLDER.name}, synthetic echo "
                                     f"only; {which})")


def source_sha256(init: InitWeights) -> str:
    """sha256 of the file the weights were read from (recorded with the run: a rebuilt bundle is
    another start)."""
    import hashlib

    h = hashlib.sha256()
    with open(init.path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fit_config(cfg: TrainConfig, mcfg: ModelConfig, init: InitWeights) -> ModelConfig:
    """This run's network, given the weights it starts from: the source's granularities when none
    were asked for; an error naming the difference when model, width or granularities differ."""
    src = init.model
    where = f"--init {init.source}"
    if _full_width_of(src, mcfg):
        return mcfg
    if (src.name, src.width) != (mcfg.name, mcfg.width):
        fix = f"--width {src.width}" if (src.name, mcfg.name) == ("matae-unet", "unet") else \
            f"--model {src.name} --width {src.width}"
        raise InitError(f"{where}: its weights are {src.name} width {src.width}, this run builds {mcfg.name} "
                        f"width {mcfg.width}; pass {fix}")
    if src.name == "matae-unet" and tuple(src.granularities) != tuple(mcfg.granularities):
        if cfg.granularities:
            raise InitError(f"{where}: its weights are for granularities {_gs(src)}, this run asks for "
                            f"{_gs(mcfg)}; drop --granularity to take the source's")
        mcfg = replace(mcfg, granularities=tuple(src.granularities))
    return mcfg


def apply_init(model, init: InitWeights) -> None:
    """Load ``init``'s weights into ``model``; every tensor must match in name and shape."""
    import torch

    own = model.state_dict()
    missing = [k for k in own if k not in init.state]
    extra = [k for k in init.state if k not in own]
    shapes = [k for k in own if k in init.state and tuple(own[k].shape) != tuple(np.shape(init.state[k]))]
    if missing or extra or shapes:
        parts = []
        if shapes:
            k = shapes[0]
            parts.append(f"{len(shapes)} of other shape (e.g. {k}: {tuple(np.shape(init.state[k]))} vs "
                         f"{tuple(own[k].shape)})")
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if extra:
            parts.append(f"{len(extra)} this model lacks (e.g. {extra[0]})")
        raise InitError(f"--init {init.source}: its weights do not fit this model: {'; '.join(parts)}")
    loaded = {k: torch.as_tensor(np.asarray(v) if not isinstance(v, torch.Tensor) else v).to(own[k].dtype)
              for k, v in init.state.items()}
    model.load_state_dict(loaded)


def initial_model(cfg: TrainConfig, mcfg: ModelConfig, load: bool = True) -> tuple[ModelConfig, InputSpec, Any]:
    """The network, input spec and model a run with ``cfg.init`` starts from (``load`` False, on
    --resume: the same network and spec, weights left to the resumed checkpoint)."""
    from echoseg.models import build_model

    init = load_init(cfg.init)
    mcfg = fit_config(cfg, mcfg, init)
    model = build_model(mcfg)
    if load:
        if _full_width_of(init.model, mcfg):
            init = full_width(init)
        apply_init(model, init)
        log.info("started from %s (%s), its input spec mean %s std %s", cfg.init, init.path,
                 init.input_spec.mean[0], init.input_spec.std[0])
    return mcfg, init.input_spec, model


def _full_width_of(src: ModelConfig, mcfg: ModelConfig) -> bool:
    """A unet run starting from a matae-unet of its width (whose granularity 1 is that unet)."""
    return (src.name, mcfg.name) == ("matae-unet", "unet") and src.width == mcfg.width


def full_width(init: InitWeights) -> InitWeights:
    """A matae-unet's weights as the unet its full width is: the model's own slicing at
    granularity 1 (that width's batch-norm statistics), the reconstruction head left out."""
    from echoseg.models import build_model

    matae = build_model(init.model)
    apply_init(matae, init)
    whole = matae.sliced(1.0).state_dict()
    state = {k: v for k, v in whole.items() if not k.startswith("recon.")}
    unet = replace(init.model, name="unet", granularities=(1.0,), recon_weight=0.0)
    return InitWeights(init.source, init.path, unet, init.input_spec, state)


def _gs(m: ModelConfig) -> str:
    return ", ".join(f"{g:g}" for g in m.granularities)
