"""The training loop: Adam, BCE-with-logits, validation every epoch, best/last checkpoints.

A matae-unet sums its loss over every granularity and adds the weighted reconstruction MSE
(on the labelled batch, and on unlabelled frames with ``unlabelled_frames``).
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

from echoseg.atomic import atomic_path, write_json
from echoseg.config import InputSpec, TrainConfig
from echoseg.data.dataset import FrameSet, load_split, load_unlabelled

from .checkpoint import load_checkpoint, save_checkpoint
from .metrics import summarize

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


def train(cfg: TrainConfig, resume: bool = False, callbacks: Callbacks | None = None) -> TrainResult:
    """Train ``cfg.model`` on ``cfg.data``; writes best.pt, last.pt, log.csv and curves.png to cfg.out."""
    import torch

    from echoseg.data.augment import augment_batch
    from echoseg.models import build_model, default_config

    from .losses import reconstruction_loss, segmentation_loss
    from .plots import plot_curves

    cb = callbacks or Callbacks()
    out = Path(cfg.out)
    device = pick_device(cfg.device)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)

    train_set = load_split(cfg.data, "train")
    val_set = load_split(cfg.data, "val")
    if len(train_set) == 0:
        raise TrainError(f"{cfg.data}: no usable training frames ({train_set.skipped.summary()})")
    if cfg.max_train_frames and len(train_set) > cfg.max_train_frames:
        keep = np.sort(rng.choice(len(train_set), cfg.max_train_frames, replace=False))
        train_set = FrameSet(train_set.images[keep], train_set.masks[keep],
                             [train_set.names[i] for i in keep], [train_set.phases[i] for i in keep])
    if len(val_set) == 0:
        log.warning("no validation frames; validating on the training frames")
        val_set = train_set
    log.info("data: %d train / %d val frames (%s)", len(train_set), len(val_set), train_set.skipped.summary())

    mcfg = default_config(cfg.model, cfg.width)
    if cfg.model == "matae-unet":
        mcfg = type(mcfg)(name=mcfg.name, width=mcfg.width, granularities=cfg.granularities,
                          recon_weight=cfg.recon_weight)
    spec = compute_input_spec(train_set.images)
    model = build_model(mcfg)
    start_epoch, best, rows = 0, {"val_dice": -1.0}, []
    opt_state = None
    if resume:
        if not (out / "last.pt").is_file():
            raise TrainError(f"--resume: {out / 'last.pt'} does not exist; train without --resume first")
        ck = load_checkpoint(out / "last.pt")
        if ck.model.name != mcfg.name or ck.model.width != mcfg.width:
            raise TrainError(f"--resume: {out / 'last.pt'} is {ck.model.name} width {ck.model.width}, "
                             f"not {mcfg.name} width {mcfg.width}")
        model.load_state_dict(ck.state_dict)
        spec, start_epoch, opt_state = ck.input_spec, ck.epoch, ck.optimizer
        best = {"val_dice": float(ck.metrics.get("best_val_dice", -1.0))}
        rows = _read_log(out / "log.csv")
    model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if opt_state:
        opt.load_state_dict(opt_state)
    use_amp = device.startswith("cuda")
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    grans = model.granularities
    recon_w = cfg.recon_weight if cfg.model == "matae-unet" else 0.0
    unlabelled = None
    if cfg.unlabelled_frames and recon_w > 0:
        unlabelled = load_unlabelled(cfg.data, "train")
        log.info("unlabelled frames for the autoencoder: %d", len(unlabelled))

    images = torch.from_numpy(train_set.images).permute(0, 3, 1, 2)  # uint8, stays on CPU
    masks = torch.from_numpy(train_set.masks.astype(np.uint8))[:, None]
    steps = math.ceil(len(train_set) / cfg.batch_size)
    if cb.on_start:
        cb.on_start(cfg.epochs - start_epoch, steps)
    out.mkdir(parents=True, exist_ok=True)

    for epoch in range(start_epoch + 1, cfg.epochs + 1):
        model.train()
        t0, losses = time.perf_counter(), []
        for step, idx in enumerate(_batches(len(train_set), cfg.batch_size, rng), start=1):
            x = images[idx].float().to(device)
            y = masks[idx].float().to(device)
            if cfg.augment:
                x, y = augment_batch(x, y, gen)
            x = normalise(x, spec)
            u = None
            if unlabelled is not None and len(unlabelled):
                pick = rng.integers(0, len(unlabelled), cfg.unlabelled_per_step)
                u = torch.from_numpy(unlabelled[pick]).permute(0, 3, 1, 2).float().to(device)
                if cfg.augment:
                    u, _ = augment_batch(u, torch.zeros_like(u[:, :1]), gen)
                u = normalise(u, spec)
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype=torch.float16, enabled=use_amp):
                loss = 0.0
                for g in grans:
                    if recon_w > 0:
                        logits, recon = model(x, g, return_recon=True)
                        loss = loss + recon_w * reconstruction_loss(recon.float(), x)
                    else:
                        logits = model(x, g)
                    loss = loss + segmentation_loss(logits.float(), y, cfg.dice_loss)
                    if u is not None:
                        loss = loss + recon_w * reconstruction_loss(model.reconstruct(u, g).float(), u)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            losses.append(float(loss.detach()))
            if cb.on_step:
                cb.on_step(epoch, step, losses[-1])
        row = {"epoch": epoch, "train_loss": float(np.mean(losses))}
        row.update(validate(model, val_set, spec, device, grans))
        row["seconds"] = time.perf_counter() - t0
        row["lr"] = opt.param_groups[0]["lr"]
        rows.append(row)
        improved = row["val_dice"] > best["val_dice"]
        if improved:
            best = {"val_dice": row["val_dice"], "val_iou": row["val_iou"],
                    "val_pixel_accuracy": row["val_pixel_accuracy"], "epoch": epoch}
        metrics = {**{k: v for k, v in row.items() if isinstance(v, float)},
                   "best_val_dice": best["val_dice"], "epoch": epoch}
        cpu_model = model
        if improved:
            save_checkpoint(out / "best.pt", cpu_model, mcfg, spec, metrics=metrics, train_config=cfg, epoch=epoch)
        save_checkpoint(out / "last.pt", cpu_model, mcfg, spec, metrics=metrics, train_config=cfg,
                        epoch=epoch, optimizer_state=opt.state_dict())
        _write_log(out / "log.csv", rows)
        plot_curves(rows, out / "curves.png", title=f"{mcfg.name} w{mcfg.width}")
        if cb.on_epoch:
            cb.on_epoch(row)
    write_json(out / "train_config.json", cfg.to_dict())
    return TrainResult(out=out, best=best, rows=rows)


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
