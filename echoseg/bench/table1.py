"""`echo-bench table1`: the paper's Table 1 for one model and backend, with the paper's figures beside ours.

Per-video inference time is the whole video through the session (decode + preprocess +
infer + threshold), as the paper times video inference; memory, CPU and GPU figures cover
those video passes, measured in a separate worker process.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .compare import BenchError, run_worker, synthetic_inputs
from .targets import discover
from .worker import WorkerConfig

log = logging.getLogger(__name__)

#: The paper's Table 1 (U-Net video inference on an NVIDIA T4). It gives single figures for
#: memory, CPU and GPU; we place them on the "Average" rows and leave the "Peak" rows empty.
PAPER_GPU = "NVIDIA T4"
PAPER = {"video_s": 1.146, "rss_mb_avg": 897.0, "cpu_pct_avg": 50.8, "gpu_util_pct_avg": 1.37}

#: (row name as in the paper, our field, format)
ROWS = (
    ("Inference Time (s)", "video_s_mean", "{:.3f}"),
    ("Average Memory Usage (MB)", "rss_mb_avg", "{:.0f}"),
    ("Peak Memory Usage (MB)", "rss_mb_peak", "{:.0f}"),
    ("Average CPU Usage (%)", "cpu_pct_avg", "{:.1f}"),
    ("Peak CPU Usage (%)", "cpu_pct_peak", "{:.1f}"),
    ("Average GPU Usage (%)", "gpu_util_pct_avg", "{:.2f}"),
    ("Peak GPU Usage (%)", "gpu_util_pct_peak", "{:.2f}"),
)
_PAPER_FIELD = {"video_s_mean": "video_s", "rss_mb_avg": "rss_mb_avg", "cpu_pct_avg": "cpu_pct_avg",
                "gpu_util_pct_avg": "gpu_util_pct_avg"}
DASH = "\u2014"


@dataclass
class Table1Result:
    row: dict[str, Any]  # the worker's full measurement
    lines: list[tuple[str, str, str]]  # (name, ours, paper)
    model: str  # the artifact file
    label: str  # its export / run name
    backend: str
    video: str
    notes: list[str] = field(default_factory=list)


def fmt(value: Any, pattern: str) -> str:
    return "n/a" if value is None else pattern.format(value)


def table_lines(row: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The paper's rows: (name, our figure, the paper's figure or an em dash)."""
    out = []
    for name, key, pattern in ROWS:
        paper = PAPER.get(_PAPER_FIELD.get(key, ""))
        out.append((name, fmt(row.get(key), pattern), DASH if paper is None else pattern.format(paper)))
    return out


def resolve_model(model: str | None, backend: str, exports_dir: str = "exports",
                  runs_dir: str = "runs") -> tuple[str, str, str]:
    """(artifact file, backend, label) for --model/--backend.

    With no model: a U-Net export (the paper's Table 1 model) before others, FP32, full width;
    with backend auto: TensorRT, then ONNX Runtime, then PyTorch.
    """
    backends = ("tensorrt", "onnxruntime", "torch") if backend == "auto" else (backend,)
    plan = discover([model] if model else None, exports_dir, runs_dir, backends, ("fp32", "fp16", "int8"))
    if not plan.targets:
        why = "; ".join(sorted({s.reason for s in plan.skipped}))
        raise BenchError(f"no model to run with backend {backend} in {model or f'{exports_dir}/ or {runs_dir}/'}"
                         f"{' (' + why + ')' if why else ''}; pass --model PATH (an export, run, .onnx or .pt)")
    order = {"tensorrt": 0, "onnxruntime": 1, "torch": 2}
    best = min(plan.targets, key=lambda t: (model is None and t.arch != "unet", order[t.backend],
                                            t.precision != "fp32", -t.granularity, t.model))
    return best.artifact, best.backend, best.model


def run_table1(video: str | None, model: str | None = None, backend: str = "auto", repeats: int = 5,
               batch: int = 1, warmup: int = 5, synthetic_frames: int = 112, threads: int = 0,
               device: str = "auto", exports_dir: str = "exports", runs_dir: str = "runs",
               timeout_s: float = 600.0) -> Table1Result:
    """Measure one model on one video in a fresh process and lay it out as the paper's Table 1."""
    if repeats < 1:
        raise BenchError(f"--repeats must be >= 1, got {repeats}")
    artifact, be, label = resolve_model(model, backend, exports_dir, runs_dir)
    work = Path(tempfile.mkdtemp(prefix=".table1-"))
    notes = []
    try:
        if video is None:
            video_path, _ = synthetic_inputs(work, synthetic_frames, seed=7)
            notes.append(f"video: synthetic, {synthetic_frames} frames of 112x112 at 50 fps")
        else:
            if not Path(video).is_file():
                raise BenchError(f"{video}: no such video file")
            video_path = video
        cfg = WorkerConfig(artifact=artifact, backend=be, videos=[video_path], batch=batch, mode="table1",
                           warmup=warmup, video_repeats=repeats, threads=threads, device=device)
        row, why = run_worker(cfg, timeout_s)
        if row is None:
            raise BenchError(f"{artifact} with {be}: {why}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    notes.append(f"inference time: mean of {row['video_passes']} passes over {row['video_frames']} frames "
                 f"(min {row['video_s_min']:.3f} s, max {row['video_s_max']:.3f} s), batch {batch}")
    notes.append(f"CPU %: 100 = one core (top-style), {row['cores']} logical cores here; "
                 f"machine-normalised average {row['cpu_machine_pct_avg']:.1f} %")
    if row.get("gpu_util_pct_avg") is None:
        notes.append("GPU: n/a (no NVIDIA GPU or NVML here)")
    notes.append(f"paper: {PAPER_GPU}; it reports memory, CPU and GPU as single figures (shown as averages)")
    return Table1Result(row, table_lines(row), artifact, label, be, video or "synthetic", notes)
