"""Paired comparison with a bootstrap over videos; folds and splits that never cut a video."""

from __future__ import annotations

import numpy as np
import pytest

from echoseg.data.folds import fold_sets, fold_videos, group_by_video, split_videos, video_of
from echoseg.data.frameset import DataError, FrameSet
from echoseg.train.compare import Scored, compare, paired_difference, sides


def _scored(label, model, values: dict[str, float], g=1.0):
    return Scored(label, model, 16, {g: dict(values)})


def _frames(videos=8, per=20):
    return [f"v{v:02d}_{f:04d}" for v in range(videos) for f in range(per)]


def test_planted_difference_is_found_and_null_covers_zero():
    rng = np.random.default_rng(1)
    names = _frames()
    base = {n: 0.85 + 0.05 * rng.standard_normal() for n in names}
    better = {n: v + 0.03 + 0.01 * rng.standard_normal() for n, v in base.items()}
    d = paired_difference([_scored("a", "unet", base)], [_scored("b", "matae", better)], 1.0, 1.0)
    assert d.mean == pytest.approx(0.03, abs=0.005)
    assert 0 < d.ci95[0] < d.mean < d.ci95[1]
    assert d.videos == 8 and d.frames == 160
    # A null difference: per-video offsets that cancel on average; the interval must cover 0.
    offsets = {f"v{v:02d}": (0.02 if v % 2 else -0.02) for v in range(8)}
    null = {n: v + offsets[video_of(n)] for n, v in base.items()}
    d0 = paired_difference([_scored("a", "unet", base)], [_scored("b", "matae", null)], 1.0, 1.0)
    assert d0.ci95[0] < 0 < d0.ci95[1]


def test_bootstrap_resamples_whole_videos():
    # Two videos, all frames of one better by 0.1 and of the other worse by 0.1: frame-level
    # resampling of 400 frames would give an interval of about +-0.01; by video it spans +-0.1.
    names = _frames(videos=2, per=200)
    a = {n: 0.8 for n in names}
    b = {n: 0.8 + (0.1 if n.startswith("v00") else -0.1) for n in names}
    d = paired_difference([_scored("a", "x", a)], [_scored("b", "y", b)], 1.0, 1.0, n_boot=4000)
    assert d.mean == pytest.approx(0.0, abs=1e-9)
    assert d.ci95[0] == pytest.approx(-0.1, abs=1e-9) and d.ci95[1] == pytest.approx(0.1, abs=1e-9)


def test_seeds_are_averaged_and_summarised():
    names = _frames(videos=4, per=5)
    a = [_scored(f"u{s}", "unet", {n: 0.80 + 0.01 * s for n in names}) for s in (1, 2, 3)]
    b = [_scored(f"m{s}", "matae", {n: 0.84 + 0.01 * s for n in names}) for s in (1, 2, 3)]
    res = compare(a + b, n_boot=200)
    assert res["a_model"] == "unet w16" and res["b_model"] == "matae w16"
    runs = {r["side"]: r for r in res["runs"]}
    assert runs["A"]["dice_mean"] == pytest.approx(0.82) and runs["A"]["dice_sd"] == pytest.approx(0.01)
    assert runs["B"]["runs"] == 3
    assert res["differences"][0]["mean"] == pytest.approx(0.04)
    with pytest.raises(ValueError, match="needs two runs"):
        sides(a)  # three runs of one model: nothing to compare against


def test_no_common_frames_is_an_error():
    with pytest.raises(ValueError, match="share no scored frames"):
        paired_difference([_scored("a", "x", {"v1_0001": 0.8})], [_scored("b", "y", {"v2_0001": 0.8})], 1.0, 1.0)


def test_video_of_names():
    assert video_of("0X1E12EEE43FD913E5_0042") == "0X1E12EEE43FD913E5"
    assert video_of("clip_a_b_0007") == "clip_a_b"
    assert video_of("SYN000_00003#17") == "SYN000_00003"
    assert video_of("frame") == "frame"


def test_kfold_never_puts_a_video_in_two_folds():
    videos = [f"p{i}" for i in range(7)]
    for k in (2, 3, 7):
        folds = fold_videos(videos, k, seed=3)
        flat = [v for f in folds for v in f]
        assert sorted(flat) == sorted(videos) and len(flat) == len(set(flat))
        assert max(map(len, folds)) - min(map(len, folds)) <= 1
    with pytest.raises(DataError, match="only 7 videos"):
        fold_videos(videos, 8)


def test_fold_sets_are_disjoint_by_video():
    names = _frames(videos=6, per=3)
    fs = FrameSet(np.zeros((len(names), 4, 4, 3), np.uint8), np.zeros((len(names), 4, 4), bool), names,
                  [""] * len(names))
    seen_test = []
    for fold in range(6):
        tr, va, te = fold_sets(fs, 6, fold)
        vids = [set(map(video_of, s.names)) for s in (tr, va, te)]
        assert vids[0].isdisjoint(vids[1]) and vids[0].isdisjoint(vids[2]) and vids[1].isdisjoint(vids[2])
        assert len(vids[2]) == 1 and len(vids[1]) == 1 and len(vids[0]) == 4
        assert len(tr) + len(va) + len(te) == len(fs)
        seen_test += sorted(vids[2])
    assert sorted(seen_test) == sorted(group_by_video(names))  # leave-one-patient-out covers everyone


def test_flat_split_by_video():
    parts = split_videos([f"p{i}" for i in range(10)], (0.8, 0.1), seed=0)
    assert [len(parts[s]) for s in ("train", "val", "test")] == [8, 1, 1]
    parts = split_videos(["a", "b", "c"], (0.8, 0.1), seed=0)
    assert all(len(parts[s]) == 1 for s in ("train", "val", "test"))


def test_flat_frame_folder_splits_never_cut_a_video(tmp_path):
    import cv2

    from echoseg.data.dataset import load_split

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    img, mask = np.full((32, 32), 90, np.uint8), np.zeros((32, 32), np.uint8)
    mask[8:24, 8:24] = 255
    for v in range(10):
        for f in range(3):
            cv2.imwrite(str(tmp_path / "images" / f"vid{v}_{f:04d}.png"), img)
            cv2.imwrite(str(tmp_path / "masks" / f"vid{v}_{f:04d}.png"), mask)
    parts = {s: {video_of(n) for n in load_split(tmp_path, s).names} for s in ("train", "val", "test")}
    assert [len(parts[s]) for s in ("train", "val", "test")] == [8, 1, 1]
    assert parts["train"].isdisjoint(parts["val"] | parts["test"]) and parts["val"].isdisjoint(parts["test"])


def _cv_folder(root, name, model, config, dice, videos=("P0", "P1", "P2")):
    """A cross-validation folder as echo-train --folds writes it: cv.json and each run's frames.csv."""
    import json

    folder = root / name
    rows = []
    for (fold, seed), d in sorted(dice.items()):
        rows.append({"fold": fold, "seed": seed, "g": 1.0, "dice": d, "frames": 3, "test_videos": videos[fold]})
        run = folder / f"fold{fold}-seed{seed}" / "eval-test"
        run.mkdir(parents=True)
        lines = "".join(f"{videos[fold]}_{i:04d},{d}\n" for i in range(3))
        run.joinpath("frames.csv").write_text("name,dice\n" + lines)
    folder.joinpath("cv.json").write_text(json.dumps({"model": model, "width": 16, "folds": len(videos),
                                                      "config": config, "rows": rows}))
    return folder


def test_two_recipes_of_one_model_are_compared_patient_by_patient(tmp_path):
    from echoseg.train.compare import read_cv

    light = {(0, 1): 0.90, (0, 2): 0.88, (1, 1): 0.60, (1, 2): 0.64, (2, 1): 0.93, (2, 2): 0.95}
    heavy = {(0, 1): 0.89, (0, 2): 0.86, (1, 1): 0.70, (1, 2): 0.66, (2, 1): 0.93, (2, 2): 0.96}
    a = _cv_folder(tmp_path, "light", "unet", {"epochs": 20, "augment_strength": "light"}, light)
    b = _cv_folder(tmp_path, "heavy", "unet", {"epochs": 20, "augment_strength": "heavy"}, heavy)
    res = compare(read_cv(a) + read_cv(b), n_boot=200)
    assert res["a"] == ["light/seed1", "light/seed2"] and res["b"] == ["heavy/seed1", "heavy/seed2"]
    assert res["recipe_difference"] == {"augment_strength": ["light", "heavy"]}
    (p,) = res["patients"]
    assert [r["videos"] for r in p["folds"]] == ["P0", "P1", "P2"]
    assert p["folds"][1]["a"] == [0.60, 0.64] and p["folds"][1]["diff"] == pytest.approx(0.06)
    assert p["a_worst"] == {"fold": 1, "videos": "P1", "dice": pytest.approx(0.62)}
    assert p["b_worst"]["dice"] == pytest.approx(0.68)
    assert p["a_patients_mean"] == pytest.approx((0.89 + 0.62 + 0.94) / 3)
    diffs = [heavy[k] - light[k] for k in light]
    assert p["paired_runs"] == {"runs": 6, "mean": pytest.approx(np.mean(diffs)), "min": pytest.approx(-0.02),
                                "max": pytest.approx(0.10), "b_ahead": 3}
    # frame by frame the same runs give the same mean difference
    assert res["differences"][0]["mean"] == pytest.approx(np.mean(diffs))


def test_patients_pair_only_the_folds_both_scored_and_refuse_other_data(tmp_path):
    from echoseg.train.compare import read_cv

    a = _cv_folder(tmp_path, "a", "unet", {}, {(0, 1): 0.9, (1, 1): 0.6, (2, 1): 0.8})
    b = _cv_folder(tmp_path, "b", "matae-unet", {}, {(1, 1): 0.7})  # one fold so far (echo-train --fold 1)
    res = compare(read_cv(a) + read_cv(b), n_boot=50)  # two models: split by model, patients all the same
    (p,) = res["patients"]
    assert [r["fold"] for r in p["folds"]] == [1] and (p["folds_a"], p["folds_b"]) == (3, 1)
    assert p["paired_runs"]["runs"] == 1 and p["paired_runs"]["mean"] == pytest.approx(0.1)
    assert "recipe_difference" not in res  # two models, not two recipes
    # the same patients dealt into folds otherwise (another --folds): frames pair, folds do not
    c = _cv_folder(tmp_path, "c", "unet", {}, {(1, 1): 0.7}, videos=("P0", "P2", "P1"))
    with pytest.raises(ValueError, match="fold 1 holds out 'P1' on one side and 'P2' on the other"):
        compare(read_cv(a) + read_cv(c), n_boot=50)


def test_cli_compares_two_cross_validation_folders_of_one_model(tmp_path):
    import json

    from typer.testing import CliRunner

    from echoseg.train.cli import eval_app

    a = _cv_folder(tmp_path, "scratch", "unet", {"init": ""}, {(0, 1): 0.9, (1, 1): 0.6, (2, 1): 0.8})
    b = _cv_folder(tmp_path, "bundle", "unet", {"init": "pretrained"}, {(0, 1): 0.92, (1, 1): 0.58, (2, 1): 0.85})
    r = CliRunner().invoke(eval_app, [str(a), str(b), "--compare", "--out", str(tmp_path / "cmp")])
    assert r.exit_code == 0, r.output
    assert "A and B differ in init '' (A) / 'pretrained' (B)" in r.output
    assert "worst patient" in r.output and "B ahead in 2 of 3" in r.output
    saved = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert saved["patients"][0]["b_worst"]["videos"] == "P1"
