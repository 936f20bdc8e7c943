"""Patient-level cross-validation: parallel runs, screening subsets, the worst patient."""

from __future__ import annotations

import json

import numpy as np
import pytest

from echoseg.config import ConfigError, TrainConfig
from echoseg.data.folds import every_kth
from echoseg.data.frameset import FrameSet
from echoseg.train import cv as cvmod
from echoseg.train.cv import CVError, run_cv, summarize_cv
from echoseg.train.preflight import PreflightError, check_cv_dir


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


def _fake_cv(monkeypatch, videos=("P0", "P1", "P2")):
    """run_cv over three one-video folds with training replaced by a recorded call (score 0.9 - fold/10 - seed/100)."""
    monkeypatch.setattr(cvmod, "load_pool", lambda data: _frames([f"{v}_{i}" for v in videos for i in range(3)]))
    calls = []

    def one_run(run_cfg, fs, folds, fold, callbacks=None):
        calls.append((fold, run_cfg.seed))
        _, _, te = cvmod.fold_sets(fs, folds, fold, seed=0)
        return [{"fold": fold, "seed": run_cfg.seed, "g": 1.0, "dice": 0.9 - fold / 10 - run_cfg.seed / 100,
                 "frames": len(te.names), "test_videos": " ".join(sorted({n.split("_")[0] for n in te.names}))}]

    monkeypatch.setattr(cvmod, "_one_run", one_run)
    return calls


def test_resume_trains_only_the_missing_runs_into_one_table(tmp_path, monkeypatch):
    calls = _fake_cv(monkeypatch)
    cfg = TrainConfig(data="d", model="unet", width=4, epochs=1, out=str(tmp_path / "cv"))
    run_cv(cfg, 3, [1], only=[0, 2])
    assert calls == [(0, 1), (2, 1)]
    calls.clear()
    part = run_cv(cfg, 3, [2], only=[1], resume=True)  # a piece: fold 1 of seed 2 only
    assert calls == [(1, 2)]
    assert part["1"]["missing_runs"] == [[0, 2], [1, 1], [2, 2]]  # seeds 1, 2 over folds 0..2 lack three
    calls.clear()
    full = run_cv(cfg, 3, [1, 2], resume=True)
    assert sorted(calls) == [(0, 2), (1, 1), (2, 2)]
    cv = json.loads((tmp_path / "cv" / "cv.json").read_text())
    assert [(r["fold"], r["seed"]) for r in cv["rows"]] == [(f, s) for f in range(3) for s in (1, 2)]
    assert cv["seeds"] == [1, 2] and cv["evaluated_folds"] == [0, 1, 2] and full["1"]["missing_runs"] == []
    assert full["1"]["worst_fold"] == 2 and full["1"]["dice_per_seed"] == pytest.approx([0.79, 0.78])
    assert (tmp_path / "cv" / "cv.csv").read_text().count("\n") == 7  # header and six rows
    calls.clear()
    run_cv(cfg, 3, [1, 2], resume=True)  # nothing left: nothing trained, the table stays whole
    assert calls == [] and len(json.loads((tmp_path / "cv" / "cv.json").read_text())["rows"]) == 6


def test_resume_refuses_another_recipe_or_other_data(tmp_path, monkeypatch):
    calls = _fake_cv(monkeypatch)
    cfg = TrainConfig(data="d", model="unet", width=4, epochs=1, out=str(tmp_path / "cv"))
    run_cv(cfg, 3, [1], only=[0])
    calls.clear()
    with pytest.raises(CVError, match="another recipe \\(epochs 1 there, 2 now\\)"):
        run_cv(TrainConfig.from_dict({**cfg.to_dict(), "epochs": 2}), 3, [2], resume=True)
    with pytest.raises(CVError, match="a 3-fold cross-validation, not 2-fold"):
        run_cv(cfg, 2, [2], only=[0], resume=True)
    # the seed, the device and the loader workers may differ: same recipe
    run_cv(TrainConfig.from_dict({**cfg.to_dict(), "device": "cpu", "workers": 0}), 3, [2], only=[0], resume=True)
    assert calls == [(0, 2)]
    _fake_cv(monkeypatch, videos=("Q0", "Q1", "Q2"))  # another dataset: fold 0 holds out another video
    with pytest.raises(CVError, match=r"fold 0 of .* held out P\d, with this --data it holds out Q\d"):
        run_cv(cfg, 3, [3], resume=True)


def test_cv_folder_is_kept_unless_resume_or_overwrite(tmp_path):
    check_cv_dir(tmp_path / "new", resume=False, overwrite=False)  # nothing there: fine
    with pytest.raises(PreflightError, match="holds no cross-validation"):
        check_cv_dir(tmp_path / "new", resume=True, overwrite=False)
    (tmp_path / "cv" / "fold0-seed1").mkdir(parents=True)
    (tmp_path / "cv" / "fold0-seed1" / "last.pt").write_bytes(b"")
    with pytest.raises(PreflightError, match="already holds a cross-validation \\(1 fold run\\)"):
        check_cv_dir(tmp_path / "cv", resume=False, overwrite=False)
    (tmp_path / "cv" / "cv.json").write_text("{}")
    with pytest.raises(PreflightError, match="already holds a cross-validation \\(cv.json, 1 fold run\\)"):
        check_cv_dir(tmp_path / "cv", resume=False, overwrite=False)
    with pytest.raises(PreflightError, match="pass only one"):
        check_cv_dir(tmp_path / "cv", resume=True, overwrite=True)
    check_cv_dir(tmp_path / "cv", resume=True, overwrite=False)
    check_cv_dir(tmp_path / "cv", resume=False, overwrite=True)


def test_compare_reads_the_runs_a_partial_table_holds_and_says_what_is_broken(tmp_path):
    from typer.testing import CliRunner

    from echoseg.train.cli import eval_app
    from echoseg.train.compare import read_cv

    cv = tmp_path / "cv"
    rows = [{"fold": 0, "seed": 1, "g": 1.0}, {"fold": 1, "seed": 2, "g": 1.0}]
    (cv).mkdir()
    (cv / "cv.json").write_text(json.dumps({"model": "unet", "width": 4, "seeds": [1, 2], "evaluated_folds": [0, 1],
                                            "rows": rows}))
    for f, s, name in ((0, 1, "a_0"), (1, 2, "b_0")):
        (cv / f"fold{f}-seed{s}" / "eval-test").mkdir(parents=True)
        (cv / f"fold{f}-seed{s}" / "eval-test" / "frames.csv").write_text(f"name,dice\n{name},0.5\n")
    got = read_cv(cv)  # fold 0 seed 2 and fold 1 seed 1 were never run: not looked for
    assert [(s.label, sorted(s.dice[1.0])) for s in got] == [("cv/seed1", ["a_0"]), ("cv/seed2", ["b_0"])]
    (cv / "fold1-seed2" / "eval-test" / "frames.csv").unlink()
    r = CliRunner().invoke(eval_app, [str(cv), str(cv), "--compare"])
    lines = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
    assert r.exit_code != 0 and len(lines) == 2 and "its cross-validation cannot be read" in lines[0], r.output


@pytest.mark.slow
def test_a_cross_validation_is_scored_again_into_a_table_of_its_own(tmp_path):
    """echo-eval CV --data D [--tta] [--clean-masks]: each fold run on the patient it held out, the
    same frames as at training (plain: the same Dice), into a table --table and --compare read."""
    from typer.testing import CliRunner

    from echoseg.data.synthetic import write_dataset
    from echoseg.train.cli import eval_app

    data = tmp_path / "d"
    write_dataset(data, videos=6, frames=16, seed=4)
    cfg = TrainConfig(data=str(data), model="unet", width=4, epochs=1, batch_size=4, device="cpu", workers=0,
                      out=str(tmp_path / "cv"))
    run_cv(cfg, 3, [1], only=[0, 2])
    cv = tmp_path / "cv"
    trained = json.loads((cv / "cv.json").read_text())
    runner = CliRunner()

    def ev(*args):
        return runner.invoke(eval_app, [str(a) for a in args], env={"COLUMNS": "250"})

    r = ev(cv, "--data", data, "--out", tmp_path / "plain")
    assert r.exit_code == 0, r.output
    plain = json.loads((tmp_path / "plain" / "cv.json").read_text())
    assert [(x["fold"], x["seed"], x["test_videos"]) for x in plain["rows"]] == \
        [(x["fold"], x["seed"], x["test_videos"]) for x in trained["rows"]]
    for a, b in zip(plain["rows"], trained["rows"]):
        assert a["dice"] == pytest.approx(b["dice"], abs=1e-9)
    assert plain["scored"] == {"from": str(cv), "tta": "none", "clean_masks": False}

    r = ev(cv, "--data", data, "--tta", "shift3", "--clean-masks")  # default out: CV/eval-cv-shift3-clean
    assert r.exit_code == 0, r.output
    out = cv / "eval-cv-shift3-clean"
    again = json.loads((out / "cv.json").read_text())
    assert again["scored"]["tta"] == "shift3" and again["scored"]["clean_masks"] is True
    m = json.loads((out / "fold2-seed1" / "eval-test" / "metrics.json").read_text())
    assert m["tta"] == "shift3" and m["clean_masks"] is True
    assert any(abs(a["dice"] - b["dice"]) > 1e-6 for a, b in zip(again["rows"], trained["rows"]))
    assert "worst patient" in r.output and "--table" in r.output
    t = ev(cv, out, "--table")
    assert t.exit_code == 0 and "eval-cv-shift3-clean" in t.output, t.output
    e = ev(cv, "--data", data, "--ef", "--tta", "shift3")  # the EF read with the views: beside a plain reading
    assert e.exit_code == 0, e.output
    blocks = json.loads((cv / "eval-ef-shift3" / "ef_cv.json").read_text())["seeds"]
    assert blocks["1"]["tta"] == "shift3" and not (cv / "eval-ef").exists()

    r = ev(cv, "--data", data, "--out", cv)
    assert r.exit_code == 1 and "the cross-validation folder itself" in r.output
    assert json.loads((cv / "cv.json").read_text()) == trained
    other = tmp_path / "cv2"
    other.mkdir()
    (other / "cv.json").write_text(json.dumps(trained))  # a trained table (no "scored"): never overwritten
    r = ev(cv, "--data", data, "--out", other)
    assert r.exit_code == 1 and "holds a trained cross-validation" in r.output
    assert json.loads((other / "cv.json").read_text()) == trained
    elsewhere = tmp_path / "d2"
    write_dataset(elsewhere, videos=6, frames=16, seed=9)
    r = ev(cv, "--data", elsewhere, "--out", tmp_path / "x")
    assert r.exit_code == 1 and "held out" in r.output and "pass the data the cross-validation was trained on" in r.output

    for f in (cv / "fold2-seed1").glob("*.pt"):  # one run that cannot be scored: the other still is
        f.unlink()
    r = ev(cv, "--data", data, "--out", tmp_path / "part")
    assert r.exit_code == 1 and "not scored: fold2-seed1" in r.output
    part = json.loads((tmp_path / "part" / "cv.json").read_text())
    assert {x["fold"] for x in part["rows"]} == {0} and part["not_scored"][0].startswith("fold2-seed1")
