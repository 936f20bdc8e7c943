"""echo-eval --ef: the runtime's EF read-out against FileList.csv; metrics, files, and bad input."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from echoseg.train.ef import ef_class, ef_metrics


def _row(name, true, est, ed_err=0, es_err=1, note=""):
    return {"FileName": name, "ef_true": true, "ef_estimate": est, "beats": 1 if est is not None else 0,
            "ed_traced": 10, "es_traced": 30, "ed_error_frames": ed_err if est is not None else None,
            "es_error_frames": es_err if est is not None else None, "note": note}


def test_metrics_on_known_numbers():
    rows = [_row("a", 60.0, 62.0), _row("b", 30.0, 27.0), _row("c", 45.0, 51.0), _row("d", 55.0, None, note="no full beat found"),
            _row("e", float("nan"), 50.0), _row("f", 150.0, 50.0)]
    m = ef_metrics(rows)
    d = np.array([2.0, -3.0, 6.0])
    assert m["n"] == 3 and m["videos"] == 6 and m["left_out_bad_true_ef"] == 2 and m["no_beat_found"] == 1
    assert m["mae"] == pytest.approx(np.abs(d).mean()) and m["bias"] == pytest.approx(d.mean())
    assert m["rmse"] == pytest.approx(math.sqrt((d ** 2).mean()))
    sd = d.std(ddof=1)
    assert m["limits_of_agreement"] == pytest.approx([d.mean() - 1.96 * sd, d.mean() + 1.96 * sd])
    t, e = np.array([60.0, 30.0, 45.0]), np.array([62.0, 27.0, 51.0])
    assert m["pearson_r"] == pytest.approx(np.corrcoef(t, e)[0, 1])
    assert m["r2"] == pytest.approx(1 - (d ** 2).sum() / ((t - t.mean()) ** 2).sum())
    assert m["class_agreement"] == pytest.approx(2 / 3)  # 45 -> 51 crosses from 40-50 to >50
    assert m["class_confusion"]["40-50->>50"] == 1
    assert m["ed_frame_error"]["mean_abs"] == 0 and m["es_frame_error"]["n"] == 5
    assert "out of range" in rows[4]["note"] and "out of range" in rows[5]["note"]
    assert [ef_class(x) for x in (39.9, 40.0, 50.0, 50.1)] == ["<40", "40-50", "40-50", ">50"]
    assert m["worst_error"] == pytest.approx(6.0) and m["worst_video"] == "c"


def test_flags_are_counted_and_split_all_takes_every_video(synth_dir):
    from echoseg.data.echonet import read_filelist, split_records

    rows = [_row("a", 60.0, 62.0) | {"flags": ["one_beat"]}, _row("b", 30.0, 27.0) | {"flags": ["one_beat", "clip_edge"]},
            _row("c", 45.0, 51.0) | {"flags": []}]
    m = ef_metrics(rows)
    assert m["flagged"] == {"one_beat": 2, "clip_edge": 1, "beats_disagree": 0, "many_outlier_frames": 0}
    every = split_records(synth_dir, "all")
    assert len(every) == len(read_filelist(synth_dir)) == sum(len(split_records(synth_dir, s)) for s in ("train", "val", "test"))


def test_no_usable_video_gives_n_zero_not_a_crash():
    m = ef_metrics([_row("a", float("nan"), None)])
    assert m["n"] == 0 and "mae" not in m


def _edit_filelist(root: Path, ef_by_name: dict[str, str]) -> None:
    path = root / "FileList.csv"
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        r["EF"] = ef_by_name.get(r["FileName"], r["EF"])
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def test_echo_eval_ef_end_to_end_with_bad_input(tmp_path, unet_ckpt):
    from typer.testing import CliRunner

    from echoseg.data.synthetic import write_dataset
    from echoseg.data.video import write_video
    from echoseg.train.cli import eval_app

    root = write_dataset(tmp_path / "d", videos=20, frames=48, seed=11)
    with open(root / "FileList.csv", newline="") as fh:
        test = [r["FileName"] for r in csv.DictReader(fh) if r["Split"] == "TEST"]
    assert len(test) == 3
    _edit_filelist(root, {test[0]: "nan", test[1]: "140"})
    still = np.full((48, 112, 112, 3), 70, np.uint8)  # a video with no heartbeat at all
    write_video(root / "Videos" / f"{test[2]}.avi", still, 50)
    run = unet_ckpt.parent
    r = CliRunner().invoke(eval_app, [str(run), "--data", str(root), "--split", "test", "--ef", "--out", str(tmp_path / "ev")])
    assert r.exit_code == 0, r.output
    out = tmp_path / "ev"
    with open(out / "ef.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [row["FileName"] for row in rows] == test
    flat = rows[2]
    assert flat["ef_estimate"] == "n/a" and flat["beats"] == "0" and "no beat found" in flat["note"]
    assert "out of range" in rows[0]["note"] and "out of range" in rows[1]["note"]
    m = json.loads((out / "metrics.json").read_text())
    assert "dice" in m and m["ef"]["n"] == 0 and m["ef"]["videos"] == 3
    assert m["ef"]["left_out_bad_true_ef"] == 2
    # the still video has no beat; whether the barely trained fixture model finds beats in the other
    # two depends on the machine's float rounding, so the count must match ef.csv, not a constant
    assert m["ef"]["no_beat_found"] == sum(row["ef_estimate"] == "n/a" for row in rows) >= 1
    assert (out / "ef_bland_altman.png").stat().st_size > 0 and (out / "ef_scatter.png").stat().st_size > 0
    assert "EF: no video with both a valid true EF" in r.output


# --- any model through the runtime: pretrained, export folders, single graphs ----------------------

from test_export_fixtures import bundled, export_base, exported, no_tensorrt  # noqa: E402,F401


def _test_videos(root: Path) -> list[dict]:
    with open(root / "FileList.csv", newline="") as fh:
        return [r for r in csv.DictReader(fh) if r["Split"] == "TEST"]


def _runtime_ef(model, root: Path, backend: str = "auto", method: str = "discs") -> dict[str, float | None]:
    """Each test video's EF as ef_from_masks reads it from the raw masks the runtime's session makes."""
    from echoseg.backends.choose import open_session
    from echoseg.runtime.cardiac import ef_from_masks
    from echoseg.runtime.stream import stream_video

    out = {}
    session = open_session(model, backend)
    try:
        for r in _test_videos(root):
            masks: list = []
            stream_video(root / "Videos" / f"{r['FileName']}.avi", session, clean_masks=False,
                         sink=lambda i, f, m: masks.append(m.astype(np.uint8)))
            out[r["FileName"]] = ef_from_masks(np.stack(masks), float(r["FPS"]), method=method)["ef_estimate_pct"]["value"]
    finally:
        session.close()
    return out


def _check_ef_csv(out: Path, expected: dict[str, float | None]) -> dict:
    with open(out / "ef.csv", newline="") as fh:
        rows = {r["FileName"]: r for r in csv.DictReader(fh)}
    assert list(rows) == list(expected)
    for name, ef in expected.items():
        if ef is None:
            assert rows[name]["ef_estimate"] == "n/a" and rows[name]["beats"] == "0"
        else:
            assert float(rows[name]["ef_estimate"]) == pytest.approx(ef, abs=0.006)
            assert int(rows[name]["beats"]) >= 1 and rows[name]["volume_unit"] == "px3"
    return json.loads((out / "metrics.json").read_text())["ef"]


def test_echo_eval_ef_runs_the_bundled_model_and_an_export_folder(bundled, exported, synth_dir, tmp_path):
    """Failed before: "pretrained: no such checkpoint or run directory"; exports could not be validated."""
    from typer.testing import CliRunner

    from echoseg.train.cli import eval_app

    runner = CliRunner()
    for i, (target, backend) in enumerate((("pretrained", "auto"), (str(exported / "matae-unet"), "onnxruntime"))):
        out = tmp_path / f"ev{i}"
        r = runner.invoke(eval_app, [target, "--data", str(synth_dir), "--split", "test", "--ef", "--out", str(out),
                                     "--backend", backend], env={"COLUMNS": "250"})
        assert r.exit_code == 0, r.output
        expected = _runtime_ef(target, synth_dir, backend)
        assert any(v is not None for v in expected.values()), expected  # the comparison below compares numbers
        block = _check_ef_csv(out, expected)
        assert block["videos"] == len(_test_videos(synth_dir)) and block["volume_method"] == "discs"
        assert "EF" in r.output and "no such checkpoint" not in r.output


def test_evaluate_ef_on_a_single_graph_with_area_length(tmp_path, synth_dir):
    from tiny_onnx import write_tiny_onnx

    from echoseg.train.ef import evaluate_ef

    graph = write_tiny_onnx(tmp_path / "tiny.onnx")
    block = evaluate_ef(graph, synth_dir, "test", tmp_path / "ev", method="area-length")
    assert block["volume_method"] == "area-length" and block["videos"] == len(_test_videos(synth_dir))
    _check_ef_csv(tmp_path / "ev", _runtime_ef(graph, synth_dir, method="area-length"))


def test_an_unknown_ef_volume_is_refused_in_one_line_before_any_work(tmp_path):
    from typer.testing import CliRunner

    from echoseg.train.cli import eval_app

    r = CliRunner().invoke(eval_app, ["pretrained", "--data", str(tmp_path), "--ef", "--ef-volume", "biplane"])
    assert r.exit_code == 1 and "--ef-volume 'biplane': use one of discs, area-length" in r.output


# --- cross-validated EF: each held-out video read by the fold model that never saw it ----------------

def _cv_of(tmp_path, root: Path, models: list[Path]) -> tuple[Path, dict[str, int]]:
    """A cross-validation folder as echo-train --folds writes it, fold f holding out two of root's
    videos and its run being models[f] (one seed); returns it and each held-out video's fold."""
    import shutil

    with open(root / "FileList.csv", newline="") as fh:
        names = [r["FileName"] for r in csv.DictReader(fh)]
    cv, rows, fold_of = tmp_path / "cv", [], {}
    for fold, model in enumerate(models):
        videos = names[2 * fold: 2 * fold + 2]
        (cv / f"fold{fold}-seed1").mkdir(parents=True)
        shutil.copy(model, cv / f"fold{fold}-seed1" / "best.pt")
        rows.append({"fold": fold, "seed": 1, "g": 1.0, "dice": 0.9, "test_videos": " ".join(videos)})
        fold_of |= {v: fold for v in videos}
    (cv / "cv.json").write_text(json.dumps({"model": "unet", "width": 8, "folds": len(models), "rows": rows}))
    return cv, fold_of


def test_cross_validated_ef_reads_each_video_with_its_own_fold_model(tmp_path, synth_dir, unet_ckpt, matae_ckpt):
    from echoseg.train.ef import evaluate_cv_ef, measure_videos

    cv, fold_of = _cv_of(tmp_path, synth_dir, [unet_ckpt, matae_ckpt])
    info = json.loads((cv / "cv.json").read_text())
    info["rows"][0]["test_videos"] += " ghost"  # held out by fold 0 but not in FileList.csv: named, not read
    (cv / "cv.json").write_text(json.dumps(info))
    blocks = evaluate_cv_ef(cv, synth_dir)
    assert blocks[1]["not_in_filelist"] == ["ghost"]
    with open(cv / "eval-ef" / "seed1" / "ef.csv", newline="") as fh:
        got = {r["FileName"]: r for r in csv.DictReader(fh)}
    assert {v: int(r["fold"]) for v, r in got.items()} == fold_of
    for fold, model in enumerate((unet_ckpt, matae_ckpt)):
        mine = [v for v, f in fold_of.items() if f == fold]
        for r in measure_videos(model, synth_dir, "all", names=mine):
            want = r["ef_estimate"]
            assert got[r["FileName"]]["ef_estimate"] == ("n/a" if want is None else f"{want:.2f}")
    # the two models read differently, so the test can tell which read what
    assert measure_videos(unet_ckpt, synth_dir, "all", names=list(fold_of)) != measure_videos(
        matae_ckpt, synth_dir, "all", names=list(fold_of))
    b = blocks[1]
    assert b["videos"] == 4 and b["folds"] == 2 and b["listed_not_held_out"] == 12 - 4
    saved = json.loads((cv / "eval-ef" / "ef_cv.json").read_text())
    assert saved["seeds"]["1"]["videos"] == 4
    assert (cv / "eval-ef" / "seed1" / "ef_scatter.png").stat().st_size > 0


def test_cross_validated_ef_goes_on_past_a_missing_fold_run_and_cli_says_what_a_cv_folder_needs(
        tmp_path, synth_dir, unet_ckpt):
    import shutil

    from typer.testing import CliRunner

    from echoseg.train.cli import eval_app

    cv, fold_of = _cv_of(tmp_path, synth_dir, [unet_ckpt, unet_ckpt])
    shutil.rmtree(cv / "fold1-seed1")  # deleted to save space: its two videos fail, fold 0's are read
    r = CliRunner().invoke(eval_app, [str(cv), "--data", str(synth_dir), "--ef", "--out", str(tmp_path / "ef")],
                           env={"COLUMNS": "250"})
    assert r.exit_code == 0, r.output
    assert "seed 1, each video read by the fold model that never saw it: EF MAE" in r.output
    with open(tmp_path / "ef" / "seed1" / "ef.csv", newline="") as fh:
        rows = {x["FileName"]: x for x in csv.DictReader(fh)}
    failed = {v for v, x in rows.items() if x["note"].startswith("failed: fold1-seed1 cannot be opened")}
    assert failed == {v for v, f in fold_of.items() if f == 1} and len(rows) == 4
    assert json.loads((tmp_path / "ef" / "seed1" / "metrics.json").read_text())["ef"]["failed"] == 2
    # without --ef the folds are scored again, which needs the data they were dealt from: these
    # hand-made folds (two videos each) are not how --folds 2 deals this dataset, so it is refused
    r = CliRunner().invoke(eval_app, [str(cv), "--data", str(synth_dir)])
    assert r.exit_code == 1 and "pass the data the cross-validation was trained on" in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1
    frames = tmp_path / "frames"
    (frames / "images").mkdir(parents=True)
    r = CliRunner().invoke(eval_app, [str(cv), "--data", str(frames), "--ef"])
    assert r.exit_code == 1 and "--ef needs an EchoNet-Dynamic folder" in r.output, r.output
