"""The training loop: the recipe of echoseg.train.recipe, validation every epoch, best/last checkpoints.

A matae-unet sums its loss over every granularity (smaller ones distilled from the full one)
and adds the decaying reconstruction MSE (on the labelled batch, and on unlabelled frames with
``unlabelled_frames``). Validated, selected and saved are the EMA weights.
"""

from __future__ import annotations

import csv
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from echoseg.atomic import atomic_path, copy_file, write_json
from echoseg.config import InputSpec, ModelConfig, TrainConfig
from echoseg.data.dataset import FrameSet, load_split, load_unlabelled
from echoseg.data.folds import subset

from .checkpoint import load_checkpoint, save_checkpoint
from .metrics import summarize
from .recipe import EMA, granularities_for, lr_at, matryoshka_loss, recalibrate_bn, recon_weight_at
from .select import Selector, collapsed
from .select import score as select_score

log = logging.getLogger(__name__)


class TrainError(ValueError):
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


def compute_input_spec(images: np.ndarray) -> InputSpec:
    """Per-channel mean/std of the training images (0..255 pixels)."""
    x = images.reshape(-1, images.shape[-1]).astype(np.float64)
    mean, std = x.mean(0), x.std(0)
    return InputSpec(height=images.shape[1], width=images.shape[2], channels=images.shape[3],
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


def normalise(x, spec: InputSpec):
    """float 0..255 N,C,H,W torch tensor -> (x - mean) / std."""
    import torch

    mean = torch.tensor(spec.mean, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, device=x.device).view(1, -1, 1, 1)
    return (x - mean) / std


def predict_logits(model, images: np.ndarray, spec: InputSpec, g: float = 1.0, device: str = "cpu",
                   batch: int = 32) -> np.ndarray:
    """Logits N,H,W for uint8 frames N,H,W,3 at granularity g (eval mode, no grad)."""
    import torch

    model.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(images), batch):
            x = torch.from_numpy(images[i:i + batch]).to(device).permute(0, 3, 1, 2).float()
            out.append(model(normalise(x, spec), g)[:, 0].float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0,) + images.shape[1:3], np.float32)


def validate(model, val: FrameSet, spec: InputSpec, device: str, granularities) -> dict[str, float]:
    import torch
    import torch.nn.functional as F

    row: dict[str, float] = {}
    for g in sorted(granularities, reverse=True):
        logits = predict_logits(model, val.images, spec, g, device)
        scores = summarize(logits > 0, val.masks)
        if g == 1.0:
            row["val_loss"] = float(F.binary_cross_entropy_with_logits(
                torch.from_numpy(logits), torch.from_numpy(val.masks.astype(np.float32))))
            row.update({f"val_{k}": scores[k] for k in ("dice", "iou", "pixel_accuracy")})
        if len(granularities) > 1:
            row[f"val_dice_g{g:g}"] = scores["dice"]
    return row


def _batches(n: int, size: int, rng: np.random.Generator):
    order = rng.permutation(n)
    for i in range(0, n, size):
        yield order[i:i + size]


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

    mcfg = default_config(cfg.model, cfg.width)
    if cfg.model == "matae-unet":
        gs = cfg.granularities or granularities_for(cfg.width)
        mcfg = ModelConfig(name=mcfg.name, width=mcfg.width, granularities=gs, recon_weight=cfg.recon_weight)
    return mcfg


def train(cfg: TrainConfig, resume: bool = False, callbacks: Callbacks | None = None,
          data: tuple[FrameSet, FrameSet] | None = None) -> TrainResult:
    """Train ``cfg.model`` on ``cfg.data`` (or on the given (train, val) frames); writes best.pt,
    last.pt, log.csv and curves.png to cfg.out.

    The recipe (echoseg.train.recipe): Adam with warm-up and cosine decay, EMA weights with
    batch norm recalibrated before every validation, a matae-unet's loss summed over its
    granularities with in-place distillation and a decaying reconstruction weight; best.pt by
    the selection policy of echoseg.train.select.
    """
    import torch

    from echoseg.data.augment import augment_batch
    from echoseg.models import build_model

    from .losses import reconstruction_loss, segmentation_loss
    from .plots import plot_curves

    cb = callbacks or Callbacks()
    out = Path(cfg.out)
    device = pick_device(cfg.device)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)

    train_set, val_set = data if data is not None else _load_data(cfg, rng)
    if len(val_set) == 0:
        log.warning("no validation frames; validating on the training frames")
        val_set = train_set
    _check_labels(train_set, val_set)
    log.info("data: %d train / %d val frames (%s)", len(train_set), len(val_set), train_set.skipped.summary())

    mcfg = model_config(cfg)
    spec = compute_input_spec(train_set.images)
    model = build_model(mcfg)
    grans = model.granularities
    selector = Selector.for_run(cfg.select, cfg.epochs, grans)
    start_epoch, rows, state = 0, [], None
    if resume:
        if not (out / "last.pt").is_file():
            raise TrainError(f"--resume: {out / 'last.pt'} does not exist; train without --resume first")
        ck = load_checkpoint(out / "last.pt")
        if ck.model != mcfg:
            raise TrainError(f"--resume: {out / 'last.pt'} is {ck.model.name} width {ck.model.width} "
                             f"granularities {list(ck.model.granularities)}, not {mcfg.name} width {mcfg.width} "
                             f"granularities {list(mcfg.granularities)}")
        state = ck.optimizer or {}
        model.load_state_dict(state.get("raw_state_dict", ck.state_dict))
        spec, start_epoch = ck.input_spec, ck.epoch
        rows = _read_log(out / "log.csv")[:start_epoch]
    model.to(device)
    ema = EMA(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = math.ceil(len(train_set) / cfg.batch_size)
    total_steps, warmup = cfg.epochs * steps, cfg.warmup_epochs * steps
    step_no = start_epoch * steps
    if state:
        if "optimizer" in state:
            opt.load_state_dict(state["optimizer"])
        if ema is not None and "ema" in state:
            ema.load_state_dict(state["ema"])
        if "np_rng" in state:
            rng.bit_generator.state = state["np_rng"]
            gen.set_state(state["torch_gen"])
            torch.set_rng_state(state["torch_rng"])
    amp_dtype = None
    if device.startswith("cuda"):
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    if state and "scaler" in state and scaler.is_enabled():
        scaler.load_state_dict(state["scaler"])
    recon_w = cfg.recon_weight if cfg.model == "matae-unet" else 0.0
    unlabelled = None
    if cfg.unlabelled_frames and recon_w > 0:
        unlabelled = load_unlabelled(cfg.data, "train")
        log.info("unlabelled frames for the autoencoder: %d", len(unlabelled))
    recal = train_set.images[np.sort(np.random.default_rng(cfg.seed + 1).permutation(len(train_set))
                                     [:cfg.bn_recal_frames])]
    seg = (lambda lg, t: segmentation_loss(lg, t, cfg.dice_loss))

    images = torch.from_numpy(train_set.images).permute(0, 3, 1, 2)  # uint8, stays on CPU
    masks = torch.from_numpy(train_set.masks.astype(np.uint8))[:, None]
    if cb.on_start:
        cb.on_start(cfg.epochs - start_epoch, steps)
    out.mkdir(parents=True, exist_ok=True)

    for epoch in range(start_epoch + 1, cfg.epochs + 1):
        model.train()
        t0, losses = time.perf_counter(), []
        for step, idx in enumerate(_batches(len(train_set), cfg.batch_size, rng), start=1):
            lr = lr_at(step_no, total_steps, cfg.lr, warmup)
            for group in opt.param_groups:
                group["lr"] = lr
            rw = recon_weight_at(step_no, total_steps, recon_w, cfg.recon_until)
            x = images[idx].float().to(device)
            y = masks[idx].float().to(device)
            if cfg.augment:
                x, y = augment_batch(x, y, gen)
            x = normalise(x, spec)
            u = None
            if unlabelled is not None and len(unlabelled) and rw > 0:
                pick = rng.integers(0, len(unlabelled), cfg.unlabelled_per_step)
                u = torch.from_numpy(unlabelled[pick]).permute(0, 3, 1, 2).float().to(device)
                if cfg.augment:
                    u, _ = augment_batch(u, torch.zeros_like(u[:, :1]), gen)
                u = normalise(u, spec)
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype=amp_dtype or torch.float16, enabled=amp_dtype is not None):
                loss = matryoshka_loss(model, x, y, grans, seg, distill=cfg.distill, recon_weight=rw,
                                       recon_loss=reconstruction_loss, unlabelled=u)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            if ema is not None:
                ema.update(model)
            step_no += 1
            losses.append(float(loss.detach()))
            if cb.on_step:
                cb.on_step(epoch, step, losses[-1])
        shipped = ema.model if ema is not None else model
        recalibrate_bn(shipped, recal, spec, grans, device)
        row = {"epoch": epoch, "train_loss": float(np.mean(losses))}
        row.update(validate(shipped, val_set, spec, device, grans))
        row["seconds"] = time.perf_counter() - t0
        row["lr"] = lr
        row["recon_weight"] = rw
        row["select_score"] = select_score(row, grans)
        rows.append(row)
        metrics = {**{k: v for k, v in row.items() if isinstance(v, float)}, "epoch": epoch}
        chosen = selector.choose(rows)
        if chosen is not None:
            metrics.update(best_epoch=int(rows[chosen]["epoch"]), best_val_dice=float(rows[chosen]["val_dice"]))
        if chosen == len(rows) - 1:
            save_checkpoint(out / "best.pt", shipped, mcfg, spec, metrics=metrics, train_config=cfg, epoch=epoch)
        save_checkpoint(out / "last.pt", shipped, mcfg, spec, metrics=metrics, train_config=cfg, epoch=epoch,
                        optimizer_state=_train_state(model, opt, ema, scaler, rng, gen))
        _write_log(out / "log.csv", rows)
        plot_curves(rows, out / "curves.png", title=f"{mcfg.name} w{mcfg.width}",
                    selected=int(rows[chosen]["epoch"]) if chosen is not None else None)
        if cb.on_epoch:
            cb.on_epoch(row)
    chosen = selector.choose(rows)
    if chosen is None or not (out / "best.pt").is_file():
        bad = collapsed(rows[-1], grans) if rows else []
        log.warning("no epoch met the selection rule (%s%s); best.pt is the last epoch",
                    cfg.select, f"; collapsed granularities {bad}" if bad else "")
        copy_file(out / "last.pt", out / "best.pt")
        chosen = len(rows) - 1
    best = {"val_dice": float(rows[chosen]["val_dice"]), "val_iou": float(rows[chosen]["val_iou"]),
            "val_pixel_accuracy": float(rows[chosen]["val_pixel_accuracy"]), "epoch": int(rows[chosen]["epoch"])}
    write_json(out / "train_config.json", cfg.to_dict())
    return TrainResult(out=out, best=best, rows=rows)


def _train_state(model, opt, ema, scaler, rng: np.random.Generator, gen) -> dict:
    """What --resume needs beyond the shipped weights: raw weights, optimizer, EMA, scaler, RNGs."""
    import torch

    state = {"raw_state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
             "optimizer": opt.state_dict(), "np_rng": rng.bit_generator.state,
             "torch_gen": gen.get_state(), "torch_rng": torch.get_rng_state()}
    if ema is not None:
        state["ema"] = ema.state_dict()
    if scaler.is_enabled():
        state["scaler"] = scaler.state_dict()
    return state


def _write_log(path: Path, rows: list[dict]) -> None:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)


def _read_log(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return [{k: (float(v) if k != "epoch" else int(float(v))) for k, v in r.items() if v != ""}
                for r in csv.DictReader(fh)]
