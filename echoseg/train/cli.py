"""echo-train and echo-eval: thin commands over train.loop.train and train.eval.evaluate."""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import replace
from pathlib import Path
from typing import List, Optional

import typer

from echoseg.config import DEFAULT_GRANULARITIES, ConfigError, TrainConfig
from echoseg.models import MODEL_NAMES

train_app = typer.Typer(add_completion=False, help="Train a U-Net or MatAE-U-Net on EchoNet-Dynamic or frame folders.")
eval_app = typer.Typer(add_completion=False, help="Score trained models: Dice, IoU, pixel accuracy.")


def _user_errors() -> tuple[type[BaseException], ...]:
    from echoseg.errors import EchosegError

    # OSError: an output that cannot be written (full disk, read-only), as one line, not a traceback
    return (EchosegError, OSError)


def _fail(exc: BaseException) -> None:
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


@train_app.command()
def train(
    data: Path = typer.Option(..., "--data", help="EchoNet-Dynamic folder or image/mask folders (auto-detected)"),
    model: Optional[str] = typer.Option(None, "--model", help=f"One of: {', '.join(MODEL_NAMES)} (default unet; "
                                        "with --init, the source's)"),
    width: Optional[int] = typer.Option(None, "--width", min=1, help="Base width (default 64, the original "
                                        "U-Net's; the paper gives none; with --init the source's); matae-unet "
                                        "needs a multiple of 8"),
    epochs: int = typer.Option(20, "--epochs", min=1),
    batch_size: int = typer.Option(16, "--batch-size", min=1),
    lr: Optional[float] = typer.Option(None, "--lr", help="Peak learning rate (default 1e-3; 3e-4 for a unet that starts "
                                       "from the bundled model: on real echo it lifted the worst patient)"),
    dice_loss: bool = typer.Option(False, "--dice-loss", help="Add soft Dice to BCE-with-logits"),
    recon_weight: Optional[float] = typer.Option(None, "--recon-weight", min=0.0, help="matae-unet: weight of the "
                                                 "reconstruction MSE (default 0, off: on real echo it cost the atypical "
                                                 "unseen patient 3-11 Dice points; 0.1 with --unlabelled-frames)"),
    unlabelled_frames: bool = typer.Option(False, "--unlabelled-frames",
                                           help="matae-unet: also train the autoencoder on every frame of the "
                                                "training videos (turns the reconstruction on: --recon-weight 0.1)"),
    recon_until: float = typer.Option(0.5, "--recon-until", help="matae-unet: fraction of training over which the "
                                      "reconstruction weight decays to 0 (1 = constant)"),
    distill: Optional[float] = typer.Option(None, "--distill", min=0.0, max=1.0,
                                            help="matae-unet: share of a smaller granularity's loss learnt from the "
                                                 "full network's soft masks (in-place distillation; 0 = labels only); "
                                                 "default: 0 when the run starts from the bundled model (on real echo "
                                                 "it lifted the quarter-width network's worst patient), 0.5 otherwise"),
    full_lr: Optional[float] = typer.Option(None, "--full-lr", min=0.0, help="matae-unet: peak learning rate of "
                                            "the weights only the full network uses (its outer channels and own "
                                            "batch norms); the shared channels keep --lr; 0 = --lr for all. "
                                            "Default: 3e-4 when the run starts from the bundled model (on nine "
                                            "real patients it lifted the full network's worst patient 6 points, "
                                            "see README), 0 otherwise"),
    antialias: bool = typer.Option(False, "--antialias", help="Down-sample with max-blur pooling (anti-aliased: "
                                   "the masks move with the frame instead of jumping between pooling grids); no "
                                   "weights of its own, so --init weights load"),
    shift_consistency: Optional[float] = typer.Option(None, "--shift-consistency", min=0.0, help="Weight of a loss "
                                                      "on masks that change when the frame moves by 1-15 pixels (max "
                                                      "pooling's grid): each step also runs every granularity on the "
                                                      "batch rolled by one random shift; 0 = off. Default: 1 for a "
                                                      "matae-unet that starts from the bundled model (on nine real "
                                                      "patients it lifted the half-width network's worst patient, see "
                                                      "README), 0 otherwise; about 1.5x the time an epoch takes"),
    granularities: Optional[List[float]] = typer.Option(None, "--granularity", help="matae-unet nested widths (default: "
                                                        "1/8, 1/4, 1/2, 1 where the first level keeps >= 4 channels)"),
    ema_decay: float = typer.Option(0.995, "--ema-decay", help="EMA of the weights (validated and saved); 0 = off"),
    warmup_epochs: int = typer.Option(1, "--warmup-epochs", min=0, help="Linear learning-rate warm-up, then cosine decay"),
    workers: int = typer.Option(-1, "--workers", help="DataLoader workers for augmentation (-1: up to 8 on a GPU "
                                                     "machine, none on a small CPU one)"),
    select: str = typer.Option("last", "--select", help="best.pt: last (the final EMA weights), smooth (best 3-epoch "
                                                        "mean of val Dice from a third of the run on) or best (raw "
                                                        "peak); never an epoch with a collapsed granularity"),
    augment: bool = typer.Option(True, "--augment/--no-augment"),
    augment_strength: Optional[str] = typer.Option(None, "--augment-strength", help="light, heavy (wider pose and "
                                                   "gain, blur, noise, contrast, dark blotches) or heavy-valve (heavy, "
                                                   "and half the frames lose their mitral valve plane); default: heavy "
                                                   "when the run starts from the bundled model (as it was trained; on "
                                                   "real echo it lifted the worst unseen patient most), heavy-valve for "
                                                   "a matae-unet that does, light otherwise"),
    out: Optional[Path] = typer.Option(None, "--out", help="Run folder (default runs/<model>)"),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda"),
    seed: int = typer.Option(0, "--seed"),
    resume: bool = typer.Option(False, "--resume", help="Continue from <out>/last.pt up to --epochs; with --folds, keep "
                                "the runs already scored in <out>/cv.json and train only the missing ones"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the trained run (with --folds, the cross-validation) already in --out"),
    max_train_frames: int = typer.Option(0, "--max-train-frames", help="Use at most this many labelled frames (0 = all)"),
    folds: int = typer.Option(0, "--folds", min=0, help="Cross-validate: K folds of whole videos (patients) over all "
                                                        "labelled frames; K = number of videos is leave-one-patient-out"),
    fold: Optional[List[int]] = typer.Option(None, "--fold", help="With --folds: run only these folds (0-based, repeatable)"),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="With --folds: comma-separated seeds (default: --seed)"),
    jobs: int = typer.Option(1, "--jobs", min=1, help="With --folds: train this many runs at once in separate "
                                                     "processes (a GPU holds many small runs)"),
    train_every: int = typer.Option(1, "--train-every", min=1, help="Train on every k-th frame of each video (a "
                                    "screening run: neighbouring frames are near-copies); 1 = all"),
    init: Optional[str] = typer.Option(None, "--init", help="Start from trained weights: auto (default: the "
                                       "bundled model where it fits, unet or matae-unet at width 16; random "
                                       "weights elsewhere), none (random weights), pretrained (the bundled model) "
                                       "or a run folder/checkpoint; the run takes their input spec, granularities, "
                                       "and model and width unless given"),
) -> None:
    """Train one model; writes best.pt, last.pt, log.csv and curves.png to the run folder.

    With --folds K: one run per fold and seed in OUT/fold<i>-seed<s>/, each scored on its held-out
    videos, and OUT/cv.csv, OUT/cv.json with Dice mean +- sd over seeds per granularity; --resume
    adds missing folds or seeds to an existing table, so a sweep can be run in pieces."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from echoseg.clitext import console as make_console

    from echoseg.data.dataset import detect_layout
    from echoseg.models import check_name

    from .loop import Callbacks
    from .loop import train as run_training
    from .preflight import preflight

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    console = make_console()  # markup off: user text (paths, run names) printed literally
    try:
        from .init import fit_config, load_init, named_source, resolve, source_sha256

        model, width = _model_and_width(model, width, named_source(init))
        check_name(model)
        if fold and not folds:
            raise ConfigError(f"--fold {' '.join(map(str, fold))} needs --folds K (the number of folds to split "
                              "the videos into), e.g. --folds 5 --fold 0")
        if not folds and (jobs > 1 or seeds):
            asked = " and ".join(o for o, on in (("--jobs", jobs > 1), ("--seeds", bool(seeds))) if on)
            raise ConfigError(f"{asked} only apply to cross-validation; add --folds K (e.g. --folds 9 for "
                              "leave-one-patient-out over nine videos), or use --seed for one run")
        if recon_weight is None:  # off, unless unlabelled frames are there to train the autoencoder
            recon_weight = 0.1 if unlabelled_frames else 0.0
        cfg = TrainConfig(data=str(data), model=model, width=width, epochs=epochs, batch_size=batch_size,
                          dice_loss=dice_loss, recon_weight=recon_weight, recon_until=recon_until,
                          unlabelled_frames=unlabelled_frames,
                          granularities=tuple(sorted(granularities)) if granularities else (),
                          augment=augment, augment_strength=augment_strength or "light", device=device, seed=seed,
                          out=str(out or Path("runs") / model),
                          max_train_frames=max_train_frames, ema_decay=ema_decay, warmup_epochs=warmup_epochs,
                          select=select, workers=workers, train_every=train_every, full_lr=full_lr or 0.0,
                          antialias=antialias, shift_consistency=shift_consistency or 0.0)
        gs = cfg.granularities or DEFAULT_GRANULARITIES
        if model == "matae-unet" and any(abs(width * g - round(width * g)) > 1e-9 for g in gs):
            raise ConfigError(f"matae-unet width {width} does not nest at granularities {list(gs)}; "
                              "use a multiple of 8")
        detect_layout(cfg.data)  # a missing or unknown data folder first, then the run folder
        earlier = _started_with(cfg.out, bool(folds)) if resume else None
        start = resolve(init, model, width, cfg.granularities, None if earlier is None else earlier.get("init", ""),
                        augment_strength if augment else augment_strength or "light",  # --no-augment: none at all
                        None if earlier is None else earlier.get("augment_strength", "light"),
                        distill, None if earlier is None else earlier.get("distill"),
                        lr, None if earlier is None else earlier.get("lr"),
                        full_lr, None if earlier is None else float(earlier.get("full_lr") or 0.0),
                        shift_consistency,
                        None if earlier is None else float(earlier.get("shift_consistency") or 0.0))
        cfg = replace(cfg, augment_strength=start.augment_strength, distill=start.distill, lr=start.lr,
                      full_lr=start.full_lr, shift_consistency=start.shift_consistency)
        if start.init:  # weights that do not fit this model: said before any data is read
            from .loop import model_config

            weights = load_init(start.init)
            fit_config(replace(cfg, init=start.init), model_config(cfg), weights)
            cfg = replace(cfg, init=start.init, init_sha256=source_sha256(weights))
        preflight(cfg.out, resume, overwrite, _weight_bytes(model, width), cv=bool(folds))
        if start.said:
            console.print(start.said)
        if folds:
            seed_list = _parse_seeds(seeds, seed)
            _cross_validate(console, cfg, folds, seed_list, fold or [], jobs, resume)
            return
        from .dist import world_from_env

        if not world_from_env().is_main:  # torchrun: rank 0 alone draws progress and prints
            run_training(cfg, resume=resume)
            return
        # the bar is drawn from the first step on: an error while the data loads leaves no "0/1 loss nan" bar
        # line above it, and the loss column is empty until there is a loss to show
        bar = Progress(TextColumn("{task.description}", style="bold", markup=False), BarColumn(), MofNCompleteColumn(),
                       TextColumn("{task.fields[loss]}", markup=False), TimeRemainingColumn(), console=console)
        task = bar.add_task(f"{model} w{width}", total=1, loss="")
        try:
            def on_start(n_epochs: int, steps: int) -> None:
                bar.update(task, total=n_epochs * steps)
                bar.start()

            def on_epoch(row: dict) -> None:
                if not _finite(row.get("train_loss")):  # a clear line, not "loss nan  val Dice 0.0000 ..."
                    bar.console.print(_diverged(row))
                    return
                g = "  ".join(f"{k[9:]}={v:.3f}" for k, v in row.items() if k.startswith("val_dice_g"))
                bar.console.print(f"epoch {row['epoch']:>3}  loss {row['train_loss']:.4f}  val Dice {row['val_dice']:.4f}  "
                                  f"IoU {row['val_iou']:.4f}  {row['seconds']:.1f}s  {g}")

            result = run_training(cfg, resume=resume, callbacks=Callbacks(
                on_start=on_start, on_epoch=on_epoch,
                on_step=lambda e, s, loss: bar.update(task, advance=1, loss=f"loss {loss:.4f}")))
        finally:
            bar.stop()
    except _user_errors() as exc:
        _fail(exc)
    console.print(f"best val Dice {result.best['val_dice']:.4f} at epoch {best_epoch(result.best, result.rows)}; "
                  f"run in {result.out}")


def _started_with(out: str, cv: bool) -> dict | None:
    """The training options a run or sweep in ``out`` was started with (None: nothing to resume)."""
    path = Path(out) / ("cv.json" if cv else "train_config.json")
    try:
        cfg = json.loads(path.read_text())
        cfg = cfg.get("config", {}) if cv else cfg
        return cfg if isinstance(cfg, dict) else None
    except (OSError, ValueError, AttributeError):
        return None


def _model_and_width(model: str | None, width: int | None, init: str | None) -> tuple[str, int]:
    """--model and --width as given; what is not given: the --init source's, else unet width 64."""
    if init and (model is None or width is None):
        from .init import load_init

        src = load_init(init).model
        return model or src.name, width or src.width
    return model or "unet", width or 64


def _finite(value) -> bool:
    import math

    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _diverged(row: dict) -> str:
    return (f"epoch {row.get('epoch', '?'):>3}  the training loss is not a number ({row.get('train_loss')}): "
            "training diverged; lower --lr (or check the data for broken frames)")


def _parse_seeds(text: str | None, default: int) -> list[int]:
    if not text:
        return [default]
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ConfigError(f"--seeds {text!r}: expected comma-separated integers, e.g. --seeds 1,2,3") from None


def _cross_validate(console, cfg: TrainConfig, folds: int, seeds: list[int], only: list[int], jobs: int = 1,
                    resume: bool = False) -> None:
    from rich.table import Table

    from .cv import run_cv
    from .loop import Callbacks

    def on_run(f: int, s: int, run_cfg: TrainConfig) -> Callbacks:
        console.print(f"fold {f} seed {s} -> {run_cfg.out}")
        return Callbacks(on_epoch=lambda row: console.print(
            f"  epoch {row['epoch']:>3}  loss {row['train_loss']:.4f}  val Dice {row['val_dice']:.4f}  "
            f"{row['seconds']:.1f}s" if _finite(row.get("train_loss")) else "  " + _diverged(row)))

    def on_done(rows: list[dict]) -> None:
        r = rows[0]
        console.print(f"fold {r['fold']} seed {r['seed']} ({r['test_videos']}): "
                      + "  ".join(f"g={x['g']:g} Dice {x['dice']:.4f}" for x in rows))

    if jobs > 1 and not resume:
        console.print(f"{len(only or range(folds)) * len(seeds)} runs, {jobs} at a time")
    summary = run_cv(cfg, folds, seeds, only, on_run=on_run, jobs=jobs, on_done=on_done, resume=resume)
    cv = json.loads((Path(cfg.out) / "cv.json").read_text())
    table = Table(title=f"{cfg.model} w{cfg.width}: {folds}-fold cross-validation by video, seeds {cv['seeds']}")
    for col in ("g", "Dice mean", "sd over seeds", "worst patient (fold mean)", "per fold"):
        table.add_column(col, justify="right")
    for g, s in summary.items():
        table.add_row(g, f"{s['dice_mean']:.4f}", f"{s['dice_sd']:.4f}",
                      f"{s['worst_fold_dice']:.4f} (fold {s['worst_fold']}: {s['worst_fold_videos']})",
                      " ".join(f"{k}:{v:.3f}" for k, v in s["dice_per_fold"].items()))
    console.print(table)
    missing = next(iter(summary.values()), {}).get("missing_runs") or []
    if missing:
        console.print(f"{len(missing)} of {len(cv['evaluated_folds']) * len(cv['seeds'])} runs not scored yet "
                      f"({', '.join(f'fold {f} seed {s}' for f, s in missing[:6])}{' ...' if len(missing) > 6 else ''}): "
                      "the seeds are pooled over different folds; add them with the same command and --resume")
    console.print(f"wrote {cfg.out}/cv.csv and cv.json")


def _weight_bytes(model: str, width: int) -> int:
    """float32 bytes of the model's weights, for the free-space check."""
    from echoseg.models import build_model, default_config

    return 4 * sum(p.numel() for p in build_model(default_config(model, width)).parameters())


def best_epoch(best: dict, rows: list[dict]) -> int | str:
    """The epoch of the best val Dice: from ``best`` when this session improved it, else from the log.

    After --resume with no new best, ``best`` only carries the value from last.pt; the log
    (log.csv, read back on resume) says at which epoch it was reached.
    """
    if best.get("epoch") is not None:
        return int(best["epoch"])
    scored = [r for r in rows if "val_dice" in r and "epoch" in r]
    if not scored:
        return "?"
    top = max(r["val_dice"] for r in scored)
    return int(next(r["epoch"] for r in scored if r["val_dice"] == top))


@eval_app.command()
def evaluate(
    runs: List[Path] = typer.Argument(..., help="Run folders or checkpoints (several make one table)"),
    data: Optional[Path] = typer.Option(None, "--data", help="Dataset folder (EchoNet-Dynamic or frame folders); "
                                        "not needed to --compare cross-validation folders. A cross-validation "
                                        "folder with --data: every fold run scored again on the patient it held "
                                        "out (with --tta / --clean-masks) into a table of its own (--out, default "
                                        "CV/eval-cv-<tta>[-clean])"),
    split: str = typer.Option("test", "--split", help="train, val or test (EchoNet folders: also all)"),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default <run>/eval-<split>; "
                                                            "with several runs, OUT/<run name>)"),
    device: str = typer.Option("auto", "--device"),
    compare: bool = typer.Option(False, "--compare", help="Paired Dice difference of two runs, or of two models' "
                                 "runs (seeds): mean with a bootstrap 95% CI over videos; cross-validation "
                                 "folders (echo-train --folds) also patient by patient (mean of patients, "
                                 "worst patient, run by run); two folders of one model as two recipes"),
    ef: bool = typer.Option(False, "--ef", help="EchoNet: also validate echo-run's EF read-out against FileList.csv "
                            "(ef.csv, Bland-Altman and scatter PNGs, 'ef' in metrics.json), for any model: "
                            "checkpoints in PyTorch, exports and pretrained through the runtime (--backend); "
                            "a cross-validation folder reads each held-out video with its fold's model"),
    ef_volume: str = typer.Option("discs", "--ef-volume", help="--ef volumes: discs (method of discs, the "
                                  "default) or area-length"),
    clean_masks: bool = typer.Option(False, "--clean-masks", help="Score the masks after echo-run's clean-up "
                                     "(the LV's blob, holes filled), as echo-run measures them"),
    backend: str = typer.Option("auto", "--backend", "-b", help="Exports and pretrained: auto (what echo-run "
                                "runs here) | tensorrt | openvino | onnxruntime; checkpoints run in PyTorch"),
    tta: str = typer.Option("none", "--tta", help="Test-time augmentation, as echo-run --tta: none, or shift3 "
                            "(the frame and two copies moved 4 px diagonally, probabilities averaged; 3x the "
                            "inference); recorded in metrics.json"),
    side_by_side: bool = typer.Option(False, "--table", help="Cross-validation folders (echo-train --folds) "
                                      "side by side: each held-out patient's Dice per seed, pooled, mean of "
                                      "patients, worst patient, lowest run, runs paired with the first folder's; "
                                      "A+B joins sweeps of one recipe run with other seeds into one row; with "
                                      "--out also patients.md, patients.csv and patients.png"),
) -> None:
    """Per-frame Dice, IoU, pixel accuracy (bootstrap 95% CI), ED/ES and granularity breakdowns."""
    from rich.table import Table

    from echoseg.clitext import console as make_console

    from .eval import evaluate as run_eval

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    console = make_console()  # markup off: run names like clip[apical] printed literally
    if not console.is_terminal:  # logs and pipes: a wide table beats a squashed one
        console = make_console(width=150)
    table = Table(title=f"{split} split of {data}" + (f", test-time views {tta}" if tta != "none" else ""))
    for col in ("run", "model", "g", "GMACs", "frames", "Dice (95% CI)", "IoU", "pixel acc."):
        table.add_column(col, justify="left" if col == "model" else "right")
    failed, scored = 0, []
    if side_by_side:
        given = [name for name, on in (("--data", data is not None), ("--compare", compare), ("--ef", ef),
                                       ("--tta", tta != "none")) if on]
        if given:
            _error_line(f"--table reads the cv.json of cross-validation folders and scores nothing: drop "
                        f"{' and '.join(given)}")
            raise typer.Exit(1)
        _cv_table(runs, out)
        return
    from echoseg.runtime.tta import TtaError, check_tta

    try:
        check_tta(tta)  # the runtime's own check and message, before anything is scored
    except TtaError as exc:
        _error_line(exc)
        raise typer.Exit(1)
    if ef:
        from echoseg.runtime.cardiac import METHODS

        if ef_volume not in METHODS:
            _error_line(f"--ef-volume {ef_volume!r}: use one of {', '.join(METHODS)}")
            raise typer.Exit(1)
    for run in runs:
        target = (out / run.name if len(runs) > 1 else out) if out else None
        if compare and (run / "cv.json").is_file():
            from .compare import read_cv

            try:
                scored += read_cv(run)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                _error_line(f"{run}: its cross-validation cannot be read ({exc}); rerun echo-train --folds "
                            "with --resume to score what is missing")
                failed += 1
            continue
        if data is None:
            _error_line(f"{run}: --data is needed to score a run (only cross-validation folders compare "
                        "without it)")
            failed += 1
            continue
        if (run / "cv.json").is_file():
            if not ef:
                if not _cv_rescore(console, run, data, target, device, clean_masks, tta):
                    failed += 1
            elif not _cv_ef(console, run, data, target, device, backend, ef_volume, tta):
                failed += 1
            continue
        try:
            r = run_eval(run, data, split, target, device, clean=clean_masks, backend=backend, tta=tta)
            if ef:
                from .ef import evaluate_ef, summary_line

                block = evaluate_ef(run, data, split, r["out"], device, backend=backend, method=ef_volume, tta=tta)
                console.print(f"{run}: {summary_line(block)}")
        except (*_user_errors(), ValueError) as exc:
            _error_line(f"{run}: {exc}")
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
        if r.get("ran"):
            console.print(f"{run}: scored " + ", ".join(f"g={g}: {what}" for g, what in r["ran"].items()))
        if (line := _video_line(rows)):
            console.print(f"{run}: {line}", soft_wrap=True)  # one line, as it is grepped
        if r.get("error_sites"):
            console.print(f"{run}: {_sites_line(r['error_sites'])}", soft_wrap=True)
        console.print(f"{run}: wrote {r['out']}/metrics.json, frames.csv, montage.png")
        if compare:
            from .compare import read_frames_csv

            scored.append(read_frames_csv(Path(r["out"]) / "frames.csv", run.name, r["model"], r["width"]))
    if table.row_count:
        console.print(table)
    if compare and not failed:
        _print_comparison(console, scored, out)
    if failed:
        raise typer.Exit(1)


def _video_line(rows: dict) -> str:
    """Video by video, as a per-patient bar reads: each granularity's mean of videos and worst video."""
    parts = [f"g={g} mean {v['dice_mean']:.4f}, worst {v['worst']['video']} {v['worst']['dice']:.4f}"
             for g, v in sorted(((g, s.get("videos")) for g, s in rows.items()), key=lambda kv: -float(kv[0])) if v]
    if not parts:
        return ""
    count = next(s["videos"]["count"] for s in rows.values() if s.get("videos"))
    return f"by video ({count} video{'s' if count != 1 else ''}, each its frames' mean Dice): " + "; ".join(parts)


def _sites_line(sites: dict) -> str:
    """Where the full network's masks err, in each video's largest and smallest third of label areas."""
    parts = [f"{third} third ({near}) beside {s['beside']:.1%}, past the base {s['past_base']:.1%}, "
             f"missed {s['missed']:.1%}" for third, near in (("largest", "near ED"), ("smallest", "near ES"))
             if (s := sites.get(third))]
    return ("where the g=1 masks err (share of the label's area; each video's frames in thirds by label "
            "area): " + "; ".join(parts))


def _cv_table(folders: List[Path], out: Optional[Path]) -> None:
    """echo-eval CV [CV ...] --table: the Markdown table on stdout, and files with --out."""
    from . import cvtable

    read, failed = {}, 0
    for folder in folders:
        try:
            read[folder] = cvtable.read_joined(folder)
        except (OSError, ValueError) as exc:
            _error_line(exc)
            failed += 1
    if read:
        try:
            tab = cvtable.build(read)
        except ValueError as exc:
            _fail(exc)
        print(cvtable.markdown(tab), end="", flush=True)
        if out:
            try:
                cvtable.write(tab, out)
            except OSError as exc:
                _fail(f"{out}: the table was not written ({(exc.strerror or str(exc)).lower()}); free some space "
                      "or pass another --out")
            print(f"wrote {out}/{', '.join(cvtable.OUTPUTS)}")
        else:
            print(f"(--out DIR also writes it as {', '.join(cvtable.OUTPUTS)})")
    if failed:
        raise typer.Exit(1)


def _cv_rescore(console, cv: Path, data: Path, out: Optional[Path], device: str, clean: bool, tta: str) -> bool:
    """echo-eval CV --data D [--tta ...] [--clean-masks]: every fold run scored again on its held-out
    patient, into a cross-validation table of its own (default CV/eval-cv-<tta>[-clean])."""
    from .cv import CVError, rescore_cv

    where = out or cv / (f"eval-cv-{tta}" + ("-clean" if clean else ""))

    def said(rows: list[dict]) -> None:
        r0 = rows[0]
        console.print(f"{cv}: fold {r0['fold']} seed {r0['seed']} ({r0['test_videos']}): "
                      + "  ".join(f"g={r['g']:g} {r['dice']:.4f}" for r in rows), highlight=False, soft_wrap=True)

    try:
        got = rescore_cv(cv, data, where, device, clean=clean, tta=tta, on_run=said)
    except (*_user_errors(), CVError, ValueError, KeyError) as exc:
        _error_line(f"{cv}: {exc}")
        return False
    for g, s in got["summary"].items():
        console.print(f"{cv}: g={g} frames pooled {s['dice_mean']:.4f} (sd over seeds {s['dice_sd']:.4f}), worst "
                      f"patient {s['worst_fold_videos']} {s['worst_fold_dice']:.4f}, lowest run {s['min_fold_dice']:.4f}"
                      f" (tta {tta}{', clean masks' if clean else ''})", highlight=False, soft_wrap=True)
    console.print(f"{cv}: wrote {where}/cv.json, cv.csv and each run's eval-test/; echo-eval {cv} {where} --table "
                  "sets them side by side", highlight=False, soft_wrap=True)
    for line in got["not_scored"]:
        _error_line(f"{cv}: not scored: {line}")
    return not got["not_scored"]


def _cv_ef(console, cv: Path, data: Path, out: Optional[Path], device: str, backend: str, method: str,
           tta: str) -> bool:
    """echo-eval CV --ef: each held-out video's EF read by its fold's model, one table per seed."""
    from .ef import cv_ef_dir, evaluate_cv_ef, summary_line

    try:
        blocks = evaluate_cv_ef(cv, data, out, device, backend=backend, method=method, tta=tta)
    except (*_user_errors(), ValueError, KeyError) as exc:
        _error_line(f"{cv}: {exc}")
        return False
    where = out or cv_ef_dir(cv, tta)
    for seed, block in blocks.items():
        console.print(f"{cv}: seed {seed}, each video read by the fold model that never saw it: {summary_line(block)} "
                      f"in {where}/seed{seed}")
        if block["not_in_filelist"]:
            console.print(f"{cv}: seed {seed}: {len(block['not_in_filelist'])} held-out videos are not in "
                          f"{data}/FileList.csv and were not read ({', '.join(block['not_in_filelist'][:3])}"
                          f"{', ...' if len(block['not_in_filelist']) > 3 else ''})")
    return True


def _print_comparison(console, scored: list, out: Optional[Path]) -> None:
    from rich.table import Table

    from echoseg.atomic import write_json

    from .compare import compare as run_compare

    try:
        res = run_compare(scored)
    except ValueError as exc:
        _fail(exc)
    runs = Table(title="runs (mean +- sd over runs/seeds of per-frame-averaged Dice)")
    for col in ("side", "model", "g", "Dice mean", "sd", "runs"):
        runs.add_column(col, justify="right")
    for r in res["runs"]:
        runs.add_row(r["side"], r["model"], f"{r['g']:g}", f"{r['dice_mean']:.4f}", f"{r['dice_sd']:.4f}", str(r["runs"]))
    console.print(runs)
    diff = Table(title=f"paired difference B - A  (A = {res['a_model']}: {', '.join(res['a'])};  "
                       f"B = {res['b_model']}: {', '.join(res['b'])})")
    for col in ("B g", "vs A g", "Dice diff", "95% CI (videos resampled)", "frames", "videos"):
        diff.add_column(col, justify="right")
    for d in res["differences"]:
        ci = "n/a (one video)" if not d["ci95"] else f"{d['ci95'][0]:+.4f} .. {d['ci95'][1]:+.4f}"
        diff.add_row(f"{d['g_b']:g}", f"{d['g_a']:g}", f"{d['mean']:+.4f}", ci, str(d["frames"]), str(d["videos"]))
    console.print(diff)
    if res.get("recipe_difference"):
        console.print("A and B differ in " + ", ".join(f"{k} {va!r} (A) / {vb!r} (B)"
                                                       for k, (va, vb) in res["recipe_difference"].items()))
    for p in res["patients"]:
        _print_patients(console, p)
    for d in res["differences"]:
        if d["frames"] < max(d["frames_a"], d["frames_b"]):
            console.print(f"B g={d['g_b']:g} vs A g={d['g_a']:g}: paired the {d['frames']} frames both sides scored "
                          f"(A scored {d['frames_a']}, B {d['frames_b']}); the others are left out: score both "
                          "on the same data and split to compare them all")
    if out:
        try:
            write_json(Path(out) / "compare.json", res)
        except OSError as exc:
            _fail(f"{Path(out) / 'compare.json'}: not written ({(exc.strerror or str(exc)).lower()}); "
                  "free some space or pass another --out")
        console.print(f"wrote {out}/compare.json")


def _print_patients(console, p: dict) -> None:
    """Two cross-validations held-out patient by held-out patient (compare.by_patient)."""
    from rich.table import Table

    def seeds(values: list) -> str:
        return " / ".join(f"{v:.3f}" for v in values)

    t = Table(title=f"held-out patients, B g={p['g_b']:g} vs A g={p['g_a']:g} (Dice of each seed's run; "
                    "B - A of their means)")
    for col in ("fold", "held out", "A", "B", "B - A"):
        t.add_column(col, justify="left" if col == "held out" else "right")
    for r in p["folds"]:
        t.add_row(str(r["fold"]), r["videos"], seeds(r["a"]), seeds(r["b"]), f"{r['diff']:+.3f}")
    t.add_row("", "mean of patients", f"{p['a_patients_mean']:.3f}", f"{p['b_patients_mean']:.3f}",
              f"{p['b_patients_mean'] - p['a_patients_mean']:+.3f}")
    wa, wb = p["a_worst"], p["b_worst"]
    t.add_row("", "worst patient", f"{wa['dice']:.3f} (fold {wa['fold']})", f"{wb['dice']:.3f} (fold {wb['fold']})",
              f"{wb['dice'] - wa['dice']:+.3f}")
    console.print(t)
    if len(p["folds"]) < max(p["folds_a"], p["folds_b"]):
        console.print(f"patients: the {len(p['folds'])} folds both sides scored (A scored {p['folds_a']}, "
                      f"B {p['folds_b']})")
    pr = p["paired_runs"]
    if pr:
        console.print(f"run by run (same fold, same seed), B g={p['g_b']:g} - A g={p['g_a']:g}: mean "
                      f"{pr['mean']:+.4f}, min {pr['min']:+.4f}, max {pr['max']:+.4f}; B ahead in {pr['b_ahead']} "
                      f"of {pr['runs']}")


def _error_line(message: str) -> None:
    """One plain line on stderr: rich would wrap a long path over several lines."""
    print("error: " + str(message).replace("\n", " "), file=sys.stderr, flush=True)


def train_main() -> None:
    train_app()


def eval_main() -> None:
    eval_app()
