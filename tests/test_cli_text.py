"""Messages show user text literally (no rich markup eats [...]), and the small CLI edges say what they do."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

runner = CliRunner()


def test_the_shared_console_prints_brackets_literally():
    from echoseg.clitext import console, tagged

    con = console(width=200, record=True)
    con.print("pip install 'echoseg[gpu]'  clip[apical].avi  [red]x[/red]")
    con.print(tagged("error:", "red", "a [bold]b[/bold]"))
    text = con.export_text()
    assert "pip install 'echoseg[gpu]'  clip[apical].avi  [red]x[/red]" in text
    assert "error: a [bold]b[/bold]" in text


def test_echo_run_keeps_brackets_in_errors_and_video_names(tmp_path, monkeypatch):
    from echoseg.runtime import api, cli
    from echoseg.backends.session import SessionError

    def refuse(*a, **k):
        raise SessionError("TensorRT is not installed: pip install 'echoseg[gpu]'")

    monkeypatch.setattr(api, "choose", refuse)
    r = runner.invoke(cli.app, [str(tmp_path / "clip[apical].avi"), "--out", str(tmp_path / "out")])
    assert r.exit_code == 2 and "pip install 'echoseg[gpu]'" in r.output
    monkeypatch.setattr(api, "choose", lambda *a, **k: type("C", (), {"backend": "onnxruntime", "path": Path("m"),
                                                                      "reason": "", "options": {}})())
    from oracle import CyclingOracle

    monkeypatch.setattr(api, "_open_checked", lambda *a, **k: CyclingOracle(np.zeros((1, 112, 112), bool)))
    r = runner.invoke(cli.app, [str(tmp_path / "clip[apical].avi"), "--out", str(tmp_path / "out")])
    assert r.exit_code == 1 and "clip[apical].avi" in r.output and "clip.avi" not in r.output


def test_echo_run_keeps_opencv_warnings_out(monkeypatch, tmp_path):
    import os

    from echoseg.runtime import api, cli

    monkeypatch.delenv("OPENCV_LOG_LEVEL", raising=False)
    monkeypatch.setattr(api, "choose", lambda *a, **k: (_ for _ in ()).throw(api.SessionError("x")))
    runner.invoke(cli.app, [str(tmp_path / "a.avi")])
    assert os.environ.get("OPENCV_LOG_LEVEL") == "ERROR"


def test_echo_bench_and_echo_export_keep_brackets(tmp_path):
    from echoseg.bench.cli import app as bench_app
    from echoseg.export.cli import app as export_app

    r = runner.invoke(export_app, ["triton", str(tmp_path / "exp[gpu]")])
    assert r.exit_code == 2 and "exp[gpu]" in r.output
    r = runner.invoke(bench_app, ["table1", "--model", str(tmp_path / "m[gpu]")])
    assert r.exit_code == 2 and "m[gpu]" in r.output


def test_fold_without_folds_is_an_error(tmp_path):
    from echoseg.data.synthetic import write_frames
    from echoseg.train.cli import train_app

    data = write_frames(tmp_path / "d", videos=7, frames=8, seed=1, every=4)
    r = runner.invoke(train_app, ["--data", str(data), "--model", "unet", "--width", "8", "--epochs", "1",
                                  "--fold", "0", "--out", str(tmp_path / "run")])
    assert r.exit_code == 2 and "--fold 0 needs --folds" in r.output
    assert not (tmp_path / "run").exists()


def test_a_nan_loss_reads_as_divergence_not_as_loss_nan(tmp_path, monkeypatch):
    from echoseg.data.synthetic import write_frames
    from echoseg.train import loop
    from echoseg.train.cli import train_app

    data = write_frames(tmp_path / "d", videos=7, frames=8, seed=1, every=4)

    def diverging(cfg, resume=False, callbacks=None, data=None):
        callbacks.on_start(1, 1)
        callbacks.on_epoch({"epoch": 1, "train_loss": float("nan"), "val_dice": 0.0, "val_iou": 0.0, "seconds": 1.0})
        raise loop.TrainError("training diverged")

    monkeypatch.setattr(loop, "train", diverging)
    r = runner.invoke(train_app, ["--data", str(data), "--model", "unet", "--width", "8", "--epochs", "1",
                                  "--out", str(tmp_path / "run")])
    assert r.exit_code == 2
    assert "loss nan" not in r.output and "the training loss is not a number" in r.output


def _scored(label, values, model="unet"):
    from echoseg.train.compare import Scored

    return Scored(label, model, 16, {1.0: dict(values)})


def test_compare_says_how_many_frames_were_paired_and_no_ci_from_one_video():
    from echoseg.clitext import console
    from echoseg.train.cli import _print_comparison

    a = {f"v00_{i:04d}": 0.8 for i in range(10)}
    b = {f"v00_{i:04d}": 0.85 for i in range(4, 12)}
    con = console(width=200, record=True)
    _print_comparison(con, [_scored("A[1]", a), _scored("B", b, "matae")], None)
    text = con.export_text()
    assert "paired the 6 frames both sides scored (A scored 10, B 8)" in text
    assert "n/a (one video)" in text and "+0.0500 .. +0.0500" not in text
    assert "A[1]" in text


def test_compare_of_matching_sets_says_nothing_extra():
    from echoseg.clitext import console
    from echoseg.train.cli import _print_comparison
    from echoseg.train.compare import compare

    a = {f"v{v:02d}_{i:04d}": 0.8 + 0.01 * v for v in range(3) for i in range(4)}
    b = {k: v + 0.02 for k, v in a.items()}
    res = compare([_scored("A", a), _scored("B", b, "matae")])
    d = res["differences"][0]
    assert d["frames"] == d["frames_a"] == d["frames_b"] == 12 and d["ci95"] is not None
    con = console(width=200, record=True)
    _print_comparison(con, [_scored("A", a), _scored("B", b, "matae")], None)
    assert "paired the" not in con.export_text()


def test_one_video_difference_has_no_interval():
    from echoseg.train.compare import paired_difference

    d = paired_difference([_scored("a", {"v1_0001": 0.8, "v1_0002": 0.7})],
                          [_scored("b", {"v1_0001": 0.9, "v1_0002": 0.8})], 1.0, 1.0)
    assert d.videos == 1 and d.ci95 is None and d.mean == pytest.approx(0.1)


def test_an_error_while_loading_leaves_no_progress_bar_with_loss_nan(tmp_path, monkeypatch):
    from echoseg.data.synthetic import write_frames
    from echoseg.train import loop
    from echoseg.train.cli import train_app

    data = write_frames(tmp_path / "d", videos=7, frames=8, seed=1, every=4)

    def fails_loading(cfg, resume=False, callbacks=None, data=None):
        raise loop.TrainError("no training frame has any LV pixel")

    monkeypatch.setattr(loop, "train", fails_loading)
    r = runner.invoke(train_app, ["--data", str(data), "--model", "unet", "--width", "8", "--epochs", "1",
                                  "--out", str(tmp_path / "run")])
    assert r.exit_code == 2 and "nan" not in r.output
    assert [ln for ln in r.output.splitlines() if ln.strip()] == ["error: no training frame has any LV pixel"]


def test_echo_run_warnings_are_one_line_however_long(tmp_path, monkeypatch):
    import logging

    from echoseg.clitext import ConsoleLogHandler, console
    from echoseg.runtime import api, cli

    con = console(width=80, record=True)
    handler = ConsoleLogHandler(con)
    long_name = "model.fp16.onnx" + "x" * 150
    handler.handle(logging.LogRecord("echoseg.backends.choose", logging.WARNING, __file__, 1,
                                     "%s: refused [gpu], its sha256 does not match", (long_name,), None))
    lines = [ln for ln in con.export_text().splitlines() if ln.strip()]
    assert lines == [f"warning: {long_name}: refused [gpu], its sha256 does not match"]
    seen = {}
    monkeypatch.setattr(logging, "basicConfig", lambda **kw: seen.update(kw))
    monkeypatch.setattr(api, "choose", lambda *a, **k: (_ for _ in ()).throw(api.SessionError("x")))
    runner.invoke(cli.app, [str(tmp_path / "a.avi")])
    assert [type(h) for h in seen["handlers"]] == [ConsoleLogHandler]
