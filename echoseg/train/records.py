"""Rank 0's record of a run after every epoch: recalibrated EMA weights (or a plain copy of the
model: SyncBatchNorm reverted, so rank 0 alone can run it) validated, the selected
epoch saved as best.pt, last.pt with what --resume needs, log.csv and curves.png."""

from __future__ import annotations

import csv
import logging
import time
from pathlib import Path

import numpy as np

from echoseg.atomic import atomic_path, copy_file, write_json
from echoseg.config import InputSpec, ModelConfig, TrainConfig
from echoseg.data.frameset import FrameSet

from echoseg.models.checkpoint import save_checkpoint
from .recipe import recalibrate_bn
from .select import Selector, collapsed
from .select import score as select_score

log = logging.getLogger("echoseg.train.loop")


class EpochEnd:
    """Rank 0's work after every epoch: recalibrate, validate, select, save, log, plot."""

    def __init__(self, cfg: TrainConfig, out: Path, mcfg: ModelConfig, spec: InputSpec, grans, train_set: FrameSet,
                 val_set: FrameSet, device: str) -> None:
        self.cfg, self.out, self.mcfg, self.spec, self.grans = cfg, out, mcfg, spec, grans
        self.val_set, self.device = val_set, device
        self.selector = Selector.for_run(cfg.select, cfg.epochs, grans)
        pick = np.random.default_rng(cfg.seed + 1).permutation(len(train_set))[:cfg.bn_recal_frames]
        self.recal = train_set.images[np.sort(pick)]

    def __call__(self, epoch: int, model, ema, opt, scaler, losses: list[float], lr: float, rw: float,
                 t0: float, rows: list[dict]) -> dict:
        from .predict import validate
        from .plots import plot_curves

        cfg, out = self.cfg, self.out
        # Recalibrating runs the model in train mode; a SyncBatchNorm there is a collective the other
        # ranks never join (rank 0 alone is here), so without EMA rank 0 works on a plain copy.
        shipped = ema.model if ema is not None else plain_copy(model)
        recalibrate_bn(shipped, self.recal, self.spec, self.grans, self.device)
        row = {"epoch": epoch, "train_loss": float(np.mean(losses))}
        row.update(validate(shipped, self.val_set, self.spec, self.device, self.grans))
        row.update(seconds=time.perf_counter() - t0, lr=lr, recon_weight=rw,
                   select_score=select_score(row, self.grans))
        rows.append(row)
        metrics = {**{k: v for k, v in row.items() if isinstance(v, float)}, "epoch": epoch}
        chosen = self.selector.choose(rows)
        if chosen is not None:
            metrics.update(best_epoch=int(rows[chosen]["epoch"]), best_val_dice=float(rows[chosen]["val_dice"]))
        if chosen == len(rows) - 1:
            save_checkpoint(out / "best.pt", shipped, self.mcfg, self.spec, metrics=metrics, train_config=cfg,
                            epoch=epoch)
        save_checkpoint(out / "last.pt", shipped, self.mcfg, self.spec, metrics=metrics, train_config=cfg,
                        epoch=epoch, optimizer_state=_train_state(model, opt, ema, scaler))
        write_log(out / "log.csv", rows)
        plot_curves(rows, out / "curves.png", title=f"{self.mcfg.name} w{self.mcfg.width}",
                    selected=int(rows[chosen]["epoch"]) if chosen is not None else None)
        return row

    def finish(self, rows: list[dict]) -> dict:
        out = self.out
        chosen = self.selector.choose(rows)
        if chosen is None or not (out / "best.pt").is_file():
            bad = collapsed(rows[-1], self.grans) if rows else []
            log.warning("no epoch met the selection rule (%s%s); best.pt is the last epoch",
                        self.cfg.select, f"; collapsed granularities {bad}" if bad else "")
            copy_file(out / "last.pt", out / "best.pt")
            chosen = len(rows) - 1
        write_json(out / "train_config.json", self.cfg.to_dict())
        r = rows[chosen]
        return {"val_dice": float(r["val_dice"]), "val_iou": float(r["val_iou"]),
                "val_pixel_accuracy": float(r["val_pixel_accuracy"]), "epoch": int(r["epoch"])}


def plain_copy(model):
    """``model`` itself when it has no SyncBatchNorm; else a copy with each SyncBatchNorm turned back
    into a BatchNorm2d holding the same weights and statistics (what one process may run alone)."""
    import copy

    from torch import nn

    if not any(isinstance(m, nn.SyncBatchNorm) for m in model.modules()):
        return model
    out = copy.deepcopy(model)

    def revert(module) -> None:
        for name, child in module.named_children():
            if isinstance(child, nn.SyncBatchNorm):
                ref = child.running_mean if child.running_mean is not None else child.weight
                bn = nn.BatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                    child.track_running_stats, device=ref.device if ref is not None else None)
                bn.load_state_dict(child.state_dict())
                bn.train(child.training)
                module._modules[name] = bn
            else:
                revert(child)

    revert(out)
    return out


def _train_state(model, opt, ema, scaler) -> dict:
    """What --resume needs beyond the shipped weights: raw weights, optimizer, EMA, scaler. (No
    random state: every batch is drawn from generators seeded by (seed, epoch, step).)"""
    state = {"raw_state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
             "optimizer": opt.state_dict()}
    if ema is not None:
        state["ema"] = ema.state_dict()
    if scaler.is_enabled():
        state["scaler"] = scaler.state_dict()
    return state


def write_log(path: Path, rows: list[dict]) -> None:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)


def read_log(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return [{k: (float(v) if k != "epoch" else int(float(v))) for k, v in r.items() if v != ""}
                for r in csv.DictReader(fh)]
