"""echo-bench: the paper's Table 1 for one model, and a side-by-side comparison of everything exported."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Benchmark echoseg models: the paper's Table 1 (table1) and all backends side by side (compare).")


def _known() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(backends, precisions) from the backend registry: what --backends/--precisions accept and default to."""
    from .targets import bench_order, bench_precisions

    return bench_order(), bench_precisions()


_BACKENDS, _PRECISIONS = (",".join(k) for k in _known())  # the defaults shown in --help


def _console(stderr: bool = False):
    from echoseg.clitext import console

    return console(stderr=stderr, width=200)  # markup off: user text printed literally


def _fail(message: str, code: int = 2) -> None:
    """One error line on stderr, then exit (2: nothing could be measured as asked)."""
    from echoseg.clitext import tagged

    _console(stderr=True).print(tagged("error:", "red", message), highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _check_batches(batches: tuple[int, ...]) -> None:
    from echoseg.runtime.api import MAX_BATCH

    bad = [b for b in batches if not 1 <= b <= MAX_BATCH]
    if bad or not batches:
        _fail(f"--batch: {', '.join(map(str, bad)) or 'nothing given'}; each batch must be between 1 and "
              f"{MAX_BATCH} frames, e.g. --batch 1,16")


def _check_videos(videos: list[Path]) -> None:
    """Every --video must open and decode a first frame, before any configuration runs."""
    from echoseg.data.video import VideoError, iter_frames, probe

    for v in videos:
        try:
            probe(v)
            frames = iter_frames(v)
            try:
                first = next(iter(frames), None)
            finally:
                frames.close()
            if first is None:
                raise VideoError(v, "no frames could be decoded (empty or corrupt video)")
        except VideoError as exc:
            _fail(f"--video {exc}" if str(v) in str(exc) else f"--video {v}: {exc}")


def _check_model_paths(models: list[str]) -> None:
    """A --models value written as a path (a separator or a model-file suffix) must exist."""
    suffixes = (".onnx", ".engine", ".plan", ".pt", ".pth")
    for m in models:
        looks_like_path = os.sep in m or "/" in m or m.lower().endswith(suffixes)
        if looks_like_path and not Path(m).exists():
            _fail(f"--models {m}: no such file or directory; give an export or run folder, a model file, "
                  "or a model name such as unet")


def _errors() -> tuple[type[BaseException], ...]:
    """What the commands print as one error line: echoseg's own errors, and OSError (a temporary folder or
    an input file that cannot be written or read, e.g. a full disk under --out)."""
    from echoseg.errors import EchosegError

    return (EchosegError, OSError)


def _split(text: str, what: str, kind=str, allowed: tuple[str, ...] = ()) -> tuple:
    items = [s.strip() for s in text.split(",") if s.strip()]
    try:
        vals = tuple(kind(s) for s in items)
    except ValueError:
        raise typer.BadParameter(f"{what}: expected comma-separated {kind.__name__} values, got {text!r}")
    bad = [v for v in vals if allowed and v not in allowed]
    if bad:
        raise typer.BadParameter(f"{what}: unknown {bad}; choose from {', '.join(allowed)}")
    return vals


@app.command()
def table1(
    video: Optional[Path] = typer.Argument(None, help="Video to time (AVI/MP4); omitted: a synthetic one."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Export dir, run dir, .onnx, .engine or .pt; "
                                        "default: a U-Net export under exports/ (else runs/), FP32."),
    backend: str = typer.Option("auto", "--backend", "-b", help=f"auto or one of {_BACKENDS.replace(',', ', ')}."),
    repeats: int = typer.Option(5, "--repeats", "-n", help="Whole-video passes to average."),
    batch: int = typer.Option(1, "--batch", help="Frames per inference call (1 = frame by frame)."),
    frames: int = typer.Option(112, "--frames", help="Length of the synthetic video when no VIDEO is given."),
    threads: int = typer.Option(0, "--threads", help="Backend intra-op threads (0 = library default)."),
    device: str = typer.Option("auto", "--device", help="torch device: auto, cpu, cuda."),
    exports_dir: Path = typer.Option(Path("exports"), "--exports", help="Where exports are discovered."),
    runs_dir: Path = typer.Option(Path("runs"), "--runs", help="Where run checkpoints are discovered."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """The paper's Table 1 (inference time per video, memory, CPU, GPU) with the paper's figures beside ours."""
    from rich.table import Table

    from .table1 import PAPER_GPU, run_table1

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING)
    known = _known()[0]
    if backend != "auto" and backend not in known:
        raise typer.BadParameter(f"--backend: unknown {backend!r}; choose auto, {', '.join(known[:-1])} or {known[-1]}")
    _check_batches((batch,))
    if model:
        _check_model_paths([model])
    con = _console()
    try:
        res = run_table1(str(video) if video else None, model, backend, repeats, batch, synthetic_frames=frames,
                         threads=threads, device=device, exports_dir=str(exports_dir), runs_dir=str(runs_dir))
    except _errors() as exc:
        _fail(str(exc))
    r = res.row
    t = Table(title=f"Table 1: {res.label} ({r.get('arch', '?')}, {Path(res.model).name}) with {res.backend} "
                    f"{r.get('precision', '')} on {r.get('device', '?')}", header_style="bold")
    t.add_column("")
    t.add_column("ours", justify="right")
    t.add_column(f"paper ({PAPER_GPU})", justify="right")
    for name, ours, paper in res.lines:
        t.add_row(name, ours, paper)
    con.print(t)
    for n in res.notes:
        con.print(f"  {n}")


@app.command()
def compare(
    models: Optional[List[str]] = typer.Option(None, "--models", help="Export/run dirs or model files, or "
                                               "model names/architectures to keep (repeatable)."),
    video: Optional[List[Path]] = typer.Option(None, "--video", help="Video(s) to run (repeatable); default synthetic."),
    synthetic: bool = typer.Option(False, "--synthetic", help="Use a synthetic video (the default without --video)."),
    data: Optional[Path] = typer.Option(None, "--data", help="Labelled data (EchoNet or frame folders) for "
                                        "Dice/IoU/accuracy against ground truth."),
    split: str = typer.Option("test", "--split", help="Split of --data to score."),
    gt_frames: int = typer.Option(200, "--gt-frames", help="At most this many labelled frames (evenly spaced)."),
    backends: str = typer.Option(_BACKENDS, "--backends", help="Comma-separated backends."),
    precisions: str = typer.Option(_PRECISIONS, "--precisions", help="Comma-separated precisions."),
    batch: str = typer.Option("1", "--batch", help="Comma-separated batch sizes, e.g. 1,16."),
    granularities: str = typer.Option("", "--granularities", help="Comma-separated granularities (default all)."),
    out: Path = typer.Option(Path("bench-out"), "--out", help="Folder for bench.csv, bench.json, bench.png."),
    frames: int = typer.Option(48, "--frames", help="Length of the synthetic video."),
    warmup: int = typer.Option(5, "--warmup", help="Untimed calls before timing."),
    min_repeats: int = typer.Option(20, "--min-repeats", help="Timed calls at least..."),
    min_seconds: float = typer.Option(1.5, "--min-seconds", help="...and at least this many seconds."),
    video_repeats: int = typer.Option(2, "--video-repeats", help="Whole-video passes per configuration."),
    threads: int = typer.Option(0, "--threads", help="Backend intra-op threads (0 = library default)."),
    device: str = typer.Option("auto", "--device", help="torch device: auto, cpu, cuda."),
    exports_dir: Path = typer.Option(Path("exports"), "--exports", help="Where exports are discovered."),
    runs_dir: Path = typer.Option(Path("runs"), "--runs", help="Where run checkpoints are discovered."),
    timeout: float = typer.Option(300.0, "--timeout", help="Seconds one configuration may take."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Every model x granularity x backend x precision x batch, each measured in its own process."""
    from .compare import CompareOptions, run_compare
    from .environment import environment
    from .report import RESOURCES, SPEED, rich_table, skipped_table, write_report

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING)
    if video and synthetic:
        raise typer.BadParameter("give --video or --synthetic, not both")
    from echoseg.atomic import check_writable

    _check_model_paths(list(models or []))
    _check_videos(list(video or []))
    batches = _split(batch, "--batch", int)
    _check_batches(batches)
    sources = [m for m in models or [] if Path(m).exists()]
    names = [m for m in models or [] if not Path(m).exists()]
    opts = CompareOptions(
        sources=sources, names=names, videos=[str(v) for v in video or []], data=str(data) if data else "",
        split=split, gt_frames=gt_frames, backends=_split(backends, "--backends", str, _known()[0]),
        precisions=_split(precisions, "--precisions", str, _known()[1]),
        batches=batches, granularities=_split(granularities, "--granularities", float),
        exports_dir=str(exports_dir), runs_dir=str(runs_dir), out=str(out), synthetic_frames=frames,
        warmup=warmup, min_repeats=min_repeats, min_seconds=min_seconds, video_repeats=video_repeats,
        threads=threads, device=device, timeout_s=timeout)
    try:
        check_writable(out, "pass a writable --out (or free some space)", create=False)
    except OSError as exc:
        _fail(str(exc))
    from echoseg.clitext import styled, tagged

    con = _console()
    try:
        res = run_compare(opts, progress=lambda msg: con.print(styled(msg, "dim")))
    except _errors() as exc:
        _fail(str(exc))
    env = environment()
    skipped = [s.to_dict() for s in res.skipped]
    try:
        files, write_error = write_report(out, res.rows, skipped, env, res.settings, res.notes), ""
    except OSError as exc:  # e.g. the disk filled up during the run: the tables below still print
        files, write_error = {}, (f"{out}: bench files not written ({exc.strerror or exc}); "
                                  "free some space or pass another --out")
    where = f"{env['cpu']} ({env['cores_logical']} cores){'' if env['gpu'] == 'none' else ', ' + env['gpu']}"
    con.print(rich_table(res.rows, SPEED, f"speed on {where} (latency per frame)"))
    con.print(rich_table(res.rows, RESOURCES, "resources (CPU %: 100 = one core) and accuracy"
                         f"{' (GT: ' + res.settings['gt_source'] + ')' if res.settings.get('gt_source') else ''}"))
    if skipped:
        con.print(skipped_table(skipped))
    st = res.settings
    con.print(f"latency: per frame (call time / batch), p50/p95/p99 over >= {st['min_repeats']} calls and "
              f">= {st['min_seconds']:g} s after {st['warmup']} warm-up calls; video s: decode + preprocess + infer "
              f"of {', '.join(st['videos'])} (median of {st['video_repeats']}); resources: whole process over the "
              "warm inference, CPU 100 % = one core; Dice ref: masks vs the PyTorch FP32 reference")
    for n in res.notes:
        con.print(tagged("note:", "yellow", n))
    if write_error:
        _fail(write_error, 1)
    con.print("wrote " + ", ".join(str(p) for p in files.values()))
    if not res.rows:
        raise typer.Exit(1)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
