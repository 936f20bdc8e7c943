"""Patient-level cross-validation: parallel runs, screening subsets, the worst patient."""

from __future__ import annotations

import json

import numpy as np
import pytest

from echoseg.config import ConfigError, TrainConfig
from echoseg.data.folds import every_kth
from echoseg.data.frameset import FrameSet
from echoseg.train.cv import run_cv, summarize_cv


def _frames(names):
    n = len(names)
    return FrameSet(np.zeros((n, 4, 4, 3), np.uint8), np.zeros((n, 4, 4), bool), list(names), [""] * n, None, "frames")


def test_every_kth_keeps_every_kth_frame_of_each_video():
    fs = _frames([f"a_{i}" for i in range(7)] + [f"b_{i}" for i in range(4)])
    kept = every_kth(fs, 3).names
    assert kept == ["a_0", "a_3", "a_6", "b_0", "b_3"]
    assert every_kth(fs, 1) is fs
    with pytest.raises(ConfigError, match="train_every must be >= 1"):
        TrainConfig(train_every=0)


def test_summary_names_the_worst_patient_by_its_mean_over_seeds():
    rows = [{"fold": f, "seed": s, "g": 1.0, "dice": d, "frames": 10, "test_videos": v}
            for f, v, ds in ((0, "P0", (0.9, 0.9)), (1, "P1", (0.95, 0.55)), (2, "P2", (0.7, 0.72)))
            for s, d in zip((1, 2), ds)]
    s = summarize_cv(rows)["1"]
    assert s["worst_fold"] == 2 and s["worst_fold_videos"] == "P2"  # mean 0.71 < P1's 0.75
    assert s["worst_fold_dice"] == pytest.approx(0.71)
    assert s["min_fold_dice"] == pytest.approx(0.55)  # the single worst run is kept beside it
    assert s["dice_per_seed"] == pytest.approx([(0.9 + 0.95 + 0.7) / 3, (0.9 + 0.55 + 0.72) / 3])


@pytest.mark.slow
def test_parallel_cross_validation_matches_serial(tmp_path):
    from echoseg.data.synthetic import write_dataset

    data = tmp_path / "d"
    write_dataset(data, videos=6, frames=16, seed=4)
    base = TrainConfig(data=str(data), model="unet", width=4, epochs=1, batch_size=4, device="cpu", workers=0)
    serial = run_cv(TrainConfig.from_dict({**base.to_dict(), "out": str(tmp_path / "serial")}), 3, [1], only=[0, 2])
    heard = []
    par = run_cv(TrainConfig.from_dict({**base.to_dict(), "out": str(tmp_path / "par")}), 3, [1], only=[0, 2],
                 jobs=2, on_done=heard.append)
    assert sorted(r[0]["fold"] for r in heard) == [0, 2]
    cv = json.loads((tmp_path / "par" / "cv.json").read_text())
    assert [(r["fold"], r["seed"]) for r in cv["rows"]] == [(0, 1), (2, 1)]
    assert all(r["test_videos"] for r in cv["rows"])
    assert (tmp_path / "par" / "fold2-seed1" / "eval-test" / "metrics.json").is_file()
    # same batches and weights up to thread count: the scores agree closely
    for f in ("0", "2"):
        assert par["1"]["dice_per_fold"][f] == pytest.approx(serial["1"]["dice_per_fold"][f], abs=0.02)


def test_jobs_and_seeds_without_folds_are_one_line_errors(tmp_path):
    from typer.testing import CliRunner

    from echoseg.train.cli import train_app

    for extra, said in ((["--jobs", "4"], "--jobs only apply"), (["--seeds", "1,2"], "--seeds only apply"),
                        (["--jobs", "2", "--seeds", "1,2"], "--jobs and --seeds only apply")):
        r = CliRunner().invoke(train_app, ["--data", str(tmp_path), "--model", "unet", *extra])
        lines = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
        assert r.exit_code == 2 and len(lines) == 1 and said in lines[0] and "--folds K" in lines[0]
