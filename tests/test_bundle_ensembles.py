"""scripts/bundle_ensembles.py: seed ensembles of bundle candidates (figures checked by hand)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest


@pytest.fixture(scope="module")
def be(load_script):
    return load_script("bundle_ensembles")


def _frames() -> dict:
    """Two patients, two frames each: an old one (train) and an unseen one (test); each truth a 4x4 square."""
    masks = np.zeros((4, 8, 8), bool)
    masks[:, 2:6, 2:6] = True
    return {"names": ["A_0000", "A_0001", "B_0000", "B_0001"], "splits": ["train", "train", "test", "test"],
            "masks": masks}


def test_an_ensemble_averages_probabilities_and_scores_per_patient_by_hand(be):
    f = _frames()
    exact = np.where(f["masks"], 255, 0).astype(np.uint8)
    half = exact.copy()
    half[:, 2:4, 2:6] = 0  # finds the lower half of the square: Dice 2*8/(8+16) = 2/3
    # patient B: the second run says 150 outside the square in one column (alone: a 4-px false positive),
    # which the mean with the first run's 0 there (75) drops
    noisy = exact.copy()
    noisy[2:, 2:6, 6] = 150
    one = be.ensemble_run("c", (1,), [half], f)
    assert one["patients"]["A"]["dice"] == pytest.approx(2 / 3, abs=1e-4)
    assert one["groups"]["old"]["dice"] == pytest.approx(2 / 3, abs=1e-4)
    alone = be.ensemble_run("c", (2,), [noisy], f)
    assert alone["patients"]["B"]["dice"] == pytest.approx(2 * 16 / (20 + 16), abs=1e-4)
    both = be.ensemble_run("c", (1, 2), [exact, noisy], f)
    assert both["seeds"] == [1, 2] and both["patients"]["B"]["dice"] == 1.0 and both["patients"]["A"]["dice"] == 1.0
    # a pixel at 255 and 0 averages to 127.5: in (the cut is >= 0.5)
    split = be.ensemble_run("c", (1, 3), [exact, np.zeros_like(exact)], f)
    assert split["patients"]["A"]["dice"] == 1.0
    assert both["groups"]["unseen"]["worst_patient"] == 1.0 and split["groups"]["old"]["frames"] == 2


def test_clean_masks_keep_the_upper_right_blob_as_echo_run_does(be):
    """A second blob lower left (the right heart, as a model marks it) costs Dice raw, not after clean-up."""
    f = _frames()
    p = np.where(f["masks"], 255, 0).astype(np.uint8)
    p[:, 7, 0:2] = 255  # 2 px below and left of the square, not touching it
    raw, clean = (be.ensemble_run("c", (1,), [p], f, clean=c) for c in (False, True))
    assert raw["patients"]["A"]["dice"] == pytest.approx(2 * 16 / (18 + 16), abs=1e-4)
    assert clean["patients"]["A"]["dice"] == 1.0 and clean["patients"]["B"]["dice"] == 1.0


def test_combinations_are_all_or_a_seeded_draw(be):
    assert be.combos([3, 1, 2], 2, 10) == [(1, 2), (1, 3), (2, 3)]
    drawn = be.combos(list(range(10)), 3, 7)
    assert len(drawn) == 7 == len(set(drawn)) and drawn == be.combos(list(range(10)), 3, 7)
    assert all(len(c) == 3 for c in drawn)


def test_the_table_groups_ensembles_by_candidate_and_size(be):
    f = _frames()
    exact = np.where(f["masks"], 255, 0).astype(np.uint8)
    empty = np.zeros_like(exact)
    runs = [be.ensemble_run("c", (1,), [exact], f), be.ensemble_run("c", (2,), [empty], f),
            be.ensemble_run("c", (1, 2), [exact, empty], f)]
    table = be.summarize(runs)
    assert set(table) == {"c x1", "c x2"} and table["c x1"]["ensembles"] == 2 and table["c x2"]["ensembles"] == 1
    assert table["c x1"]["nine"]["dice"] == pytest.approx(0.5) and table["c x1"]["nine"]["lowest_worst_patient"] == 0.0
    assert table["c x2"]["unseen"]["dice"] == 1.0
    md = be.markdown(table)
    assert "| c x1 | 2 | 0.500 (0.500) |" in md and "| c x2 | 1 | 1.000 (0.000) |" in md


def _real(root: Path) -> Path:
    """A frame-folder set in echo-real-dev's layout from synthetic videos (two patients per split)."""
    from echoseg.data.synthetic import make_video

    for split, seeds in (("train", (1, 2)), ("val", (3,)), ("test", (4, 5))):
        for d in ("images", "masks"):
            (root / split / d).mkdir(parents=True)
        for s in seeds:
            v = make_video(s, frames=4)
            for i in range(4):
                cv2.imwrite(str(root / split / "images" / f"P{s}_{i:04d}.png"), v.frames[i][..., 0])
                cv2.imwrite(str(root / split / "masks" / f"P{s}_{i:04d}.png"), v.masks[i].astype(np.uint8) * 255)
    return root


def _eval_dice(ckpt: Path, real: Path, out: Path, clean: bool) -> dict[str, float]:
    """echo-eval's mean per-frame Dice of each unseen (test) patient, for the same checkpoint."""
    import csv

    from echoseg.train.eval import evaluate

    r = evaluate(ckpt, real, "test", out, "cpu", clean=clean)
    with open(Path(r["out"]) / "frames.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {x["name"].split("_")[0] for x in rows} == {"P4", "P5"}
    return {pid: float(np.mean([float(x["dice"]) for x in rows if x["name"].startswith(pid + "_")]))
            for pid in ("P4", "P5")}


def test_main_scores_runs_as_the_eval_does_and_ensembles_them(be, matae_ckpt, tmp_path, capsys):
    real = _real(tmp_path / "real")
    runs = [{"candidate": "c", "seed": 1, "checkpoint": str(matae_ckpt)},
            {"candidate": "c", "seed": 2, "checkpoint": str(matae_ckpt)},
            {"candidate": "c", "seed": 3, "checkpoint": str(tmp_path / "gone.pt")}]
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "summary.json").write_text(json.dumps({"runs": runs}))
    assert be.main([str(tmp_path / "r"), "--real", str(real), "--out", str(tmp_path / "o"), "--k", "1,2,3"]) == 0
    err = capsys.readouterr().err
    assert "c seed 3: checkpoint" in err and "gone" in err and "no ensemble of 3" in err
    out = json.loads((tmp_path / "o" / "ensembles.json").read_text())
    singles = [e for e in out["ensembles"] if len(e["seeds"]) == 1]
    assert [e["seeds"] for e in out["ensembles"]] == [[1], [2], [1, 2]]
    # k = 1 is the run itself: per patient as echo-eval scores the same checkpoint
    for pid, want in _eval_dice(matae_ckpt, real, tmp_path / "ev", clean=False).items():
        assert singles[0]["patients"][pid]["dice"] == pytest.approx(want, abs=2e-4)
    # the same run twice: the ensemble is that run
    assert out["ensembles"][2]["patients"] == singles[0]["patients"]
    assert (tmp_path / "o" / "probs" / "c-s1.npy").is_file() and "| c x2 | 1 |" in (tmp_path / "o" / "ensembles.md").read_text()
    # --clean-masks: from the cached probabilities, as echo-eval --clean-masks scores the checkpoint
    assert be.main([str(tmp_path / "r"), "--real", str(real), "--out", str(tmp_path / "o"), "--k", "1",
                    "--clean-masks"]) == 0
    out = json.loads((tmp_path / "o" / "ensembles.json").read_text())
    assert out["clean_masks"] is True
    for pid, want in _eval_dice(matae_ckpt, real, tmp_path / "evc", clean=True).items():
        assert out["ensembles"][0]["patients"][pid]["dice"] == pytest.approx(want, abs=2e-4)


def test_main_errors_in_one_line(be, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        be.main([str(tmp_path), "--real", str(tmp_path), "--out", str(tmp_path / "o"), "--k", "two"])
    assert e.value.code == 2 and "--k 'two'" in capsys.readouterr().err
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "summary.json").write_text(json.dumps({"runs": []}))
    real = tmp_path / "empty"
    real.mkdir()
    with pytest.raises(SystemExit, match="no train/val/test frame folders"):
        be.main([str(tmp_path / "r"), "--real", str(real), "--out", str(tmp_path / "o")])
