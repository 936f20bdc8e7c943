"""echo-eval's outputs are complete or absent per run; a full disk reads "no space left on device" in one line."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from echoseg.atomic import NotWritableError
from echoseg.data.synthetic import write_frames


@pytest.fixture
def fake_eval(tmp_path, monkeypatch):
    from echoseg.data.frames import load_frames
    from echoseg.train import eval as ev

    root = write_frames(tmp_path / "syn", videos=7, frames=8, seed=3, every=4, style="echo")
    truth = load_frames(root, "test").masks
    fake = ev.Scorer("unet", 8, "fake", (112, 112), (1.0,), lambda images, g: truth.copy(), lambda g: 0.0, tmp_path)
    monkeypatch.setattr(ev, "scorer_for", lambda target, device="auto", backend="auto", tta="none": fake)
    return ev, root


def _full_disk(*a, **k):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("where", ["montage", "json"])
def test_a_full_disk_leaves_no_frames_csv_without_metrics_json(tmp_path, fake_eval, monkeypatch, where):
    ev, root = fake_eval
    import echoseg.train.eval as mod
    import echoseg.train.plots as plots

    if where == "montage":  # the PNG write hits the full disk (frames.csv already written)
        monkeypatch.setattr(plots, "write_bytes", _full_disk)
    else:  # metrics.json, the last one, hits it
        monkeypatch.setattr(mod, "write_json", _full_disk)
    out = tmp_path / "ev"
    with pytest.raises(NotWritableError) as exc:
        ev.evaluate("fake", root, "test", out)
    msg = str(exc.value)
    assert "no space left on device" in msg and str(out) in msg and "\n" not in msg
    assert sorted(p.name for p in out.iterdir()) == []  # nothing, not even a temporary name


def test_an_earlier_evaluation_stays_whole_when_a_later_one_fails(tmp_path, fake_eval, monkeypatch):
    ev, root = fake_eval
    out = tmp_path / "ev"
    ev.evaluate("fake", root, "test", out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert sorted(before) == ["frames.csv", "metrics.json", "montage.png"]
    import echoseg.train.plots as plots

    monkeypatch.setattr(plots, "write_bytes", _full_disk)
    with pytest.raises(NotWritableError):
        ev.evaluate("fake", root, "test", out, clean=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_echo_eval_says_no_space_in_one_line(tmp_path, fake_eval, monkeypatch):
    from typer.testing import CliRunner

    import echoseg.train.plots as plots
    from echoseg.train.cli import eval_app

    ev, root = fake_eval
    monkeypatch.setattr(plots, "write_bytes", _full_disk)
    (tmp_path / "run").mkdir()
    r = CliRunner().invoke(eval_app, [str(tmp_path / "run"), "--data", str(root), "--out",
                                                      str(tmp_path / "ev")])
    assert r.exit_code == 1
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "no space left on device" in lines[0] and "FileNotFoundError" not in lines[0]
    assert not (tmp_path / "ev" / "frames.csv").exists()
