"""echo-export build never crashes on one bad run: unknown models, unwritable or full output, locks, stderr."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_export_fixtures import (cached_checkpoint, export_base, invoke_export, no_tensorrt,  # noqa: F401
                                  place_runs)

FAST = ["--parity-frames", "8", "--no-parity"]
LOCK = ".echoseg-export.lock"  # echoseg.export.build.LOCK_NAME


_invoke = invoke_export


@pytest.fixture()
def two_runs(export_base, tmp_path, monkeypatch, no_tensorrt) -> Path:
    """runs/unet/best.pt and runs/other/best.pt (the same small U-Net) in the working folder."""
    place_runs(export_base, tmp_path, {"unet": "unet", "other": "unet"})
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _errors(res) -> list[str]:
    return [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_an_unknown_model_name_is_one_line_and_the_others_still_export(two_runs):
    import torch

    raw = torch.load(two_runs / "runs" / "unet" / "best.pt", map_location="cpu", weights_only=True)
    raw["model"]["name"] = "vit"
    torch.save(raw, two_runs / "vit.pt")
    res = _invoke("build", "vit.pt", "runs/unet", *FAST)
    assert res.exit_code == 1 and "Traceback" not in res.output and not isinstance(res.exception, ValueError)
    (line,) = _errors(res)
    assert "vit.pt" in line and "unknown model 'vit'" in line
    assert "error:" not in res.stdout  # errors go to stderr
    assert (two_runs / "exports" / "unet" / "manifest.json").is_file()


def test_an_unwritable_export_dir_is_one_line_and_the_next_run_still_exports(two_runs):
    (two_runs / "xo").mkdir()
    (two_runs / "xo" / "other").write_text("a file where the export folder should go")
    res = _invoke("build", "runs/other", "runs/unet", "--out", "xo", *FAST)
    assert res.exit_code == 1 and "Traceback" not in res.output and not isinstance(res.exception, OSError)
    (line,) = _errors(res)
    assert "xo/other" in line and "cannot write" in line and "--out" in line
    assert (two_runs / "xo" / "unet" / "manifest.json").is_file()
    assert (two_runs / "xo" / "other").read_text().startswith("a file")


def test_an_unwritable_out_is_refused_before_any_export(two_runs):
    (two_runs / "blocker").write_text("x")
    res = _invoke("build", "runs/unet", "--out", "blocker/exports", *FAST)
    assert res.exit_code == 2
    (line,) = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert line.startswith("error:") and "blocker/exports" in line and "cannot write" in line


def test_a_full_disk_half_way_is_one_line_and_the_next_run_still_exports(two_runs, monkeypatch):
    from echoseg.export import build

    real = build.write_json

    def full_for_other(path, data):
        if "other" in Path(path).parts:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, data)

    monkeypatch.setattr(build, "write_json", full_for_other)
    res = _invoke("build", "runs/other", "runs/unet", *FAST)
    assert res.exit_code == 1 and not isinstance(res.exception, OSError)
    (line,) = _errors(res)
    assert "No space left on device" in line and "other" in line
    assert (two_runs / "exports" / "unet" / "manifest.json").is_file()
    assert not (two_runs / "exports" / "other" / "manifest.json").exists()
    left = [p.name for p in (two_runs / "exports" / "other").iterdir() if p.name.startswith(".")]
    assert left == []  # no temp files, no lock


def test_any_echoseg_error_in_one_run_is_one_line_and_the_next_run_still_exports(two_runs, monkeypatch):
    from echoseg.data.frameset import DataError
    from echoseg.export import build

    real = build._export_into

    def bad_frames_for_other(d, *a, **k):
        if d.name == "other":
            raise DataError("parity frames: the folder holds no readable frame; pass --parity-frames 0")
        return real(d, *a, **k)

    monkeypatch.setattr(build, "_export_into", bad_frames_for_other)
    res = _invoke("build", "runs/other", "runs/unet", *FAST)
    assert res.exit_code == 1 and not isinstance(res.exception, DataError)
    (line,) = _errors(res)
    assert "no readable frame" in line and "other" in line
    assert (two_runs / "exports" / "unet" / "manifest.json").is_file()


def test_an_export_dir_another_process_writes_is_refused_with_its_pid(two_runs):
    from echoseg.atomic import exclusive

    d = two_runs / "exports" / "unet"
    with exclusive(d / LOCK):
        res = _invoke("build", "runs/unet", "runs/other", *FAST)
    assert res.exit_code == 1
    (line,) = _errors(res)
    assert str(Path("exports") / "unet") in line and f"pid {os.getpid()}" in line and "another echo-export" in line
    assert not (d / "manifest.json").exists() and (two_runs / "exports" / "other" / "manifest.json").is_file()
    (d / LOCK).write_text(f"{_dead_pid()}\n")  # left by an export that was killed: taken over
    stale = d / f".model.part{_dead_pid()}-abc.onnx"
    stale.write_bytes(b"half")
    res = _invoke("build", "runs/unet", *FAST)
    assert res.exit_code == 0, res.output
    assert (d / "manifest.json").is_file() and not (d / LOCK).exists() and not stale.exists()


def test_two_concurrent_builds_into_one_folder_never_crash(two_runs):
    cmd = [sys.executable, "-m", "echoseg.export.cli", "build", "runs/unet", "--out", "xc", *FAST]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [subprocess.Popen(cmd, cwd=two_runs, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    codes = sorted(p.returncode for p in procs)
    for so, se in outs:
        assert "Traceback" not in so + se
    assert codes in ([0, 0], [0, 1]), outs
    for p, (so, se) in zip(procs, outs):
        if p.returncode == 1:  # refused, one line naming the holder
            assert [ln for ln in se.splitlines() if ln.startswith("error:")][0].count("another echo-export") == 1
    assert (two_runs / "xc" / "unet" / "manifest.json").is_file()
    assert [p.name for p in (two_runs / "xc" / "unet").iterdir() if p.name.startswith(".")] == []


def test_profile_batch_is_bounded(two_runs):
    res = _invoke("build", "runs/unet", "--batch", "1,16,100000000", *FAST)
    assert res.exit_code == 2
    (line,) = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert line.startswith("error:") and "4096" in line
