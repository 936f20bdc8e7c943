"""Benchmark rows out: rich tables, bench.csv, bench.json (with the environment), accuracy-vs-latency PNG.

Every file is written under a temporary name and renamed when complete. Missing figures
(no GPU, no reference, no labelled data) are None in JSON and "n/a" in the CSV and tables.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Any, Iterable

from echoseg import atomic

#: bench.csv columns, in order (units in the names; CPU % is top-style, 100 = one core).
COLUMNS = (
    "model", "arch", "granularity", "backend", "precision", "batch", "device",
    "latency_ms_p50", "latency_ms_p95", "latency_ms_p99", "latency_ms_mean", "throughput_fps",
    "video_s", "video_model_s", "video_frames", "cold_start_s", "import_s",
    "rss_mb_avg", "rss_mb_peak", "cpu_pct_avg", "cpu_pct_peak", "cpu_machine_pct_avg",
    "gpu_util_pct_avg", "gpu_util_pct_peak", "gpu_mem_mb_avg", "gpu_mem_mb_peak", "gpu_mem_scope",
    "gpu_device", "artifact_mb", "macs_per_frame", "dice_vs_ref", "dice_gt", "iou_gt", "pixel_accuracy_gt", "gt_frames",
    "gt_source", "repeats", "timed_s", "artifact",
)
SKIPPED_COLUMNS = ("model", "backend", "precision", "granularity", "batch", "reason")

_KEY = ("model", "granularity", "backend", "precision", "batch")
SPEED = _KEY + ("device", "latency_ms_p50", "latency_ms_p95", "latency_ms_p99", "throughput_fps", "video_s",
                "video_model_s", "cold_start_s")
RESOURCES = _KEY + ("rss_mb_avg", "rss_mb_peak", "cpu_pct_avg", "cpu_pct_peak", "gpu_util_pct_avg",
                    "gpu_util_pct_peak", "gpu_mem_mb_peak", "gpu_mem_scope", "artifact_mb", "macs_per_frame", "dice_vs_ref",
                    "dice_gt", "iou_gt", "pixel_accuracy_gt")
HEADERS = {
    "model": "model", "granularity": "g", "backend": "backend", "precision": "prec", "batch": "batch",
    "device": "device", "latency_ms_p50": "p50 ms", "latency_ms_p95": "p95 ms", "latency_ms_p99": "p99 ms",
    "throughput_fps": "frames/s", "video_s": "video s", "video_model_s": "model s", "cold_start_s": "cold s", "rss_mb_avg": "RSS avg MB",
    "rss_mb_peak": "RSS peak MB", "cpu_pct_avg": "CPU avg %", "cpu_pct_peak": "CPU peak %",
    "gpu_util_pct_avg": "GPU avg %", "gpu_util_pct_peak": "GPU peak %", "gpu_mem_mb_peak": "GPU MB", "gpu_mem_scope": "GPU mem scope",
    "artifact_mb": "size MB", "macs_per_frame": "MMAC/frame", "dice_vs_ref": "Dice ref",
    "dice_gt": "Dice GT", "iou_gt": "IoU GT", "pixel_accuracy_gt": "Acc GT",
}
_DIGITS = {"latency_ms": 3, "throughput_fps": 1, "video_s": 3, "video_model_s": 3, "cold_start_s": 2, "rss_mb": 0, "cpu_pct": 1,
           "gpu_util": 1, "gpu_mem": 0, "artifact_mb": 2, "dice": 4, "iou": 4, "pixel_accuracy": 4}


def clean(value: Any) -> Any:
    """NaN/inf -> None, recursively, so bench.json is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value


def cell(key: str, value: Any) -> str:
    """A value as the tables show it: rounded by unit, "n/a" when missing."""
    value = clean(value)
    if value is None or value == "":
        return "n/a"
    if key == "macs_per_frame":
        return f"{value / 1e6:.1f}"
    if key == "granularity":
        return f"{value:g}"
    if isinstance(value, float):
        digits = next((d for prefix, d in _DIGITS.items() if key.startswith(prefix)), 3)
        return f"{value:.{digits}f}"
    return str(value)


def write_csv(path: str | os.PathLike, rows: Iterable[dict[str, Any]]) -> Path:
    with atomic.atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(COLUMNS)
        for r in rows:
            w.writerow(["n/a" if clean(r.get(c)) is None else clean(r.get(c)) for c in COLUMNS])
    return Path(path)


def write_json(path: str | os.PathLike, rows: list[dict[str, Any]], skipped: list[dict[str, Any]],
               environment: dict[str, Any], settings: dict[str, Any], notes: list[str] | None = None) -> Path:
    doc = clean({"environment": environment, "settings": settings, "columns": list(COLUMNS), "rows": rows,
                 "skipped": skipped, "notes": notes or []})
    return atomic.write_json(path, doc)


def accuracy_metric(rows: list[dict[str, Any]]) -> str | None:
    """dice_gt when every row has it, else dice_vs_ref when every row has it, else the better covered."""
    counts = {k: sum(clean(r.get(k)) is not None for r in rows) for k in ("dice_gt", "dice_vs_ref")}
    if not rows or not any(counts.values()):
        return None
    for k in ("dice_gt", "dice_vs_ref"):
        if counts[k] == len(rows):
            return k
    return max(counts, key=counts.get)


def point_label(r: dict[str, Any]) -> str:
    g = "" if r.get("granularity") in (None, 1.0) else f" g{r['granularity']:g}"
    return f"{r['model']}{g} {r['backend']} {r['precision']} b{r['batch']}"


def ran_as(r: dict[str, Any]) -> str:
    """The precision a row computed in: an FP16 graph on ONNX Runtime's CPU provider runs in FP32."""
    if r.get("precision") == "fp16" and r.get("backend") == "onnxruntime" and "CUDA" not in str(r.get("device", "")) \
            and "Tensorrt" not in str(r.get("device", "")):
        return "fp16 graph, ran in fp32"
    return str(r.get("precision"))


def ms_tick(value: float) -> str:
    """A latency axis tick as plain milliseconds: 0.5, 2, 20 (matplotlib's log default prints 2x10^0)."""
    return f"{value:g}"


def _series(rows: list[dict[str, Any]], metric: str) -> dict[tuple[str, str, str], list[tuple[float, float, str]]]:
    """(model, backend, batch) -> points (latency, accuracy, 'g/precision' label), fastest first."""
    out: dict[tuple[str, str, str], list[tuple[float, float, str]]] = {}
    for r in rows:
        x, y = clean(r.get("latency_ms_p50")), clean(r.get(metric))
        if x is None or y is None:
            continue
        g = r.get("granularity") or 1.0
        key = (str(r["model"]), str(r["backend"]), f"b{r.get('batch')}")
        out.setdefault(key, []).append((float(x), float(y), f"g{g:g} {ran_as(r)}"))
    return {k: sorted(v) for k, v in sorted(out.items())}


def write_plot(path: str | os.PathLike, rows: list[dict[str, Any]], title: str = "",
               cpu_features: Iterable[str] = ()) -> Path | None:
    """Accuracy against per-frame p50 latency: one line per (model, backend, batch) through its
    granularities and precisions, each point labelled; None when no row has an accuracy."""
    metric = accuracy_metric(rows)
    if metric is None:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    styles = {"torch": "--", "onnxruntime": "-", "openvino": "-.", "tensorrt": ":"}
    series = _series(rows, metric)
    fig, ax = plt.subplots(figsize=(9, 6))
    ys: list[float] = []
    for (model, backend, batch), pts in series.items():
        xs, yv = [p[0] for p in pts], [p[1] for p in pts]
        ax.plot(xs, yv, styles.get(backend, "-"), marker="o", ms=5, label=f"{model} {backend} {batch}")
        for x, y, lab in pts:
            ax.annotate(lab, (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7)
        ys += yv
    ax.set_xscale("log")
    ms = FuncFormatter(lambda v, _: ms_tick(v))
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(ms)
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("latency per frame, p50 (ms, log scale)")
    ax.set_ylabel({"dice_gt": "Dice vs ground truth", "dice_vs_ref": "mask Dice vs PyTorch FP32"}[metric])
    if ys:
        ax.set_ylim(max(0.0, min(ys) - 0.05) - 0.01, min(1.0, max(ys)) + 0.03)
    shown = sum(len(v) for v in series.values())
    missing = len(rows) - shown
    feats = ", ".join(cpu_features) or "none of AVX512-VNNI/BF16/FP16, AMX found"
    ax.set_title((title or "accuracy vs latency") + (f" ({missing} rows without a figure)" if missing else "")
                 + f"\nCPU features: {feats}", fontsize=9)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right", ncol=1 if len(series) <= 8 else 2)
    fig.tight_layout()
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    out = Path(path)
    plt.close(fig)
    return out


def write_report(out_dir: str | os.PathLike, rows: list[dict[str, Any]], skipped: list[dict[str, Any]],
                 environment: dict[str, Any], settings: dict[str, Any],
                 notes: list[str] | None = None) -> dict[str, Path]:
    """bench.csv, bench.json and bench.png in out_dir; returns what was written."""
    out = Path(out_dir)
    files = {"csv": write_csv(out / "bench.csv", rows),
             "json": write_json(out / "bench.json", rows, skipped, environment, settings, notes)}
    plot = write_plot(out / "bench.png", rows, f"echo-bench compare on {environment.get('cpu', '?')}"
                      f"{'' if environment.get('gpu') in (None, 'none') else ' + ' + environment['gpu']}",
                      environment.get("cpu_features") or ())
    if plot is not None:
        files["png"] = plot
    return files


def rich_table(rows: list[dict[str, Any]], keys: tuple[str, ...], title: str = ""):
    from rich.table import Table

    t = Table(title=title, show_lines=False, header_style="bold")
    for k in keys:
        t.add_column(HEADERS.get(k, k), justify="left" if k in ("model", "backend", "precision", "device")
                     else "right", no_wrap=k in ("model",))
    for r in rows:
        t.add_row(*[cell(k, r.get(k)) for k in keys])
    return t


def skipped_table(skipped: list[dict[str, Any]]):
    from rich.table import Table

    t = Table(title="skipped (not run here)", header_style="bold")
    for k in SKIPPED_COLUMNS:
        t.add_column(k, overflow="fold")
    for s in skipped:
        t.add_row(*[cell(k, s.get(k)) if k != "reason" else str(s.get(k)) for k in SKIPPED_COLUMNS])
    return t
