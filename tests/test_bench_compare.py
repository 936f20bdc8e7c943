"""echo-bench end to end on CPU: discovery, workers in their own processes, ONNX Runtime FP32/INT8 and PyTorch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from echoseg.bench.targets import has_module
import pytest
from typer.testing import CliRunner

from echoseg.bench.cli import app
from echoseg.bench.compare import BenchError, CompareOptions, run_compare, run_worker, synthetic_inputs
from echoseg.bench.table1 import ROWS, table_lines
from echoseg.bench.targets import discover
from echoseg.bench.inference import load_masks, to_masks
from echoseg.bench.worker import WorkerConfig

FAST = dict(warmup=1, min_repeats=3, min_seconds=0.0, video_repeats=1, synthetic_frames=8, threads=1)


def export_onnx(ckpt_path: Path, out: Path, g: float = 1.0) -> Path:
    """An ONNX file with the echoseg metadata (input 'frames', output 'logits', dynamic batch) at granularity g."""
    import onnx
    import torch

    from echoseg.models.checkpoint import build_from_checkpoint, load_checkpoint

    ckpt = load_checkpoint(ckpt_path)
    model = build_from_checkpoint(ckpt).sliced(g) if g != 1.0 else build_from_checkpoint(ckpt)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(model, torch.zeros(1, 3, 112, 112), str(out), input_names=["frames"], output_names=["logits"],
                      dynamic_axes={"frames": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17, dynamo=False)
    m = onnx.load(str(out))
    prop = m.metadata_props.add()
    prop.key, prop.value = "echoseg", ckpt.meta(g).to_json()
    onnx.save(m, str(out))
    return out


def quantize_int8(fp32: Path, out: Path) -> Path:
    """QDQ INT8 by static calibration on synthetic frames; metadata carried over."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    from echoseg.data.synthetic import make_video
    from echoseg.artifacts import read_onnx_meta
    from echoseg.artifacts import preprocess

    meta = read_onnx_meta(fp32)
    x = preprocess(make_video(3, frames=6).frames, meta)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"frames": x[i:i + 1]} for i in range(len(x))])

        def get_next(self):
            return next(self.it, None)

    quantize_static(str(fp32), str(out), Reader(), quant_format=QuantFormat.QDQ)
    m = onnx.load(str(out))
    if not any(p.key == "echoseg" for p in m.metadata_props):
        prop = m.metadata_props.add()
        prop.key, prop.value = "echoseg", meta.to_json()
        onnx.save(m, str(out))
    return out


def centred_checkpoint(src: Path, out: Path, g: float = 1.0) -> Path:
    """The checkpoint with its output bias shifted so that about half the pixels are LV.

    An untrained net predicts nothing, and Dice between two empty mask sets is 1 whatever the
    backends do; a centred output makes the agreement figures below actually test something.
    """
    import torch

    from echoseg.data.synthetic import make_video
    from echoseg.artifacts import preprocess
    from echoseg.models.checkpoint import build_from_checkpoint, load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(src)
    model = build_from_checkpoint(ckpt)
    x = torch.from_numpy(preprocess(make_video(7, frames=8).frames, ckpt.meta()))
    with torch.no_grad():
        model.head.bias -= model(x, g).median()
    return save_checkpoint(out, model, ckpt.model, ckpt.input_spec, threshold=0.5, metrics=ckpt.metrics)


@pytest.fixture(scope="module")
def bench_root(tmp_path_factory, unet_ckpt) -> Path:
    """root/runs/unet-w8/best.pt and root/exports/unet-w8/{model.onnx, model.int8.onnx}."""
    root = tmp_path_factory.mktemp("benchroot")
    ckpt = centred_checkpoint(unet_ckpt, root / "runs" / "unet-w8" / "best.pt")
    fp32 = export_onnx(ckpt, root / "exports" / "unet-w8" / "model.onnx")
    quantize_int8(fp32, fp32.with_name("model.int8.onnx"))
    return root


@pytest.fixture(scope="module")
def compared(bench_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("benchout")
    opts = CompareOptions(exports_dir=str(bench_root / "exports"), runs_dir=str(bench_root / "runs"), out=str(out),
                          precisions=("fp32", "int8"), **FAST)
    return run_compare(opts), out


def test_discover_finds_onnx_files_and_the_source_checkpoint(bench_root):
    plan = discover(None, bench_root / "exports", bench_root / "runs", precisions=("fp32", "int8"))
    got = sorted((t.backend, t.precision) for t in plan.targets)
    ov = [("openvino", "fp32"), ("openvino", "int8")] if has_module("openvino") else []
    assert got == sorted([("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("torch", "fp32")] + ov)
    if not ov:
        assert any(s.backend == "openvino" and "echoseg[openvino]" in s.reason for s in plan.skipped)
    bf16 = discover(None, bench_root / "exports", bench_root / "runs", backends=("openvino",), precisions=("bf16",))
    if ov:  # OpenVINO runs the FP32 graph in BF16 where the CPU lists BF16, else says why not
        from echoseg.backends import ovplan

        assert [(t.backend, t.precision, Path(t.artifact).name) for t in bf16.targets] == (
            [("openvino", "bf16", "model.onnx")] if ovplan.has_bf16() else [])
    ckpt = str(bench_root / "runs" / "unet-w8" / "best.pt")
    assert all(t.checkpoint == ckpt for t in plan.targets)  # matched by the sha256 in the ONNX metadata
    assert all(t.model == "unet-w8" and t.arch == "unet" and t.granularity == 1.0 for t in plan.targets)
    assert any(s.backend == "tensorrt" for s in plan.skipped)


@pytest.mark.skipif(not has_module("openvino"), reason="OpenVINO is not installed")
def test_openvino_rows_of_an_export_whose_first_file_is_fp16(bench_root, tmp_path):
    """The bundled model's layout (FP16 and INT8 graphs, no FP32): OpenVINO still runs its INT8 graph."""
    import shutil

    d = tmp_path / "exports" / "bundle-like"
    shutil.copytree(bench_root / "exports" / "unet-w8", d)
    (d / "model.onnx").rename(d / "model.fp16.onnx")  # same metadata; an FP16 graph by its name
    plan = discover([str(d)], tmp_path / "exports", bench_root / "runs", backends=("openvino",),
                    precisions=("fp32", "int8"))
    assert [(t.backend, t.precision, Path(t.artifact).name) for t in plan.targets] == [
        ("openvino", "int8", "model.int8.onnx")]


def test_discover_falls_back_to_runs_and_reports_bad_files(bench_root, tmp_path):
    plan = discover(None, tmp_path / "no-exports", bench_root / "runs", precisions=("fp32",))
    assert [(t.backend, t.model) for t in plan.targets] == [("torch", "unet-w8")]
    assert {s.backend for s in plan.skipped} == {"onnxruntime", "openvino", "tensorrt"}
    bad = tmp_path / "exports" / "broken"
    bad.mkdir(parents=True)
    (bad / "model.onnx").write_bytes(b"not an onnx file")
    plan = discover(None, tmp_path / "exports", bench_root / "runs", backends=("onnxruntime",))
    assert plan.targets == [] and "cannot load" in plan.skipped[0].reason


def test_compare_rows_measure_and_agree_with_the_reference(compared):
    res, _ = compared
    rows = {(r["backend"], r["precision"]): r for r in res.rows}
    ov = [("openvino", "fp32"), ("openvino", "int8")] if has_module("openvino") else []
    # OpenVINO 2026.4's CPU plugin refuses this width-8 INT8 graph on some CPUs (seen on an Intel Xeon with
    # AMX: "No suitable implementations"); then the row must be skipped with that reason, never dropped
    refused = [s for s in res.skipped if (s.backend, s.precision) == ("openvino", "int8")]
    if refused:
        assert "OpenVINO cannot compile it" in refused[0].reason and ("openvino", "int8") not in rows
        ov.remove(("openvino", "int8"))
    assert sorted(rows) == sorted([("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("torch", "fp32")] + ov)
    for r in rows.values():
        assert 0 < r["latency_ms_p50"] <= r["latency_ms_p95"] <= r["latency_ms_p99"]
        assert r["repeats"] >= 3 and r["throughput_fps"] > 0
        assert r["video_frames"] == 8 and r["video_s"] > 0 and r["cold_start_s"] > 0
        assert 20 < r["rss_mb_avg"] <= r["rss_mb_peak"] < 4000
        assert 0 < r["cpu_pct_avg"] <= r["cpu_pct_peak"]
        # CPU backends never read NVML, GPU or not on this box; "n/a" in the tables
        assert r["device"] == "cpu" or "CPU" in r["device"] or r["gpu_device"] is not None
        if r["gpu_device"] is None:
            assert r["gpu_util_pct_avg"] is None and r["gpu_mem_scope"] is None
        assert 0 < r["video_model_s"] <= r["video_s"]  # the model's share of echo-run's loop
        assert r["artifact_mb"] > 0 and r["gt_source"] == "synthetic" and r["gt_frames"] == 8
        assert 0 <= r["dice_gt"] <= 1 and 0 <= r["iou_gt"] <= r["dice_gt"] + 1e-9 and 0 < r["pixel_accuracy_gt"] <= 1
    # the PyTorch row is the reference itself, the ONNX FP32 export reproduces it, INT8 stays close
    assert rows[("torch", "fp32")]["dice_vs_ref"] > 0.999
    assert rows[("onnxruntime", "fp32")]["dice_vs_ref"] > 0.99
    assert rows[("onnxruntime", "int8")]["dice_vs_ref"] > 0.8
    assert rows[("onnxruntime", "int8")]["artifact_mb"] < rows[("onnxruntime", "fp32")]["artifact_mb"]
    # the torch process carries the PyTorch library: far more resident memory than ONNX Runtime
    assert rows[("torch", "fp32")]["rss_mb_peak"] > rows[("onnxruntime", "fp32")]["rss_mb_peak"]


def test_compare_macs_match_the_model(compared, bench_root):
    from echoseg.models import count_macs
    from echoseg.models.checkpoint import build_from_checkpoint, load_checkpoint

    res, _ = compared
    model = build_from_checkpoint(load_checkpoint(bench_root / "runs" / "unet-w8" / "best.pt"))
    assert {r["macs_per_frame"] for r in res.rows} == {count_macs(model, 1.0)}


def test_compare_lists_missing_backends_with_reasons(compared):
    res, _ = compared
    by = {(s.backend, s.precision): s.reason for s in res.skipped}
    assert "no TensorRT engine" in by[("tensorrt", "-")]
    assert not any(s.backend == "onnxruntime" for s in res.skipped)  # fp32 and int8 both exist


def test_missing_precisions_and_gpu_only_configs_are_skipped_with_reasons(bench_root, monkeypatch):
    import echoseg.bench.targets as tg

    monkeypatch.setattr(tg, "has_cuda_gpu", lambda: False)
    plan = discover(None, bench_root / "exports", bench_root / "runs", precisions=("fp32", "fp16"))
    by = {(s.backend, s.precision): s.reason for s in plan.skipped}
    assert "CUDA GPU" in by[("torch", "fp16")]
    assert "no fp16 ONNX" in by[("onnxruntime", "fp16")]
    ov = [("openvino", "fp32")] if has_module("openvino") else []
    assert sorted((t.backend, t.precision) for t in plan.targets) == sorted([("onnxruntime", "fp32"), ("torch", "fp32")] + ov)


def test_reference_masks_are_not_trivial(bench_root, tmp_path):
    """Guards the Dice figures above: the tiny model predicts some LV and some background."""
    video, _ = synthetic_inputs(tmp_path, 8, 7)
    cfg = WorkerConfig(artifact=str(bench_root / "runs" / "unet-w8" / "best.pt"), backend="torch", videos=[video],
                       mode="reference", masks_out=str(tmp_path / "ref.npz"), threads=1)
    row, why = run_worker(cfg)
    assert why == "" and row["video_frames"] == 8
    m = load_masks(tmp_path / "ref.npz")
    assert m.shape == (8, 112, 112) and 0.01 < m.mean() < 0.99


def test_worker_reports_a_bad_artifact_as_a_reason(tmp_path):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"garbage")
    video, _ = synthetic_inputs(tmp_path, 4, 1)
    row, why = run_worker(WorkerConfig(artifact=str(bad), backend="onnxruntime", videos=[video]))
    assert row is None and "cannot load" in why and "Traceback" not in why


def test_one_failing_configuration_does_not_stop_the_others(bench_root, tmp_path, monkeypatch):
    import echoseg.bench.compare as cmp

    calls = []

    def fake_worker(cfg, timeout_s=300.0):
        calls.append(cfg)
        if cfg.mode == "reference":
            path = cfg.masks_out.format(g="1")
            np.savez(path, masks=np.packbits(np.zeros((8, 112, 112), bool), axis=-1), shape=[8, 112, 112])
            return {"references": [{"granularity": 1.0, "masks": path, "macs_per_frame": 123}]}, ""
        if cfg.batch == 2:
            return None, "batch 2 is larger than model.onnx allows (1)"
        np.savez(cfg.masks_out, masks=np.packbits(np.zeros((8, 112, 112), bool), axis=-1), shape=[8, 112, 112])
        return {"latency_ms_p50": 1.0, "dice_gt": 0.5}, ""

    monkeypatch.setattr(cmp, "run_worker", fake_worker)
    opts = CompareOptions(exports_dir=str(bench_root / "exports"), runs_dir=str(bench_root / "runs"),
                          out=str(tmp_path), backends=("onnxruntime",), precisions=("fp32",), batches=(1, 2), **FAST)
    res = run_compare(opts)
    assert [(r["backend"], r["batch"]) for r in res.rows] == [("onnxruntime", 1)]
    assert res.rows[0]["macs_per_frame"] == 123 and res.rows[0]["dice_vs_ref"] == 1.0
    assert [(s.batch, s.reason) for s in res.skipped] == [(2, "batch 2 is larger than model.onnx allows (1)")]
    assert len(calls) == 3  # reference, batch 1, batch 2


def test_compare_with_nothing_to_run_says_what_to_do(tmp_path):
    with pytest.raises(BenchError, match="nothing to benchmark.*echo-export"):
        run_compare(CompareOptions(exports_dir=str(tmp_path / "e"), runs_dir=str(tmp_path / "r"), out=str(tmp_path)))


def test_to_masks_thresholds_logits_at_the_artifact_threshold():
    logits = np.array([[[[-1.0, 0.1], [1.5, 3.0]]]], np.float32)
    assert to_masks(logits, 0.5).tolist() == [[[False, True], [True, True]]]
    assert to_masks(logits, 0.8).tolist() == [[[False, False], [True, True]]]  # logit(0.8) = 1.386
    assert to_masks(logits, 0.5, output="probabilities").tolist() == [[[False, False], [True, True]]]


def test_table1_lines_show_the_paper_figures_exactly_as_printed():
    row = {"video_s_mean": 0.5, "video_model_s_mean": 0.2, "rss_mb_avg": 100.0, "rss_mb_peak": 120.0,
           "cpu_pct_avg": 90.0, "cpu_pct_peak": 101.0, "gpu_util_pct_avg": None, "gpu_util_pct_peak": None}
    lines = table_lines(row)
    assert [name for name, _, _ in lines] == [name for name, _, _ in ROWS]
    assert lines == [("Inference Time (s)", "0.500", "1.146"),
                     ("  of which model only (s)", "0.200", "\u2014"),
                     ("Average Memory Usage (MB)", "100.00", "897.34"),
                     ("Peak Memory Usage (MB)", "120.00", "897.352"),
                     ("Average CPU Usage (%)", "90.00", "50.77"),
                     ("Peak CPU Usage (%)", "101.00", "55.48"),
                     ("Average GPU Usage (%)", "n/a", "1.37"),
                     ("Peak GPU Usage (%)", "n/a", "1.37")]


def test_cli_compare_writes_files_and_prints_tables(bench_root, tmp_path):
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["compare", "--exports", str(bench_root / "exports"), "--runs", str(bench_root / "runs"),
                                 "--backends", "onnxruntime,tensorrt", "--precisions", "fp32", "--min-repeats", "3",
                                 "--min-seconds", "0", "--frames", "6", "--video-repeats", "1", "--warmup", "1",
                                 "--threads", "1", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "p50 ms" in r.output and "Dice GT" in r.output and "skipped" in r.output and "TensorRT" in r.output
    doc = json.loads((out / "bench.json").read_text())
    assert len(doc["rows"]) == 1 and doc["rows"][0]["precision"] == "fp32"
    assert doc["environment"]["cores_logical"] >= 1 and "onnxruntime" in doc["environment"]["versions"]
    assert (out / "bench.csv").read_text().count("\n") == 2
    assert (out / "bench.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_table1_prints_the_paper_rows(bench_root):
    r = CliRunner().invoke(app, ["table1", "--model", str(bench_root / "exports" / "unet-w8"), "--repeats", "2",
                                 "--frames", "6", "--threads", "1"])
    assert r.exit_code == 0, r.output
    for name, _, _ in ROWS:
        assert name in r.output
    assert "1.146" in r.output and "897.352" in r.output and "55.48" in r.output and "paper (NVIDIA T4)" in r.output
    assert "streaming loop" in r.output
    assert "onnxruntime" in r.output  # auto picks the FP32 ONNX export on a CPU box


def test_cli_errors_are_one_line(tmp_path):
    r = CliRunner().invoke(app, ["table1", str(tmp_path / "missing.avi"), "--model", str(tmp_path)])
    assert r.exit_code == 2 and "error:" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(app, ["compare", "--exports", str(tmp_path / "e"), "--runs", str(tmp_path / "r"),
                                 "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "nothing to benchmark" in r.output
    r = CliRunner().invoke(app, ["compare", "--precisions", "fp8"])
    assert r.exit_code != 0 and "fp8" in r.output


def test_matae_granularity_subnetwork_against_its_reference(matae_ckpt, tmp_path):
    """A g=0.5 sub-network export is matched to the checkpoint's g=0.5 PyTorch reference."""
    ckpt = centred_checkpoint(matae_ckpt, tmp_path / "runs" / "matae-w8" / "best.pt", g=0.5)
    export_onnx(ckpt, tmp_path / "exports" / "matae-w8" / "model.g0.5.onnx", g=0.5)
    opts = CompareOptions(exports_dir=str(tmp_path / "exports"), runs_dir=str(tmp_path / "runs"),
                          out=str(tmp_path / "out"), backends=("torch", "onnxruntime"), precisions=("fp32",),
                          granularities=(0.5,), **FAST)
    res = run_compare(opts)
    rows = {r["backend"]: r for r in res.rows}
    assert sorted(rows) == ["onnxruntime", "torch"]
    assert all(r["granularity"] == 0.5 and r["arch"] == "matae-unet" for r in rows.values())
    assert rows["onnxruntime"]["dice_vs_ref"] > 0.99

    from echoseg.models import count_macs
    from echoseg.models.checkpoint import build_from_checkpoint, load_checkpoint

    model = build_from_checkpoint(load_checkpoint(ckpt))
    assert rows["onnxruntime"]["macs_per_frame"] == count_macs(model, 0.5) < count_macs(model, 1.0)


def test_compare_on_given_videos_scores_labelled_data(bench_root, synth_dir, tmp_path):
    """--video runs the given files; --data scores Dice/IoU/accuracy on that split's labelled frames."""
    from echoseg.data.dataset import load_split
    from echoseg.data.synthetic import make_video
    from echoseg.data.video import write_video

    videos = [str(write_video(tmp_path / f"v{i}.avi", make_video(20 + i, frames=5).frames, 50.0)) for i in range(2)]
    opts = CompareOptions(exports_dir=str(bench_root / "exports"), runs_dir=str(bench_root / "runs"),
                          out=str(tmp_path / "out"), backends=("onnxruntime",), precisions=("fp32",),
                          videos=videos, data=str(synth_dir), split="val", gt_frames=6, **FAST)
    res = run_compare(opts)
    (row,) = res.rows
    n_val = len(load_split(synth_dir, "val").images)
    assert row["video_frames"] == 10 and row["videos"] == 2  # both videos, every frame
    assert row["gt_frames"] == min(6, n_val) and row["gt_source"] == f"{synth_dir.name}:val"
    assert 0 <= row["iou_gt"] <= row["dice_gt"] <= 1
    assert row["dice_vs_ref"] > 0.99
    with pytest.raises(BenchError, match="no such video"):
        run_compare(CompareOptions(exports_dir=str(bench_root / "exports"), runs_dir=str(bench_root / "runs"),
                                   out=str(tmp_path / "out"), videos=[str(tmp_path / "nope.avi")], **FAST))


def test_manifest_macs_fill_in_without_a_reference(tmp_path):
    from echoseg.bench.targets import manifest_macs

    (tmp_path / "manifest.json").write_text(json.dumps({"format": "echoseg-export",
                                                        "macs_per_frame": {"1": 146513920, "0.5": 37330944}}))
    assert manifest_macs(tmp_path, 0.5) == 37330944 and manifest_macs(tmp_path, 1.0) == 146513920
    assert manifest_macs(tmp_path, 0.25) is None
    assert manifest_macs(tmp_path / "missing", 1.0) is None
