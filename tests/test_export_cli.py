"""echo-export build / triton from the command line: defaults, bad checkpoints, parity failure, exit codes."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_export_fixtures import (cached_checkpoint, export_base, invoke_export, no_tensorrt,  # noqa: F401
                                  place_runs)

FAST = ["--parity-frames", "8", "--calib", "16"]


_invoke = invoke_export


@pytest.fixture()
def runs_dir(export_base, tmp_path, monkeypatch, no_tensorrt) -> Path:
    """A working folder with runs/unet/best.pt and runs/matae-unet/best.pt, as after `make demo`."""
    place_runs(export_base, tmp_path, {"unet": "unet", "matae-unet": "matae-unet"})
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_build_with_no_checkpoint_exports_every_run(runs_dir):
    from echoseg.export.manifest import read_manifest

    res = _invoke("build", "--fp16", *FAST)
    assert res.exit_code == 0, res.output
    for name in ("unet", "matae-unet"):
        d = runs_dir / "exports" / name
        assert (d / "model.onnx").is_file() and (d / "model.fp16.onnx").is_file()
        assert not (d / "model.int8.onnx").exists()
        man = read_manifest(d)
        assert man["passed"] and man["checkpoint"] == str(Path("runs") / name / "best.pt")
    skipped = [line for line in res.output.splitlines() if "engine skipped" in line]
    assert len(skipped) == 2 and all("TensorRT is not installed" in line for line in skipped)
    assert "Traceback" not in res.output


def test_granularity_and_profile_options(runs_dir):
    from echoseg.export.manifest import read_manifest

    res = _invoke("build", "runs/matae-unet", "-g", "0.25", "--batch", "2,4,8", *FAST)
    assert res.exit_code == 0, res.output
    d = runs_dir / "exports" / "matae-unet"
    assert (d / "model.g0.25.onnx").is_file() and (d / "model.onnx").is_file()
    man = read_manifest(d)
    assert [s["granularity"] for s in man["exports"]] == [1.0, 0.25]
    assert man["profile"] == {"min": 2, "opt": 4, "max": 8}
    res = _invoke("build", "runs/unet", "-g", "0.25", *FAST)  # unet is not nested: said, not fatal
    assert res.exit_code == 0 and "granularity 0.25 skipped: unet is not nested" in res.output
    res = _invoke("build", "runs/matae-unet", "-g", "0.3", *FAST)
    assert res.exit_code == 1 and "matae-unet has no granularity 0.3" in res.output


def test_bad_checkpoints_get_one_line_and_do_not_stop_the_good_one(runs_dir):
    import torch

    corrupt = runs_dir / "corrupt.pt"
    corrupt.write_bytes(b"\x00garbage, not a zip or pickle")
    wrong = runs_dir / "weights.pt"
    torch.save({"conv.weight": torch.zeros(2)}, wrong)
    res = _invoke("build", str(corrupt), str(wrong), "runs/unet", *FAST)
    assert res.exit_code == 1
    out = res.output
    assert "Traceback" not in out
    err_lines = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(err_lines) == 2
    assert any("corrupt.pt: not a readable PyTorch checkpoint" in line for line in err_lines)
    assert any("weights.pt: not an echoseg checkpoint" in line for line in err_lines)
    assert "2 of 3 exports failed" in out
    assert (runs_dir / "exports" / "unet" / "model.onnx").is_file()
    assert not (runs_dir / "exports" / "corrupt").exists()


def test_parity_failure_exits_nonzero_with_the_numbers(runs_dir, monkeypatch):
    from echoseg.export import parity

    monkeypatch.setitem(parity.GATES, "fp32", {"max_abs_logit": 0.0, "mask_dice": 0.999})
    res = _invoke("build", "runs/unet", *FAST)
    assert res.exit_code == 1
    line = next(line for line in res.output.splitlines() if line.startswith("error:"))
    assert "model.onnx vs PyTorch: parity gate missed (max |logit diff|" in line and "> 0" in line
    assert "LV area error" in line and "FAIL" in res.output
    assert (runs_dir / "exports" / "unet" / "model.rejected.onnx").is_file()
    assert not (runs_dir / "exports" / "unet" / "model.onnx").exists()


def test_usage_errors(runs_dir, tmp_path):
    res = _invoke("build", "--batch", "4,2,1")
    assert res.exit_code == 2 and "1 <= MIN <= OPT <= MAX" in res.output
    res = _invoke("build", "--calib-method", "best")
    assert res.exit_code == 2 and "--calib-method 'best' is not one of minmax" in res.output
    res = _invoke("build", "--int8", "--int8-form", "gpu")
    assert res.exit_code == 2 and "--int8-form 'gpu' is not one of cpu, tensorrt" in res.output
    res = _invoke("build", "--runs", str(tmp_path / "empty"))
    assert res.exit_code == 2 and "no checkpoint given" in res.output
    res = _invoke("build", "runs/nope")
    assert res.exit_code == 1 and "runs/nope: no such checkpoint or run directory" in res.output
    res = _invoke("triton", str(tmp_path / "nothing"))
    assert res.exit_code == 2 and "no manifest.json" in res.output


def test_triton_command_writes_the_repository(runs_dir):
    assert _invoke("build", "runs/unet", "--int8", *FAST).exit_code == 0
    res = _invoke("triton", "--out", "model_repository")
    assert res.exit_code == 0, res.output
    repo = runs_dir / "model_repository"
    assert sorted(p.name for p in repo.iterdir()) == ["unet", "unet_int8"]
    assert 'platform: "onnxruntime_onnx"' in (repo / "unet_int8" / "config.pbtxt").read_text()
    assert "tritonserver --model-repository" in res.output


def test_main_is_the_console_entry_point():
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", "from echoseg.export.cli import main; main()", "--help"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "build" in proc.stdout and "triton" in proc.stdout
    assert "torch" not in subprocess.run(
        [sys.executable, "-c", "import sys, echoseg.export.cli; print([m for m in sys.modules if m in "
         "('torch', 'onnxruntime', 'tensorrt')])"], capture_output=True, text=True, timeout=60).stdout
