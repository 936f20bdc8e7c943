"""The training loop: the recipe of echoseg.train.recipe, validation every epoch, best/last checkpoints.

A matae-unet sums its loss over every granularity (smaller ones distilled from the full one)
and adds the decaying reconstruction MSE (on the labelled batch, and on unlabelled frames with
``unlabelled_frames``). Validated, selected and saved are the EMA weights.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from echoseg.config import InputSpec, ModelConfig, TrainConfig
from echoseg.data.dataset import FrameSet, load_split, load_unlabelled
from echoseg.data.folds import every_kth, subset
from echoseg.errors import EchosegError
from echoseg.models.checkpoint import load_checkpoint

from .recipe import EMA, FullOnlyRate, granularities_for, lr_at, recon_weight_at
from .records import EpochEnd, read_log

log = logging.getLogger(__name__)


class TrainError(EchosegError, ValueError):
    """Training cannot start as asked (no data, nothing to resume)."""


@dataclass
class Callbacks:
    """Hooks a CLI uses to draw progress; every one optional."""

    on_start: Callable[[int, int], None] | None = None  # (epochs, steps per epoch)
    on_step: Callable[[int, int, float], None] | None = None  # (epoch, step, loss)
    on_epoch: Callable[[dict], None] | None = None  # the log row


@dataclass
class TrainResult:
    out: Path
    best: dict[str, float]
    rows: list[dict] = field(default_factory=list)


def compute_input_spec(images: np.ndarray, chunk: int = 256) -> InputSpec:
    """Per-channel mean/std of the training images (0..255 pixels), summed in chunks of frames so
    the memory it takes does not grow with the dataset."""
    c = images.shape[-1]
    total, sq, n = np.zeros(c), np.zeros(c), 0
    for i in range(0, len(images), chunk):
        x = images[i:i + chunk].reshape(-1, c).astype(np.float64)
        total += x.sum(0)
        sq += np.square(x).sum(0)
        n += len(x)
    mean = total / max(n, 1)
    std = np.sqrt(np.maximum(sq / max(n, 1) - mean ** 2, 0.0))
    return InputSpec(height=images.shape[1], width=images.shape[2], channels=c,
                     mean=tuple(mean), std=tuple(np.maximum(std, 1e-3)))


def pick_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TrainError("--device cuda asked for, but torch sees no CUDA GPU; use --device cpu or auto")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise TrainError(f"unknown device {name!r}; use auto, cpu or cuda")
    return name


def _load_data(cfg: TrainConfig, rng: np.random.Generator) -> tuple[FrameSet, FrameSet]:
    train_set = load_split(cfg.data, "train")
    val_set = load_split(cfg.data, "val")
    if len(train_set) == 0:
        raise TrainError(f"{cfg.data}: no usable training frames ({train_set.skipped.summary()})")
    if cfg.max_train_frames and len(train_set) > cfg.max_train_frames:
        keep = np.sort(rng.choice(len(train_set), cfg.max_train_frames, replace=False))
        train_set = subset(train_set, keep)
    return train_set, val_set


def _check_labels(train_set: FrameSet, val_set: FrameSet) -> None:
    if not train_set.masks.any():
        raise TrainError("no training frame has any LV pixel (every mask is empty); check the masks or "
                         "VolumeTracings coordinates against the frame size")
    empty = int((~val_set.masks.any(axis=(1, 2))).sum())
    if empty:
        log.warning("%d of %d validation frames have an empty mask; each scores Dice 1 when predicted empty "
                    "and 0 otherwise", empty, len(val_set))


def model_config(cfg: TrainConfig) -> ModelConfig:
    """The network ``cfg`` trains: a matae-unet gets the granularities its width can hold."""
    from echoseg.models import default_config

    mcfg = replace(default_config(cfg.model, cfg.width), antialias=cfg.antialias)
    if cfg.model == "matae-unet":
        gs = cfg.granularities or granularities_for(cfg.width)
        mcfg = replace(mcfg, granularities=gs, recon_weight=cfg.recon_weight)
    return mcfg


def train(cfg: TrainConfig, resume: bool = False, callbacks: Callbacks | None = None,
          data: tuple[FrameSet, FrameSet] | None = None) -> TrainResult:
    """Train ``cfg.model`` on ``cfg.data`` (or on the given (train, val) frames); writes best.pt,
    last.pt, log.csv and curves.png to cfg.out.

    The recipe (echoseg.train.recipe): Adam with warm-up and cosine decay, EMA weights with
    batch norm recalibrated before every validation, a matae-unet's loss summed over its
    granularities with in-place distillation and a decaying reconstruction weight; best.pt by
    the selection policy of echoseg.train.select. Batches come from a DataLoader
    (echoseg.train.batches); under torchrun the job is data-parallel (echoseg.train.dist) and
    rank 0 alone validates and writes.
    """
    import torch

    from echoseg.models import build_model
    from echoseg.models.unet import LEVELS

    from . import dist
    from .batches import default_workers, make_loader
    from .losses import reconstruction_loss, segmentation_loss
    from .step import StepLoss

    cb = callbacks or Callbacks()
    out = Path(cfg.out)
    world = dist.world_from_env()
    device = dist.start(world, pick_device(cfg.device))
    torch.manual_seed(cfg.seed)

    train_set, val_set = data if data is not None else _load_data(cfg, np.random.default_rng(cfg.seed))
    train_set = every_kth(train_set, cfg.train_every)
    if len(val_set) == 0:
        log.warning("no validation frames; validating on the training frames")
        val_set = train_set
    _check_labels(train_set, val_set)
    log.info("data: %d train / %d val frames (%s)", len(train_set), len(val_set), train_set.skipped.summary())

    mcfg = model_config(cfg)
    spec = compute_input_spec(train_set.images)
    if cfg.init:  # --init: a trained model's weights and input spec (on --resume, last.pt's weights)
        from .init import initial_model

        mcfg, spec, model = initial_model(cfg, mcfg, load=not resume)
    else:
        model = build_model(mcfg)
    grans = model.granularities
    start_epoch, rows, state = 0, [], {}
    if resume:
        state, spec, start_epoch, rows = _resume_from(out, mcfg, model)
    model.to(device)
    ema = EMA(model, cfg.ema_decay) if cfg.ema_decay > 0 and world.is_main else None
    cuda = device.startswith("cuda")
    if cuda:
        torch.backends.cudnn.benchmark = True  # fixed input sizes: pick the fastest convolutions once
    # on a GPU the fused Adam is one kernel per step instead of a dozen (small models are launch-bound)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=cuda or None)
    amp_dtype = None
    if device.startswith("cuda"):
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    if state:
        opt.load_state_dict(state["optimizer"])
        if ema is not None and "ema" in state:
            ema.load_state_dict(state["ema"])
        if scaler.is_enabled() and "scaler" in state:
            scaler.load_state_dict(state["scaler"])
    recon_w = cfg.recon_weight if cfg.model == "matae-unet" else 0.0
    unlabelled = None
    if cfg.unlabelled_frames and recon_w > 0:
        unlabelled = load_unlabelled(cfg.data, "train")
        log.info("unlabelled frames for the autoencoder: %d", len(unlabelled))
    batches = -(-len(train_set) // max(1, cfg.batch_size * world.size))  # this rank's batches per epoch
    workers = default_workers(device, batches) if cfg.workers < 0 else cfg.workers
    loader, plan = make_loader(train_set.images, train_set.masks.astype(np.uint8), batch_size=cfg.batch_size,
                               seed=cfg.seed, augment=cfg.augment, workers=workers,
                               augment_strength=cfg.augment_strength,
                               pin_memory=device.startswith("cuda"), rank=world.rank, world=world.size,
                               unlabelled=unlabelled, unlabelled_per_step=cfg.unlabelled_per_step, device=device)
    steps = len(plan)
    total_steps, warmup = cfg.epochs * steps, cfg.warmup_epochs * steps
    step_no = start_epoch * steps
    full_rate = FullOnlyRate(model, grans, cfg.full_lr / cfg.lr if cfg.full_lr else 1.0, device)
    step_loss = dist.wrap(StepLoss(model, grans, lambda lg, t: segmentation_loss(lg, t, cfg.dice_loss),
                                   cfg.distill, reconstruction_loss, cfg.shift_consistency), world, device)
    period = 2 ** LEVELS  # max pooling's grid at the bottleneck: a shift of 1..period-1 changes its phase
    shift_rng = torch.Generator().manual_seed(cfg.seed * 7919 + start_epoch)
    mean = torch.tensor(spec.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, device=device).view(1, -1, 1, 1)
    ends = EpochEnd(cfg, out, mcfg, spec, grans, train_set, val_set, device) if world.is_main else None
    if cb.on_start and world.is_main:
        cb.on_start(cfg.epochs - start_epoch, steps)
    if world.is_main:
        out.mkdir(parents=True, exist_ok=True)

    try:
        for epoch in range(start_epoch + 1, cfg.epochs + 1):
            model.train()
            plan.epoch = epoch
            t0, losses = time.perf_counter(), []
            for step, batch in enumerate(loader, start=1):
                lr = lr_at(step_no, total_steps, cfg.lr, warmup)
                for group in opt.param_groups:
                    group["lr"] = lr
                rw = recon_weight_at(step_no, total_steps, recon_w, cfg.recon_until)
                x = (batch["x"].to(device, non_blocking=True) - mean) / std
                y = batch["y"].to(device, non_blocking=True)
                u = batch["u"]
                u = (u.to(device, non_blocking=True) - mean) / std if u is not None and rw > 0 else None
                shift = None
                if cfg.shift_consistency > 0:  # one roll a step, the same on every rank
                    shift = tuple(int(v) for v in torch.randint(1, period, (2,), generator=shift_rng))
                opt.zero_grad(set_to_none=True)
                with torch.autocast("cuda", dtype=amp_dtype or torch.float16, enabled=amp_dtype is not None):
                    loss = step_loss(x, y, rw, u, shift)
                scaler.scale(loss).backward()
                full_rate.before()
                scaler.step(opt)
                scaler.update()
                full_rate.after()
                if ema is not None:
                    ema.update(model)
                step_no += 1
                losses.append(loss.detach())  # no host sync per step: read once per epoch
                if cb.on_step and world.is_main:
                    cb.on_step(epoch, step, float(losses[-1]))
            if ends is not None:
                losses = [float(v) for v in torch.stack(losses).float().cpu()] if losses else []
                row = ends(epoch, model, ema, opt, scaler, losses, lr, rw, t0, rows)
                if cb.on_epoch:
                    cb.on_epoch(row)
            dist.barrier(world)
        best = ends.finish(rows) if ends is not None else {}
    finally:
        dist.stop(world)
    return TrainResult(out=out, best=best, rows=rows)


def _resume_from(out: Path, mcfg: ModelConfig, model) -> tuple[dict, InputSpec, int, list[dict]]:
    if not (out / "last.pt").is_file():
        raise TrainError(f"--resume: {out / 'last.pt'} does not exist; train without --resume first")
    ck = load_checkpoint(out / "last.pt")
    if ck.model != mcfg:
        def said(m: ModelConfig) -> str:
            return (f"{m.name} width {m.width} granularities {list(m.granularities)}"
                    f"{' with max-blur pooling (--antialias)' if m.antialias else ''}")

        raise TrainError(f"--resume: {out / 'last.pt'} is {said(ck.model)}, not {said(mcfg)}")
    state = dict(ck.optimizer or {})
    if state and "optimizer" not in state:  # a last.pt from before the recipe: only Adam's state
        state = {"optimizer": state}
    model.load_state_dict(state.get("raw_state_dict", ck.state_dict))
    return state, ck.input_spec, ck.epoch, read_log(out / "log.csv")[:ck.epoch]
