"""Report: the CSV/JSON columns and files, strict JSON, the accuracy-vs-latency plot, table cells."""

from __future__ import annotations

import csv
import json
import math

import pytest

from echoseg.bench.report import (COLUMNS, RESOURCES, SPEED, accuracy_metric, cell, clean, rich_table, write_csv,
                                  write_json, write_plot, write_report)


def _row(i: int, **kw) -> dict:
    r = {"model": f"m{i}", "arch": "unet", "granularity": 1.0, "backend": "onnxruntime", "precision": "fp32",
         "batch": 1, "device": "CPUExecutionProvider", "latency_ms_p50": 2.0 * (i + 1), "latency_ms_p95": 3.0,
         "latency_ms_p99": 4.0, "throughput_fps": 400.0, "rss_mb_avg": 90.0, "rss_mb_peak": 95.5,
         "cpu_pct_avg": 98.76, "gpu_util_pct_avg": None, "macs_per_frame": 146_530_000,
         "dice_vs_ref": 0.99 - 0.01 * i, "dice_gt": 0.8 + 0.01 * i, "artifact": f"/x/m{i}.onnx"}
    r.update(kw)
    return r


def test_csv_has_every_column_in_order_and_na_for_missing(tmp_path):
    rows = [_row(0), _row(1, latency_ms_p99=float("nan"))]
    p = write_csv(tmp_path / "bench.csv", rows)
    with open(p) as fh:
        got = list(csv.reader(fh))
    assert tuple(got[0]) == COLUMNS
    assert len(got) == 3
    rec = dict(zip(got[0], got[2]))
    assert rec["model"] == "m1" and rec["latency_ms_p50"] == "4.0"
    assert rec["latency_ms_p99"] == "n/a" and rec["gpu_util_pct_avg"] == "n/a" and rec["iou_gt"] == "n/a"
    assert not list(tmp_path.glob(".*part"))  # the temporary name was renamed


def test_json_is_strict_and_carries_environment_and_skips(tmp_path):
    env = {"cpu": "test cpu", "cores_logical": 2, "gpu": "none", "versions": {"onnxruntime": "1.x"}}
    skipped = [{"model": "m0", "backend": "tensorrt", "precision": "fp16", "reason": "TensorRT is not installed"}]
    p = write_json(tmp_path / "bench.json", [_row(0, latency_ms_p95=math.inf)], skipped, env, {"batches": [1]})

    def no_constants(name):
        raise AssertionError(f"non-standard JSON constant {name}")

    doc = json.loads(p.read_text(), parse_constant=no_constants)
    assert doc["environment"]["cpu"] == "test cpu"
    assert doc["columns"] == list(COLUMNS)
    assert doc["rows"][0]["latency_ms_p95"] is None
    assert doc["skipped"][0]["reason"] == "TensorRT is not installed"
    assert doc["settings"]["batches"] == [1]


def test_accuracy_metric_prefers_complete_ground_truth():
    assert accuracy_metric([_row(0), _row(1)]) == "dice_gt"
    assert accuracy_metric([_row(0), _row(1, dice_gt=None)]) == "dice_vs_ref"
    assert accuracy_metric([_row(0, dice_gt=None, dice_vs_ref=None)]) is None
    assert accuracy_metric([]) is None


def test_plot_is_a_png_with_one_point_per_row(tmp_path):
    import matplotlib.image as mpimg

    rows = [_row(i, backend=b, precision=p) for i, (b, p) in
            enumerate([("torch", "fp32"), ("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("tensorrt", "fp16")])]
    p = write_plot(tmp_path / "bench.png", rows, "t")
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(p)
    assert img.shape[0] > 300 and img.shape[1] > 600
    assert write_plot(tmp_path / "none.png", [_row(0, dice_gt=None, dice_vs_ref=None)]) is None
    assert not (tmp_path / "none.png").exists()


def test_plot_draws_one_line_per_model_and_backend_with_plain_ms_ticks(tmp_path):
    from echoseg.bench.environment import CPU_FEATURES, cpu_features
    from echoseg.bench.report import _series, ran_as

    rows = [_row(i, model="m", backend="onnxruntime", precision=p, granularity=g) for i, (p, g) in
            enumerate([("fp32", 1.0), ("int8", 1.0), ("fp32", 0.5), ("fp16", 0.5)])]
    rows.append(_row(9, model="m", backend="openvino", precision="bf16"))
    series = _series(rows, "dice_gt")
    assert len(series) == 2  # one line per (model, backend, batch), not one legend entry per point
    pts = series[("m", "onnxruntime", "b1")]
    assert len(pts) == 4 and [p[0] for p in pts] == sorted(p[0] for p in pts)
    assert "g0.5 fp16 graph, ran in fp32" in [p[2] for p in pts]
    assert ran_as({"precision": "fp16", "backend": "onnxruntime", "device": "CUDAExecutionProvider"}) == "fp16"
    assert set(cpu_features()) <= set(CPU_FEATURES)
    from echoseg.bench.report import ms_tick

    assert write_plot(tmp_path / "bench.png", rows, "t", ["avx512_vnni"]).is_file()
    assert [ms_tick(v) for v in (0.5, 2.0, 20.0, 200.0)] == ["0.5", "2", "20", "200"]  # never 2x10^0


def test_write_report_writes_three_files(tmp_path):
    files = write_report(tmp_path / "out", [_row(0), _row(1)], [], {"cpu": "c", "gpu": "none"}, {})
    assert sorted(files) == ["csv", "json", "png"]
    assert all(f.is_file() and f.stat().st_size > 0 for f in files.values())


def test_cells_round_by_unit_and_say_na():
    assert cell("latency_ms_p50", 1.23456) == "1.235"
    assert cell("rss_mb_peak", 95.5) == "96"
    assert cell("macs_per_frame", 146_530_000) == "146.5"
    assert cell("granularity", 0.125) == "0.125"
    assert cell("dice_gt", 0.876543) == "0.8765"
    assert cell("gpu_util_pct_avg", None) == "n/a"
    assert cell("cpu_pct_avg", float("nan")) == "n/a"
    assert cell("batch", 16) == "16"
    assert clean({"a": [float("nan"), 1.0]}) == {"a": [None, 1.0]}


def test_rich_tables_have_the_issue_columns():
    from rich.console import Console

    con = Console(record=True, width=250)
    con.print(rich_table([_row(0)], SPEED, "speed"))
    con.print(rich_table([_row(0)], RESOURCES, "res"))
    text = con.export_text()
    for header in ("p50 ms", "p95 ms", "p99 ms", "frames/s", "video s", "cold s", "RSS avg MB", "RSS peak MB",
                   "CPU avg %", "CPU peak %", "GPU avg %", "GPU peak %", "GPU MB", "size MB", "MMAC/frame",
                   "Dice ref", "Dice GT", "IoU GT", "Acc GT"):
        assert header in text
    assert "146.5" in text and "98.8" in text


@pytest.mark.parametrize("key", ["latency_ms_p50", "throughput_fps", "cold_start_s", "rss_mb_avg", "cpu_pct_peak",
                                 "gpu_mem_mb_peak", "artifact_mb", "macs_per_frame", "dice_vs_ref", "iou_gt"])
def test_issue_figures_are_csv_columns(key):
    assert key in COLUMNS
