"""echo-train and echo-eval: thin commands over train.loop.train and train.eval.evaluate."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import List, Optional

import typer

from echoseg.config import DEFAULT_GRANULARITIES, ConfigError, TrainConfig
from echoseg.models import MODEL_NAMES

train_app = typer.Typer(add_completion=False, help="Train a U-Net or MatAE-U-Net on EchoNet-Dynamic or frame folders.")
eval_app = typer.Typer(add_completion=False, help="Score trained models: Dice, IoU, pixel accuracy.")


def _user_errors() -> tuple[type[BaseException], ...]:
    from echoseg.data.frameset import DataError
    from echoseg.models import UnknownModelError

    from .checkpoint import CheckpointError
    from .loop import TrainError

    return (DataError, UnknownModelError, CheckpointError, TrainError, ConfigError, FileNotFoundError)


def _fail(exc: BaseException) -> None:
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


@train_app.command()
def train(
    data: Path = typer.Option(..., "--data", help="EchoNet-Dynamic folder or image/mask folders (auto-detected)"),
    model: str = typer.Option("unet", "--model", help=f"One of: {', '.join(MODEL_NAMES)}"),
    width: int = typer.Option(64, "--width", min=1, help="Base width (paper: 64); matae-unet needs a multiple of 8"),
    epochs: int = typer.Option(20, "--epochs", min=1),
    batch_size: int = typer.Option(16, "--batch-size", min=1),
    lr: float = typer.Option(1e-3, "--lr"),
    dice_loss: bool = typer.Option(False, "--dice-loss", help="Add soft Dice to BCE-with-logits"),
    recon_weight: float = typer.Option(0.1, "--recon-weight", help="matae-unet: weight of the reconstruction MSE"),
    unlabelled_frames: bool = typer.Option(False, "--unlabelled-frames",
                                           help="matae-unet: also train the autoencoder on every frame of the training videos"),
    granularities: Optional[List[float]] = typer.Option(None, "--granularity", help="matae-unet nested widths (default 1/8,1/4,1/2,1)"),
    augment: bool = typer.Option(True, "--augment/--no-augment"),
    out: Optional[Path] = typer.Option(None, "--out", help="Run folder (default runs/<model>)"),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda"),
    seed: int = typer.Option(0, "--seed"),
    resume: bool = typer.Option(False, "--resume", help="Continue from <out>/last.pt up to --epochs"),
    max_train_frames: int = typer.Option(0, "--max-train-frames", help="Use at most this many labelled frames (0 = all)"),
) -> None:
    """Train one model; writes best.pt, last.pt, log.csv and curves.png to the run folder."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from echoseg.models import check_name

    from .loop import Callbacks
    from .loop import train as run_training

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    console = Console()
    try:
        check_name(model)
        cfg = TrainConfig(data=str(data), model=model, width=width, epochs=epochs, batch_size=batch_size, lr=lr,
                          dice_loss=dice_loss, recon_weight=recon_weight, unlabelled_frames=unlabelled_frames,
                          granularities=tuple(granularities) if granularities else DEFAULT_GRANULARITIES,
                          augment=augment, device=device, seed=seed, out=str(out or Path("runs") / model),
                          max_train_frames=max_train_frames)
        if model == "matae-unet" and any(abs(width * g - round(width * g)) > 1e-9 for g in cfg.granularities):
            raise ConfigError(f"matae-unet width {width} does not nest at granularities {list(cfg.granularities)}; "
                              "use a multiple of 8")
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("loss {task.fields[loss]:.4f}"), TimeRemainingColumn(), console=console) as bar:
            task = bar.add_task(f"{model} w{width}", total=1, loss=float("nan"))

            def on_start(n_epochs: int, steps: int) -> None:
                bar.update(task, total=n_epochs * steps)

            def on_epoch(row: dict) -> None:
                g = "  ".join(f"{k[9:]}={v:.3f}" for k, v in row.items() if k.startswith("val_dice_g"))
                bar.console.print(f"epoch {row['epoch']:>3}  loss {row['train_loss']:.4f}  val Dice {row['val_dice']:.4f}  "
                                  f"IoU {row['val_iou']:.4f}  {row['seconds']:.1f}s  {g}")

            result = run_training(cfg, resume=resume, callbacks=Callbacks(
                on_start=on_start, on_epoch=on_epoch,
                on_step=lambda e, s, loss: bar.update(task, advance=1, loss=loss)))
    except _user_errors() as exc:
        _fail(exc)
    console.print(f"best val Dice {result.best['val_dice']:.4f} at epoch {result.best.get('epoch')}; "
                  f"run in {result.out}")


@eval_app.command()
def evaluate(
    runs: List[Path] = typer.Argument(..., help="Run folders or checkpoints (several make one table)"),
    data: Path = typer.Option(..., "--data", help="Dataset folder (EchoNet-Dynamic or frame folders)"),
    split: str = typer.Option("test", "--split", help="train, val or test"),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default <run>/eval-<split>; "
                                                            "with several runs, OUT/<run name>)"),
    device: str = typer.Option("auto", "--device"),
    ef: bool = typer.Option(False, "--ef", help="EchoNet: also validate echo-run's EF read-out against FileList.csv "
                            "(ef.csv, Bland-Altman and scatter PNGs, 'ef' in metrics.json)"),
) -> None:
    """Per-frame Dice, IoU, pixel accuracy (bootstrap 95% CI), ED/ES and granularity breakdowns."""
    from rich.console import Console
    from rich.table import Table

    from .eval import evaluate as run_eval

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    console = Console()
    if not console.is_terminal:  # logs and pipes: a wide table beats a squashed one
        console = Console(width=150)
    table = Table(title=f"{split} split of {data}")
    for col in ("run", "model", "g", "GMACs", "frames", "Dice (95% CI)", "IoU", "pixel acc."):
        table.add_column(col, justify="left" if col == "model" else "right")
    failed = 0
    for run in runs:
        target = (out / run.name if len(runs) > 1 else out) if out else None
        try:
            r = run_eval(run, data, split, target, device)
            if ef:
                from .ef import evaluate_ef, summary_line

                console.print(f"{run}: {summary_line(evaluate_ef(run, data, split, r['out'], device))}")
        except (*_user_errors(), ValueError) as exc:
            console.print(f"[red]error[/red]: {run}: {exc}")
            failed += 1
            continue
        rows = r.get("granularities") or {"1": r}
        for g, s in sorted(rows.items(), key=lambda kv: -float(kv[0])):
            lo, hi = s["ci95"]["dice"]
            table.add_row(run.name, f"{r['model']} w{r['width']}", g, f"{s['gmacs']:.3f}", str(s["frames"]),
                          f"{s['dice']:.4f} ({lo:.3f}-{hi:.3f})", f"{s['iou']:.4f}", f"{s['pixel_accuracy']:.4f}")
        for ph, s in (r.get("phases") or {}).items():
            table.add_row("", f"  {ph} frames", "1", "", str(s["frames"]), f"{s['dice']:.4f}", f"{s['iou']:.4f}",
                          f"{s['pixel_accuracy']:.4f}")
        if r.get("skipped"):
            console.print(f"{run}: skipped {r['skipped']}")
        console.print(f"{run}: wrote {r['out']}/metrics.json, frames.csv, montage.png")
    console.print(table)
    if failed:
        raise typer.Exit(1)


def train_main() -> None:
    train_app()


def eval_main() -> None:
    eval_app()
