"""echo-run: segment the LV in echo videos, with overlays, per-frame areas, ED/ES, and an EF estimate."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def run(
    inputs: list[str] = typer.Argument(..., metavar="VIDEO_OR_DIR", help="Videos (AVI, MP4, DICOM, any size, grey or "
                                       "colour), folders of them, a capture device index (0) or a stream URL (rtsp://...)"),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="Export folder, .onnx, .engine, checkpoint "
                                         "or run folder; default: newest under exports/, else runs/"),
    backend: str = typer.Option("auto", "--backend", "-b", help="auto | tensorrt | openvino | onnxruntime | torch"),
    batch: int = typer.Option(8, "--batch", help="Frames per inference batch (1 to 4096)"),
    granularity: Optional[float] = typer.Option(None, "--granularity", "-g",
                                                help="MatAE-U-Net width fraction (0.125, 0.25, 0.5, 1)"),
    out: Path = typer.Option(Path("outputs"), "--out", "-o", help="Folder for the per-video outputs"),
    no_video: bool = typer.Option(False, "--no-video", help="Skip the overlay video (faster)"),
    threads: int = typer.Option(0, "--threads", min=0, help="Inference threads for ONNX Runtime or OpenVINO (0: the library default)"),
    clean_masks: bool = typer.Option(True, "--clean-masks/--no-clean-masks", help="Largest blob, holes filled, before measuring"),
    roi: str = typer.Option("auto", "--roi", help="Part of the frame the model sees: auto (find the ultrasound "
                            "sector; the whole frame when it fills most of it), full, or x,y,w,h in the input's pixels"),
    save_masks: Optional[str] = typer.Option(None, "--save-masks", metavar="[npz|png]",
                                             help="Write the masks on the input's pixel grid: masks.npz ('masks', "
                                             "frames x H x W uint8, 1 = LV), or with png one PNG per frame (255 = LV)"),
    seconds: float = typer.Option(0.0, "--seconds", min=0.0, help="Stop each input after this many seconds (of video; "
                                  "of wall time for a live source); 0: to its end, or to Ctrl-C for a live source"),
    tta: str = typer.Option("none", "--tta", help="Test-time augmentation: none, or shift3 (each frame and two "
                            "copies moved 4 px diagonally, the model's probabilities averaged; 3x the inference; "
                            "it helps some models and not others: score yours with echo-eval --tta shift3 first)"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log which backend was chosen and why, and timings"),
) -> None:
    """Stream each video through one model session and write its outputs under --out/<video>/."""
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # our own one-line errors replace FFmpeg's noise
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")  # and OpenCV's "[ WARN:0@...] cap_ffmpeg" lines (a full disk)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from echoseg.atomic import Terminated, sigterm_as_interrupt
    from echoseg.clitext import ConsoleLogHandler, console as make_console, tagged
    from echoseg.errors import EchosegError
    from echoseg.runtime.api import run_videos
    from echoseg.runtime.cardiac import describe_ef

    err = make_console(stderr=True)  # user text (file names, errors) printed literally: no rich markup
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s",
                        handlers=[ConsoleLogHandler(err)])  # one line per record, however long
    logging.getLogger("echoseg.runtime.api").setLevel(logging.INFO if verbose else logging.CRITICAL)
    tasks: dict[str, int] = {}
    with Progress(TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=err, transient=True) as bar:
        def progress(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = bar.add_task(name, total=total or None)
            bar.update(tasks[name], completed=done)

        def on_beat(beat: dict) -> None:  # a live source: each beat as it completes
            bar.console.print(f"beat: ED frame {beat['ed_frame']}, ES frame {beat['es_frame']}, "
                              f"EF estimate {beat['ef_estimate_pct']:.1f}%", highlight=False, soft_wrap=True)

        run_errors: list[str] = []
        try:
            with sigterm_as_interrupt():  # kill / timeout / docker stop: clean up like Ctrl-C
                results = run_videos(list(inputs), model=model, backend=backend, batch=batch,
                                     granularity=granularity, out=out, video=not no_video, progress=progress,
                                     threads=threads, errors=run_errors, clean_masks=clean_masks, roi=roi,
                                     save_masks=save_masks, seconds=seconds, on_beat=on_beat, tta=tta)
        except (EchosegError, OSError) as exc:  # no model, --out not writable, a bad option
            err.print(tagged("error:", "red", exc), highlight=False, soft_wrap=True)
            raise typer.Exit(2)
        except KeyboardInterrupt as exc:
            what = "terminated" if isinstance(exc, Terminated) else "interrupted"
            err.print(f"{what}: the video in progress left no partial output; finished ones are kept",
                      highlight=False, soft_wrap=True)
            raise typer.Exit(143 if isinstance(exc, Terminated) else 130)
    if model is not None:  # with no --model, the search already said in one line that it fell back to it
        _say_if_bundled(err, results)
    console = make_console()
    failed = 0
    for r in results:
        if not r.ok:
            failed += 1
            err.print(tagged("failed:", "red", r.error), highlight=False, soft_wrap=True)
            continue
        s = r.summary
        no_ef = (s.get("ef_estimate_pct") or {}).get("value") is None
        # masks empty on (nearly) every frame: that line, not a plain "no beat found"
        ef_text = (s.get("mask_warning") if no_ef else None) or describe_ef(s)
        views = f", test-time views {s['tta']}" if s.get("tta", "none") != "none" else ""
        roi_text = "" if s["roi"]["method"] == "full" else \
            f", {s['roi']['method']} {s['roi']['x']},{s['roi']['y']},{s['roi']['w']},{s['roi']['h']}"
        console.print(f"{r.input}: {s['frames']} frames{roi_text}, {s['processing_fps']:.1f} fps end to end "
                      f"({s['backend']} {s['precision']}{views}), {ef_text} -> {r.out_dir}", highlight=False, soft_wrap=True)
    for line in run_errors:
        err.print(tagged("error:", "red", line), highlight=False, soft_wrap=True)
    if failed:
        err.print(f"{failed} of {len(results)} video(s) failed", highlight=False)
    if failed or run_errors:
        raise typer.Exit(1)


def main() -> None:
    import sys

    sys.argv[1:] = optional_save_masks(sys.argv[1:])
    app()


def optional_save_masks(args: list[str]) -> list[str]:
    """``--save-masks`` with no format after it means npz (Typer options always take a value)."""
    out = list(args)
    for i, a in enumerate(out):
        if a == "--":
            break
        if a == "--save-masks" and (i + 1 == len(out) or out[i + 1] not in ("npz", "png")):
            out[i] = "--save-masks=npz"
    return out


def _say_if_bundled(err, results) -> None:
    """One line when the model that ran is the bundled one (no model given, none found)."""
    from echoseg import pretrained

    for r in results:
        model = (r.summary or {}).get("model") if r.ok else None
        if model and pretrained.FOLDER.resolve() in Path(model).resolve().parents:
            err.print(f"used {pretrained.describe()}", highlight=False, soft_wrap=True)
            return
