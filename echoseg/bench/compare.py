"""`echo-bench compare`: every (model, granularity, backend, precision, batch), each in its own process.

The parent runs no model: it plans the targets (asking the backend registry's cheap checks, and
OpenVINO whether the CPU has BF16; a run directory without an export is read with torch to learn
its model), writes the inputs (a synthetic video with its truth masks, or labelled frames from
--data), asks one reference worker per checkpoint for the PyTorch FP32 masks and MACs, then runs
one measuring worker per configuration and joins the rows with the accuracy against the
reference and the truth.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .targets import Plan, Skipped, Target, bench_order, bench_precisions, discover, reference_backend
from .inference import load_masks
from .worker import WorkerConfig

from echoseg.errors import EchosegError

log = logging.getLogger(__name__)


class BenchError(EchosegError, RuntimeError):
    """A benchmark that cannot start as asked (no models, no video, bad option)."""


@dataclass
class CompareOptions:
    sources: list[str] = field(default_factory=list)  # export dirs, run dirs, model files; empty = discover
    names: list[str] = field(default_factory=list)  # keep these model labels / architectures
    videos: list[str] = field(default_factory=list)  # empty = one synthetic video
    data: str = ""  # labelled frames for Dice/IoU/accuracy against truth
    split: str = "test"
    gt_frames: int = 200
    backends: tuple[str, ...] = field(default_factory=bench_order)  # every registered backend
    precisions: tuple[str, ...] = field(default_factory=bench_precisions)  # every precision one is planned at
    batches: tuple[int, ...] = (1,)
    granularities: tuple[float, ...] = ()
    exports_dir: str = "exports"
    runs_dir: str = "runs"
    out: str = "bench-out"
    synthetic_frames: int = 48
    synthetic_seed: int = 7
    warmup: int = 5
    min_repeats: int = 20
    min_seconds: float = 1.5
    video_repeats: int = 2
    threads: int = 0
    device: str = "auto"
    interval_s: float = 0.05
    timeout_s: float = 300.0


@dataclass
class CompareResult:
    rows: list[dict[str, Any]]
    skipped: list[Skipped]
    settings: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def run_worker(cfg: WorkerConfig, timeout_s: float = 300.0) -> tuple[dict[str, Any] | None, str]:
    """Run one worker process; (row, "") on success, (None, reason) otherwise."""
    cmd = [sys.executable, "-m", "echoseg.bench.worker", "--config", cfg.to_json()]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return None, f"took longer than {timeout_s:.0f} s; raise --timeout or lower --min-seconds"
    lines = [ln for ln in proc.stdout.strip().splitlines() if ln.startswith("{")]
    if lines:
        try:
            row = json.loads(lines[-1])
        except json.JSONDecodeError:
            row = None
        if isinstance(row, dict):
            if "error" in row:
                return None, str(row["error"])
            if proc.returncode == 0:
                return row, ""
    err = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    return None, f"worker failed (exit {proc.returncode}): {err[-1] if err else 'no message'}"


def synthetic_inputs(work: Path, frames: int, seed: int) -> tuple[str, str]:
    """Write a synthetic video and its truth (npz of the decoded frames and exact LV masks)."""
    from echoseg.data.synthetic import make_video
    from echoseg.data.video import read_video, write_video

    v = make_video(seed, frames=frames)
    video = write_video(work / "synthetic.avi", v.frames, v.fps)
    gt = work / "gt_synthetic.npz"
    np.savez(gt, images=read_video(video), masks=v.masks)
    return str(video), str(gt)


def data_inputs(work: Path, data: str, split: str, size: tuple[int, int], limit: int) -> tuple[str, int]:
    """Labelled frames of --data at model size, saved for the workers; (npz path, frames)."""
    from echoseg.data.dataset import load_split

    fs = load_split(data, split, size=size)
    n = len(fs.images)
    if n == 0:
        raise BenchError(f"{data}: split {split!r} has no labelled frames; pick another with --split")
    idx = np.linspace(0, n - 1, min(n, limit)).round().astype(int) if limit and n > limit else np.arange(n)
    gt = work / f"gt_{split}_{size[0]}x{size[1]}.npz"
    np.savez(gt, images=fs.images[idx], masks=fs.masks[idx])
    return str(gt), len(idx)


def _references(plan: Plan, opts: CompareOptions, videos: list[str], work: Path,
                progress: Callable[[str], None]) -> tuple[dict[tuple[str, float], dict[str, Any]], list[str]]:
    """PyTorch FP32 masks and MACs per (checkpoint, granularity), one worker per checkpoint."""
    refs: dict[tuple[str, float], dict[str, Any]] = {}
    notes: list[str] = []
    by_ckpt: dict[str, set[float]] = {}
    for t in plan.targets:
        if t.checkpoint:
            by_ckpt.setdefault(t.checkpoint, set()).add(t.granularity)
    for i, (ckpt, gs) in enumerate(sorted(by_ckpt.items())):
        progress(f"reference: PyTorch FP32 on {ckpt} (granularities {', '.join(f'{g:g}' for g in sorted(gs))})")
        cfg = WorkerConfig(artifact=ckpt, backend=reference_backend(), videos=videos, mode="reference",
                           granularities=sorted(gs), batch=16, masks_out=str(work / f"ref{i}_g{{g}}.npz"),
                           macs=True, threads=opts.threads)
        row, why = run_worker(cfg, opts.timeout_s)
        if row is None:
            notes.append(f"no PyTorch reference for {ckpt}: {why}")
            continue
        for ref in row["references"]:
            refs[(ckpt, float(ref["granularity"]))] = ref
    return refs, notes


def run_compare(opts: CompareOptions, progress: Callable[[str], None] | None = None) -> CompareResult:
    """Plan, measure every configuration in its own process, and join accuracy; no files written."""
    progress = progress or (lambda msg: log.info(msg))
    bad = [b for b in opts.batches if b < 1]
    if bad:
        raise BenchError(f"batch sizes must be >= 1, got {bad}")
    plan = discover(opts.sources, opts.exports_dir, opts.runs_dir, opts.backends, opts.precisions,
                    opts.granularities, opts.names)
    if not plan.targets:
        where = ", ".join(opts.sources) if opts.sources else f"{opts.exports_dir}/ or {opts.runs_dir}/"
        reasons = "; ".join(sorted({s.reason for s in plan.skipped}))[:400]
        raise BenchError(f"nothing to benchmark in {where}{' (' + reasons + ')' if reasons else ''}; "
                         "train with echo-train and export with echo-export, or pass --models PATH")
    work = Path(tempfile.mkdtemp(prefix=".bench-", dir=_ensure(opts.out)))
    try:
        return _run(plan, opts, work, progress)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _ensure(out: str) -> str:
    os.makedirs(out, exist_ok=True)
    return out


def _run(plan: Plan, opts: CompareOptions, work: Path, progress: Callable[[str], None]) -> CompareResult:
    videos, gt_path, gt_source, gt_n = list(opts.videos), "", "", 0
    for v in videos:
        if not Path(v).is_file():
            raise BenchError(f"{v}: no such video; give an existing file or use --synthetic")
    if not videos:
        video, gt_path = synthetic_inputs(work, opts.synthetic_frames, opts.synthetic_seed)
        videos, gt_source, gt_n = [video], "synthetic", opts.synthetic_frames
    if opts.data:  # loaded once at 112x112; a worker resizes the truth if its model's size differs
        gt_path, gt_n = data_inputs(work, opts.data, opts.split, (112, 112), opts.gt_frames)
        gt_source = f"{Path(opts.data).name}:{opts.split}"
    refs, notes = _references(plan, opts, videos, work, progress)
    rows: list[dict[str, Any]] = []
    skipped = list(plan.skipped)
    configs = [(t, b) for t in plan.targets for b in opts.batches]
    for i, (t, batch) in enumerate(configs, 1):
        progress(f"[{i}/{len(configs)}] {t.model} g={t.granularity:g} {t.backend} {t.precision} batch {batch}")
        masks = work / f"run{i}.npz"
        cfg = WorkerConfig(artifact=t.artifact, backend=t.backend, videos=videos, precision=t.precision,
                           batch=batch, granularity=t.granularity if _takes_granularity(t.backend) else None,
                           device=opts.device, threads=opts.threads, warmup=opts.warmup,
                           min_repeats=opts.min_repeats, min_seconds=opts.min_seconds,
                           video_repeats=opts.video_repeats, interval_s=opts.interval_s,
                           masks_out=str(masks), gt_path=gt_path)
        row, why = run_worker(cfg, opts.timeout_s)
        if row is None:
            skipped.append(Skipped(t.model, t.backend, t.precision, why, t.granularity, batch))
            progress(f"    skipped: {why}")
            continue
        rows.append(_join(t, batch, row, refs.get((t.checkpoint, t.granularity)), masks, gt_source))
    from .report import ran_as

    upcast = sorted({f"{r['model']} g{r['granularity']:g}" for r in rows if ran_as(r) != r.get("precision")})
    if upcast:
        notes.append(f"FP16 graphs ran in FP32 (ONNX Runtime's CPU provider upcasts them; no speed-up expected): "
                     f"{', '.join(upcast)}")
    settings = {k: v for k, v in vars(opts).items()}
    settings.update(videos=[Path(v).name for v in videos], gt_source=gt_source, gt_frames=gt_n)
    return CompareResult(rows, skipped, settings, notes)


def _takes_granularity(backend: str) -> bool:
    """Whether the worker passes a granularity to this backend (one that slices a checkpoint; files carry theirs)."""
    from echoseg.backends import registry

    return "granularity" in registry.get(backend).bench_options


def _join(t: Target, batch: int, row: dict[str, Any], ref: dict[str, Any] | None, masks: Path,
          gt_source: str) -> dict[str, Any]:
    from echoseg.train.metrics import mask_agreement

    out: dict[str, Any] = {"model": t.model, "arch": row.get("arch", t.arch), "granularity": t.granularity,
                           "backend": t.backend, "precision": t.precision, "batch": batch,
                           "artifact": t.artifact, "artifact_mb": t.artifact_mb}
    out.update({k: v for k, v in row.items() if k not in ("granularity", "precision", "arch")})
    out["macs_per_frame"] = row.get("macs_per_frame") or (ref or {}).get("macs_per_frame") or t.macs_per_frame
    out["dice_vs_ref"] = None
    if ref is not None and masks.is_file():
        mine, theirs = load_masks(masks), load_masks(ref["masks"])
        if mine.shape == theirs.shape:
            out["dice_vs_ref"] = mask_agreement(mine, theirs)
    out["gt_source"] = gt_source if "dice_gt" in row else ""
    return out
