"""`echo-bench table1`: the paper's Table 1 for one model and backend, with the paper's figures beside ours.

Per-video inference time is the whole video through echo-run's own streaming loop
(runtime/stream.py: decode, preprocess, infer, masks at the video's size), so it is the time
echo-run takes on that video; the time inside the model (Session.run) is shown beside it.
Memory, CPU and GPU figures cover those video passes, measured in a separate worker process;
GPU figures come from NVML for a GPU backend only, on the device it uses.
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

#: The paper's Table 1 (U-Net video inference on an NVIDIA T4), every figure exactly as printed.
PAPER_GPU = "NVIDIA T4"
PAPER = {"video_s_mean": "1.146", "rss_mb_avg": "897.34", "rss_mb_peak": "897.352", "cpu_pct_avg": "50.77",
         "cpu_pct_peak": "55.48", "gpu_util_pct_avg": "1.37", "gpu_util_pct_peak": "1.37"}

#: (row name as in the paper, our field, format); "model only" is ours: the time inside Session.run
ROWS = (
    ("Inference Time (s)", "video_s_mean", "{:.3f}"),
    ("  of which model only (s)", "video_model_s_mean", "{:.3f}"),
    ("Average Memory Usage (MB)", "rss_mb_avg", "{:.2f}"),
    ("Peak Memory Usage (MB)", "rss_mb_peak", "{:.2f}"),
    ("Average CPU Usage (%)", "cpu_pct_avg", "{:.2f}"),
    ("Peak CPU Usage (%)", "cpu_pct_peak", "{:.2f}"),
    ("Average GPU Usage (%)", "gpu_util_pct_avg", "{:.2f}"),
    ("Peak GPU Usage (%)", "gpu_util_pct_peak", "{:.2f}"),
)
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
    """The paper's rows: (name, our figure, the paper's figure as printed, or an em dash where it has none)."""
    return [(name, fmt(row.get(key), pattern), PAPER.get(key, DASH)) for name, key, pattern in ROWS]


def resolve_model(model: str | None, backend: str, exports_dir: str = "exports",
                  runs_dir: str = "runs") -> tuple[str, str, str]:
    """(artifact file, backend, label) for --model/--backend.

    With no model: a U-Net export (the paper's Table 1 model) before others, FP32, full width;
    with backend auto: TensorRT, then ONNX Runtime, then PyTorch.
    """
    from echoseg.backends import registry

    # table1's auto order: auto's (rank), except where a record sets table1_rank (OpenVINO after ONNX Runtime)
    ranked = sorted(registry.all_backends(), key=lambda b: (b.rank if b.table1_rank is None else b.table1_rank, b.name))
    order = {b.name: i for i, b in enumerate(ranked)}  # --backend openvino for its row
    backends = tuple(order) if backend == "auto" else (backend,)
    plan = discover([model] if model else None, exports_dir, runs_dir, backends)
    if not plan.targets:
        why = "; ".join(sorted({s.reason for s in plan.skipped}))
        raise BenchError(f"no model to run with backend {backend} in {model or f'{exports_dir}/ or {runs_dir}/'}"
                         f"{' (' + why + ')' if why else ''}; pass --model PATH (an export, run, .onnx or .pt)")
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
    notes.append(f"inference time: mean of {row['video_passes']} passes over {row['video_frames']} frames through "
                 f"echo-run's streaming loop (min {row['video_s_min']:.3f} s, max {row['video_s_max']:.3f} s), "
                 f"batch {batch}; model only {row['video_model_s_mean']:.3f} s of it")
    notes.append(f"CPU %: 100 = one core (top-style), {row['cores']} logical cores here; "
                 f"machine-normalised average {row['cpu_machine_pct_avg']:.1f} %")
    if row.get("gpu_util_pct_avg") is None:
        why = "a CPU backend" if not row.get("gpu_device") else "NVML gave no reading"
        notes.append(f"GPU: n/a ({why}; NVML is read only for GPU backends)")
    else:
        notes.append(f"GPU: NVML device {row.get('gpu_device')}; GPU memory scope: {row.get('gpu_mem_scope')} "
                     "(process = this process tree's own, device = the whole GPU's used memory)")
    notes.append(f"paper: {PAPER_GPU}")
    return Table1Result(row, table_lines(row), artifact, label, be, video or "synthetic", notes)
