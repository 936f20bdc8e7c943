"""echo-synth: write a synthetic dataset in the exact EchoNet-Dynamic layout."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def synth(
    out: Path = typer.Argument(..., help="Folder to write FileList.csv, VolumeTracings.csv and Videos/ into"),
    videos: int = typer.Option(40, "--videos", min=1, help="Number of videos (70% TRAIN, 15% VAL, 15% TEST)"),
    frames: int = typer.Option(96, "--frames", min=8, help="Frames per video (50 fps)"),
    seed: int = typer.Option(0, "--seed", help="Seed: the same seed writes the same dataset"),
    style: str = typer.Option("classic", "--style", help="classic: simple and fast (tests, demo); echo: imaged "
                              "like a scanner (speckle, depth gain, dropout, valves...), for models meant for real echo "
                              "(the first bundled model's data); echo2: its second version (wider pose, fan, gain and "
                              "speckle; darker RV/LA, haze, chords); echo3: echo with atria up to twice the usual size, so the "
                              "largest dark chamber is not always the LV; echo4: echo3 with a hazy LV's haze reaching from the apex "
                              "only part of the way to the valve; echo5: echo3 with a grey inner wall outside the mask "
                              "that widens towards ES (an experiment)"),
    layout: str = typer.Option("echonet", "--layout", help="echonet: Videos/ + FileList.csv + VolumeTracings.csv "
                               "(ED/ES traced); frames: train|val|test/images|masks/ PNGs with exact masks"),
    every: int = typer.Option(4, "--every", min=1, help="frames layout: keep every N-th frame of each video"),
    workers: int = typer.Option(1, "--workers", min=1, help="frames layout: render videos in this many processes "
                                "(the same files for any number)"),
) -> None:
    """Synthesise apical four-chamber echo videos with ED/ES tracings and true EF."""
    from rich.progress import Progress

    from echoseg.data.synthetic import STYLES, write_dataset, write_frames
    from echoseg.errors import EchosegError

    if style not in STYLES:
        raise typer.BadParameter(f"unknown style {style!r}; use one of {', '.join(STYLES)}", param_hint="--style")
    if layout not in ("echonet", "frames"):
        raise typer.BadParameter(f"unknown layout {layout!r}; use echonet or frames", param_hint="--layout")
    with Progress(transient=True) as bar:
        task = bar.add_task("synthesising", total=videos)
        tick = lambda i, n: bar.update(task, completed=i)  # noqa: E731
        try:
            if layout == "frames":
                write_frames(out, videos=videos, frames=frames, seed=seed, every=every, style=style, progress=tick,
                             workers=workers)
            else:
                write_dataset(out, videos=videos, frames=frames, seed=seed, style=style, progress=tick)
        except (EchosegError, OSError) as exc:  # any echoseg error, an existing or unwritable folder: one line
            typer.echo(f"echo-synth: {exc}", err=True)
            raise typer.Exit(2)
    what = f"every {every}th frame of " if layout == "frames" else ""
    typer.echo(f"wrote {what}{videos} {style} videos x {frames} frames to {out}")


def main() -> None:
    app()
