"""`echo-export`: checkpoints -> ONNX / FP16 / INT8 / TensorRT exports, and a Triton repository."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Export trained echoseg checkpoints for deployment (ONNX, FP16, INT8, TensorRT, Triton).")


def find_checkpoints(paths: list[Path], runs: Path) -> list[Path]:
    """The checkpoints to export: the given paths, or every runs/*/best.pt."""
    if paths:
        return list(paths)
    return sorted(runs.glob("*/best.pt"))


#: Largest batch an engine profile or Triton config may ask for (far beyond any useful batch).
MAX_PROFILE_BATCH = 4096


def _console(stderr: bool = False):
    from echoseg.clitext import console

    return console(stderr=stderr, highlight=False)  # markup off: user text printed literally


def _error(text: object):
    from echoseg.clitext import tagged

    return tagged("error:", "red", text)


def _human(n: float) -> str:
    for unit in ("B", "K", "M", "G"):
        if n < 1000 or unit == "G":
            return f"{n:.0f}{unit}" if unit in ("B", "K") or n >= 100 else f"{n:.1f}{unit}"
        n /= 1024
    return str(n)


def _summary_table(results) -> "object":
    from rich import box
    from rich.table import Table

    from echoseg.clitext import styled

    from .manifest import MANIFEST, read_manifest

    table = Table(title="sizes, and parity: FP32 max|dlogit| vs PyTorch; FP16/INT8 mask agreement vs FP32",
                  box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    table.add_column("export", no_wrap=True)
    for col in ("onnx", "fp16", "int8", "trt", "fp32 |d|", "fp16", "int8", "gate"):
        table.add_column(col, no_wrap=True)
    for res in results:
        if res.dir is None or not (res.dir / MANIFEST).is_file():
            table.add_row(res.run, *["-"] * 7, styled("FAIL", "red"))
            continue
        man = read_manifest(res.dir)
        sizes = {f["file"]: _human(f["bytes"]) for f in man["files"]}
        for sec in man["exports"]:
            g, files, par = sec["granularity"], sec["files"], sec["parity"]

            def size(kind: str) -> str:
                name = files.get(kind, "")
                return "rejected" if ".rejected." in name else sizes.get(name, "-")

            def num(key: str, field: str, fmt: str) -> str:
                r = par.get(key)
                return format(r[field], fmt) if isinstance(r, dict) and field in r else "-"

            # a file's own gate decides ok/FAIL; an OpenVINO precision that missed only keeps auto off it
            own = [r for k, r in par.items() if isinstance(r, dict) and not k.startswith("openvino_")]
            ok = "error" not in sec and all(r.get("passed") for r in own)
            off = [k.split("_")[1] for k, r in par.items()
                   if k.startswith("openvino_") and isinstance(r, dict) and r.get("passed") is False]
            table.add_row(res.run if g == 1.0 else f"{res.run} g{g:g}", size("fp32"), size("fp16"), size("int8"),
                          size("engine"), num("fp32_vs_torch", "max_abs_logit", ".1e"),
                          num("fp16_vs_fp32", "mask_dice", ".4f"), num("int8_vs_fp32", "mask_dice", ".4f"),
                          styled("ok" + (f" (OpenVINO {'/'.join(off)} off)" if off else ""), "green") if ok else styled("FAIL", "red"))
    return table


@app.command()
def build(
    checkpoints: Optional[List[Path]] = typer.Argument(None, help="Run directories or .pt files (default: every runs/*/best.pt)."),
    fp16: bool = typer.Option(False, "--fp16", help="Also write model.fp16.onnx and, where TensorRT and a GPU exist, model.fp16.engine."),
    int8: bool = typer.Option(False, "--int8", help="Also write model.int8.onnx (static QDQ quantization, in the --int8-form) and, with --int8-form tensorrt where TensorRT and a GPU exist, model.int8.engine."),
    engine: bool = typer.Option(False, "--engine", help="Require the TensorRT engine (implies --fp16); a missing TensorRT or GPU is an error."),
    granularity: List[float] = typer.Option([], "--granularity", "-g", help="matae-unet: also export this nested sub-network as its own smaller model, OUT/RUN/model.gG[.fp16|.int8].onnx (repeatable)."),
    batch: str = typer.Option("1,16,64", "--batch", help="Batch range MIN,OPT,MAX for the engine profile and Triton."),
    out: Path = typer.Option(Path("exports"), "--out", help="Output folder; each run goes to OUT/RUN."),
    calib: int = typer.Option(128, "--calib", min=1, help="INT8 calibration frames."),
    calib_method: str = typer.Option("minmax", "--calib-method", help="INT8 calibration: minmax, entropy or percentile."),
    int8_form: str = typer.Option("cpu", "--int8-form", help="INT8 graph form: cpu (uint8 activations: ONNX Runtime and OpenVINO, fastest on a CPU) or tensorrt (signed, zero-point-0 activations: what TensorRT takes)."),
    parity_frames: int = typer.Option(32, "--parity-frames", min=1, help="Frames the parity gate compares on."),
    no_parity: bool = typer.Option(False, "--no-parity", help="Skip the parity gate (not recommended)."),
    workspace_mb: int = typer.Option(1024, "--workspace-mb", min=16, help="TensorRT builder workspace limit."),
    timing_cache: Optional[Path] = typer.Option(None, "--timing-cache", help="TensorRT timing cache file (default OUT/timing.cache)."),
    runs: Path = typer.Option(Path("runs"), "--runs", help="Where to look for runs when no checkpoint is given."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log library details."),
) -> None:
    """Export checkpoints to ONNX (+FP16, INT8, TensorRT), each gated on parity with PyTorch."""
    from echoseg.atomic import Terminated, check_writable, sigterm_as_interrupt
    from echoseg.clitext import styled

    from .build import BuildOptions, export_checkpoint
    from .int8 import CALIB_METHODS, FORMS
    from .onnx import ExportError
    from .tensorrt import parse_profile

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    console, err = _console(), _console(stderr=True)
    try:
        profile = parse_profile(batch)
        if profile[2] > MAX_PROFILE_BATCH:
            raise ExportError(f"--batch {batch}: MAX {profile[2]} is beyond {MAX_PROFILE_BATCH} frames; "
                              "give MIN,OPT,MAX such as 1,16,64")
        if calib_method not in CALIB_METHODS:
            raise ExportError(f"--calib-method {calib_method!r} is not one of {', '.join(CALIB_METHODS)}")
        if int8_form not in FORMS:
            raise ExportError(f"--int8-form {int8_form!r} is not one of {', '.join(FORMS)}")
    except ExportError as exc:
        err.print(_error(exc), soft_wrap=True)
        raise typer.Exit(2)
    paths = find_checkpoints(list(checkpoints or []), runs)
    if not paths:
        err.print(_error(f"no checkpoint given and no {runs}/*/best.pt found; train one with echo-train "
                         "or pass a run directory or .pt file"), soft_wrap=True)
        raise typer.Exit(2)
    try:
        check_writable(out, "pass a writable --out (or free some space)", create=False)
    except OSError as exc:
        err.print(_error(exc), soft_wrap=True)
        raise typer.Exit(2)
    opts = BuildOptions(out=out, fp16=fp16 or engine, int8=int8, engine=engine, granularities=tuple(granularity),
                        profile=profile, calib_frames=calib, calib_method=calib_method, int8_form=int8_form,
                        parity_frames=parity_frames,
                        parity=not no_parity, workspace_mb=workspace_mb, timing_cache=timing_cache)
    results = []
    try:
        with sigterm_as_interrupt():  # kill / timeout: temp files are removed as on Ctrl-C
            for path in paths:
                console.rule(styled(path, "bold"))  # the path literally (markup is off)
                with console.status(f"exporting {path} ..."):
                    res = export_checkpoint(path, opts, say=lambda line: console.print(f"  {line}", soft_wrap=True))
                for line in res.errors:
                    err.print(_error(line), soft_wrap=True)
                results.append(res)
    except KeyboardInterrupt as exc:
        what = "terminated" if isinstance(exc, Terminated) else "interrupted"
        err.print(f"{what}: the export in progress is incomplete (no manifest.json); run echo-export build again")
        raise typer.Exit(143 if isinstance(exc, Terminated) else 130)
    console.print(_summary_table(results))
    failed = [r.run for r in results if not r.ok]
    if failed:
        from echoseg.clitext import tagged

        err.print(tagged(f"{len(failed)} of {len(results)} exports failed:", "red", ', '.join(failed)))
        raise typer.Exit(1)


@app.command()
def ensemble(
    runs: List[Path] = typer.Argument(..., help="Two or more run directories or .pt files of one model, width and input size (e.g. seeds of one recipe); each keeps its own normalisation."),
    out: Path = typer.Option(..., "--out", help="Run directory to write the ensemble's best.pt into (then: echo-export build OUT)."),
) -> None:
    """Combine runs into one model whose output averages their probabilities (one ONNX graph when exported)."""
    from echoseg.models.checkpoint import CheckpointError
    from echoseg.models.ensemble import combine

    err = _console(stderr=True)
    target = out if out.suffix == ".pt" else out / "best.pt"
    if any(Path(r).resolve() in (out.resolve(), target.resolve()) for r in runs):
        err.print(_error(f"--out {out} is one of the runs; write the ensemble to a new folder"), soft_wrap=True)
        raise typer.Exit(2)
    try:
        path = combine(runs, out)
    except CheckpointError as exc:
        err.print(_error(exc), soft_wrap=True)
        raise typer.Exit(2)
    except OSError as exc:
        err.print(_error(f"{exc.filename or out}: cannot write ({exc.strerror or exc}); pass a writable --out"),
                  soft_wrap=True)
        raise typer.Exit(2)
    _console().print(f"{path}: an ensemble of {len(runs)} ({', '.join(str(r) for r in runs)}); "
                     f"export it with echo-export build {out}", soft_wrap=True)


@app.command()
def triton(
    export_dirs: Optional[List[Path]] = typer.Argument(None, help="Export directories (default: every one under --exports)."),
    out: Path = typer.Option(Path("model_repository"), "--out", help="Triton model repository to write."),
    exports: Path = typer.Option(Path("exports"), "--exports", help="Where to look when no directory is given."),
) -> None:
    """Write a Triton Inference Server model repository from export directories."""
    from rich.table import Table

    from .triton import export_dirs_under, write_repository

    console, err = _console(), _console(stderr=True)
    dirs: list[Path] = []
    for d in (export_dirs or [exports]):
        found = export_dirs_under(d)
        if not found:
            err.print(_error(f"{d}: no manifest.json here or below; export first with echo-export build"),
                      soft_wrap=True)
            raise typer.Exit(2)
        dirs.extend(found)
    errors: list[str] = []
    models = write_repository(dirs, out, errors)
    for line in errors:
        err.print(_error(line), soft_wrap=True)
    table = Table(title=f"Triton repository {out}")
    for col in ("model", "platform", "max batch", "from"):
        table.add_column(col)
    for m in models:
        table.add_row(m.name, m.platform, str(m.max_batch_size), str(m.source))
    console.print(table)
    if models:
        console.print(f"serve with: tritonserver --model-repository {out.resolve()}")
    if errors:
        raise typer.Exit(1)


def main() -> None:
    """Entry point of the echo-export command."""
    app()


if __name__ == "__main__":
    main()
