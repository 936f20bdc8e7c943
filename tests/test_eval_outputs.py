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


def test_echo_eval_reads_the_worst_video_as_a_per_patient_bar_does(tmp_path, monkeypatch):
    """Each video's mean Dice over its frames, the mean of videos (not of frames) and the worst video,
    in metrics.json for every granularity and in one printed line."""
    import json

    import numpy as np
    from typer.testing import CliRunner

    from echoseg.data.folds import group_by_video
    from echoseg.data.frames import load_frames
    from echoseg.train import eval as ev
    from echoseg.train.cli import eval_app

    root = write_frames(tmp_path / "syn", videos=7, frames=8, seed=3, every=4, style="echo")
    fs = load_frames(root, "train")
    groups = group_by_video(fs.names)
    assert len(groups) >= 3 and len({len(ix) for ix in groups.values()}) == 1
    bad = sorted(groups)[1]
    worse = sorted(groups)[2]

    def predict(images, g):
        pred = fs.masks.copy()
        if g == 1.0:
            pred[groups[bad][0]] = False  # Dice 0 on one frame of `bad`
        else:  # the half-width network loses two frames of `worse`
            pred[groups[worse][0]] = False
            pred[groups[worse][1]] = False
        return pred

    fake = ev.Scorer("matae-unet", 8, "fake", (112, 112), (1.0, 0.5), predict, lambda g: 0.0, tmp_path)
    monkeypatch.setattr(ev, "scorer_for", lambda target, device="auto", backend="auto", tta="none": fake)
    (tmp_path / "run").mkdir()
    r = CliRunner().invoke(eval_app, [str(tmp_path / "run"), "--data", str(root), "--split", "train",
                                      "--out", str(tmp_path / "ev")])
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    n = len(groups[bad])
    full, half = m["videos"], m["granularities"]["0.5"]["videos"]
    assert full == m["granularities"]["1"]["videos"] and full["count"] == len(groups)
    assert full["worst"] == {"video": bad, "dice": pytest.approx((n - 1) / n)}
    assert half["worst"] == {"video": worse, "dice": pytest.approx((n - 2) / n)}
    assert full["dice"][worse] == pytest.approx(1.0) and half["dice"][bad] == pytest.approx(1.0)
    assert full["dice_mean"] == pytest.approx(np.mean([1.0] * (len(groups) - 1) + [(n - 1) / n]))
    assert m["dice"] == pytest.approx(1 - 1 / len(fs))  # frames averaged, as before
    line = next(ln for ln in r.output.splitlines() if "by video" in ln)
    assert f"({len(groups)} videos" in line and f"worst {bad} {(n - 1) / n:.4f}" in line
    assert f"g=0.5 mean {np.mean([1.0] * (len(groups) - 1) + [(n - 2) / n]):.4f}, worst {worse}" in line


def test_error_sites_split_what_a_mask_marks_beside_the_label_past_its_base_and_misses():
    import numpy as np

    from echoseg.train.metrics import error_sites

    t = np.zeros((2, 40, 30), bool)
    t[:, 10:21, 10:20] = True  # rows 10-20: the base is row 20
    p = t.copy()
    p[0, 10:21, 20:22] = True  # 2 columns beside it, 11 rows: 22 px
    p[0, 21:24, 10:20] = True  # 3 rows past its base: 30 px
    p[0, 10:12, 10:20] = False  # 2 rows at the apex missed: 20 px
    p[1] = False
    p[1, 0:3, 0:5] = True  # frame 1: only 15 px above the label, all of it missed
    s = error_sites(p, t)
    assert s["beside"].tolist() == [22, 15] and s["past_base"].tolist() == [30, 0]
    assert s["missed"].tolist() == [20, 110]


def test_error_sites_by_third_pools_each_videos_largest_and_smallest_thirds():
    import numpy as np

    from echoseg.train.metrics import error_sites_by_third

    area = np.array([100, 90, 80, 70, 60, 50, 200, 100, 150])  # video a: 6 frames; b: 3 frames
    groups = {"a": [0, 1, 2, 3, 4, 5], "b": [6, 7, 8]}
    sites = {"beside": np.array([0, 0, 5, 5, 30, 20, 0, 40, 9]), "past_base": np.zeros(9, int),
             "missed": np.array([10, 20, 0, 0, 0, 0, 50, 0, 0])}
    out = error_sites_by_third(sites, area, groups)
    # largest thirds: a's frames 0 and 1 (100, 90), b's frame 6 (200); smallest: a's 4, 5 and b's 7
    assert out["largest"]["frames"] == 3 and out["smallest"]["frames"] == 3
    assert out["largest"]["missed"] == pytest.approx((10 + 20 + 50) / (100 + 90 + 200))
    assert out["largest"]["beside"] == 0
    assert out["smallest"]["beside"] == pytest.approx((30 + 20 + 40) / (60 + 50 + 100))
    assert out["smallest"]["missed"] == 0


def test_echo_eval_says_where_the_masks_err_near_ed_and_near_es(tmp_path, monkeypatch):
    """A model that runs wide on a video's small (ES-like) frames and stops short on its large
    (ED-like) ones reads so in metrics.json, frames.csv and one printed line."""
    import csv
    import json

    import cv2
    import numpy as np
    from typer.testing import CliRunner

    from echoseg.data.folds import group_by_video
    from echoseg.data.frames import load_frames
    from echoseg.train import eval as ev
    from echoseg.train.cli import eval_app

    root = write_frames(tmp_path / "syn", videos=7, frames=8, seed=3, every=4, style="echo")
    fs = load_frames(root, "train")
    area = fs.masks.sum((1, 2))
    small, large = set(), set()
    for ix in group_by_video(fs.names).values():
        lo, hi = np.quantile(area[ix], [1 / 3, 2 / 3])
        small |= {i for i in ix if area[i] <= lo}
        large |= {i for i in ix if area[i] >= hi}

    def predict(images, g):
        pred = fs.masks.copy()
        for i in range(len(pred)):
            if i in small and i not in large:  # wider by 2 px all round
                pred[i] = cv2.dilate(pred[i].astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
            elif i in large and i not in small:  # its top rows missed
                rows = np.nonzero(pred[i].any(1))[0]
                pred[i, : rows.min() + 10] = False
        return pred

    fake = ev.Scorer("unet", 8, "fake", (112, 112), (1.0,), predict, lambda g: 0.0, tmp_path)
    monkeypatch.setattr(ev, "scorer_for", lambda target, device="auto", backend="auto", tta="none": fake)
    (tmp_path / "run").mkdir()
    r = CliRunner().invoke(eval_app, [str(tmp_path / "run"), "--data", str(root), "--split", "train",
                                      "--out", str(tmp_path / "ev")])
    assert r.exit_code == 0, r.output
    es = json.loads((tmp_path / "ev" / "metrics.json").read_text())["error_sites"]
    assert es["smallest"]["beside"] > 0.1 and es["smallest"]["missed"] == 0
    assert es["largest"]["missed"] > 0.05 and es["largest"]["beside"] == 0 and es["largest"]["past_base"] == 0
    assert es["smallest"]["past_base"] > 0  # dilation reaches below the base too
    with open(tmp_path / "ev" / "frames.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    wide = [r for r in rows if int(r["area_pred_px"]) > int(r["area_true_px"])]
    assert wide and all(int(r["beside_px"]) + int(r["past_base_px"]) == int(r["area_pred_px"]) - int(r["area_true_px"])
                        for r in wide)
    line = next(ln for ln in r.output.splitlines() if "where the g=1 masks err" in ln)
    assert f"smallest third (near ES) beside {es['smallest']['beside']:.1%}" in line
    assert f"largest third (near ED) beside 0.0%, past the base 0.0%, missed {es['largest']['missed']:.1%}" in line
