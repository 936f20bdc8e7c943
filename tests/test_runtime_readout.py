"""A read-out whose masks are empty on (nearly) every frame says so, in summary.json and the terminal."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from oracle import CyclingOracle

from echoseg.data.synthetic import make_video
from echoseg.data.video import write_video
from echoseg.runtime.api import run_one
from echoseg.runtime.readout import mask_readout


def test_the_share_of_empty_frames_decides():
    assert mask_readout(np.zeros(96)) == {"empty_mask_frames": 96, "mask_warning": mask_readout(np.zeros(96))["mask_warning"]}
    assert "empty on 96 of 96 frames" in mask_readout(np.zeros(96))["mask_warning"]
    nearly = np.zeros(100)
    nearly[:5] = 800
    assert "empty on 95 of 100 frames" in mask_readout(nearly)["mask_warning"]
    half = np.zeros(100)
    half[:50] = 800
    assert mask_readout(half) == {"empty_mask_frames": 50, "mask_warning": None}
    assert mask_readout(np.full(10, 1077.0)) == {"empty_mask_frames": 0, "mask_warning": None}


def test_an_all_empty_video_says_so_in_summary_json(tmp_path):
    synth = make_video(3, frames=24)
    video = write_video(tmp_path / "echo.avi", synth.frames, 50.0)
    res = run_one(video, CyclingOracle(np.zeros_like(synth.masks)), tmp_path / "out" / "echo", batch=8, video=False)
    assert res.ok, res.error
    summary = json.loads((Path(res.out_dir) / "summary.json").read_text())
    assert summary["empty_mask_frames"] == 24
    assert "LV mask empty on 24 of 24 frames" in summary["mask_warning"]
    good = run_one(video, CyclingOracle(synth.masks), tmp_path / "out" / "good", batch=8, video=False)
    assert good.summary["mask_warning"] is None and good.summary["empty_mask_frames"] == 0


def test_echo_run_prints_the_line_instead_of_no_full_beat(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from echoseg.runtime import api, cli

    synth = make_video(3, frames=24)
    video = write_video(tmp_path / "echo.avi", synth.frames, 50.0)
    monkeypatch.setattr(api, "choose", lambda *a, **k: type("C", (), {"backend": "onnxruntime", "path": Path("m"),
                                                                      "reason": "", "options": {}})())
    monkeypatch.setattr(api, "_open_checked", lambda *a, **k: CyclingOracle(np.zeros_like(synth.masks)))
    res = CliRunner().invoke(cli.app, [str(video), "--out", str(tmp_path / "out"), "--no-video"])
    assert res.exit_code == 0, res.output
    assert "LV mask empty on 24 of 24 frames" in res.output and "no full beat found" not in res.output
