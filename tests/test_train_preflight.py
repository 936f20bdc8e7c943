"""echo-train never replaces a trained run by accident and finds an unwritable --out before training."""

from __future__ import annotations

import errno
from collections import namedtuple

import pytest
from typer.testing import CliRunner

from echoseg.train.cli import train_app

runner = CliRunner()
TINY = ["--model", "unet", "--width", "8", "--batch-size", "4", "--no-augment"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from echoseg.data.synthetic import write_dataset

    return write_dataset(tmp_path_factory.mktemp("tiny"), videos=6, frames=16, seed=3)


def _train(data, out, *extra: str):
    return runner.invoke(train_app, ["--data", str(data), *TINY, "--out", str(out), *extra])


def _lines(res) -> list[str]:
    return [ln for ln in res.output.splitlines() if ln.strip()]


def test_an_existing_run_is_refused_without_resume_or_overwrite(data, tmp_path):
    run = tmp_path / "runs" / "unet"
    run.mkdir(parents=True)
    (run / "best.pt").write_bytes(b"val Dice 0.98, four days of GPU time")
    (run / "log.csv").write_text("epoch,val_dice\n40,0.98\n")
    res = _train(data, run, "--epochs", "1")
    assert res.exit_code == 2
    (line,) = _lines(res)
    assert "already holds a trained run (best.pt)" in line and "--resume" in line and "--overwrite" in line
    assert (run / "best.pt").read_bytes() == b"val Dice 0.98, four days of GPU time"
    assert (run / "log.csv").read_text() == "epoch,val_dice\n40,0.98\n"
    res = _train(data, run, "--epochs", "1", "--resume", "--overwrite")
    assert res.exit_code == 2 and "pass only one" in res.output


@pytest.mark.slow
def test_overwrite_replaces_an_existing_run(data, tmp_path):
    from echoseg.models.checkpoint import load_checkpoint

    run = tmp_path / "run"
    run.mkdir()
    (run / "best.pt").write_bytes(b"an old run")
    res = _train(data, run, "--epochs", "1", "--overwrite")
    assert res.exit_code == 0, res.output
    assert load_checkpoint(run / "best.pt").epoch == 1


@pytest.mark.slow
def test_resume_without_a_new_best_names_the_best_epoch(data, tmp_path):
    run = tmp_path / "run"
    res = _train(data, run, "--epochs", "1")
    assert res.exit_code == 0, res.output
    res = _train(data, run, "--epochs", "1", "--resume")  # nothing left to train: best is still epoch 1
    assert res.exit_code == 0, res.output
    assert "at epoch 1;" in res.output and "None" not in res.output


def test_an_unwritable_out_is_one_line_before_any_training(data, tmp_path):
    (tmp_path / "blocker").write_text("a file where the run folder should go")
    res = _train(data, tmp_path / "blocker" / "run", "--epochs", "1")
    assert res.exit_code == 2 and not isinstance(res.exception, OSError)
    (line,) = _lines(res)
    assert "cannot write outputs here" in line and "--out" in line and "epoch" not in line


def test_too_little_space_is_one_line_before_any_training(data, tmp_path, monkeypatch):
    from echoseg.train import preflight

    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(preflight.shutil, "disk_usage", lambda p: Usage(10 << 20, 10 << 20, 1 << 20))
    res = _train(data, tmp_path / "run", "--epochs", "1")
    assert res.exit_code == 2
    (line,) = _lines(res)
    assert "1 MB free" in line and "needs about" in line and "epoch" not in line


@pytest.mark.slow
def test_a_disk_that_fills_during_training_is_one_line(data, tmp_path, monkeypatch):
    from echoseg.train import records

    def full(path, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(records, "save_checkpoint", full)
    res = _train(data, tmp_path / "run", "--epochs", "1")
    assert res.exit_code == 2 and not isinstance(res.exception, OSError)
    errors = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "No space left on device" in errors[0] and ".pt" in errors[0]  # the checkpoint named
