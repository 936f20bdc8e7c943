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
) -> None:
    """Synthesise apical four-chamber echo videos with ED/ES tracings and true EF."""
    from rich.progress import Progress

    from echoseg.data.synthetic import write_dataset

    with Progress(transient=True) as bar:
        task = bar.add_task("synthesising", total=videos)
        write_dataset(out, videos=videos, frames=frames, seed=seed,
                      progress=lambda i, n: bar.update(task, completed=i))
    typer.echo(f"wrote {videos} videos x {frames} frames to {out}")


def main() -> None:
    app()
