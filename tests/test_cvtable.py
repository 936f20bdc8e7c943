"""echo-eval CV [CV ...] --table: cross-validations side by side, held-out patient by patient."""

import json
from pathlib import Path

import pytest

from echoseg.train import cvtable


def _build(*folders):
    return cvtable.build({f: cvtable.read_rows(f) for f in folders})


def _cv(root, name, model, dice, videos=("P0", "P1", "P2"), frames=(2, 3, 5), config=None):
    """A cross-validation folder as echo-train --folds leaves it: cv.json with one row per run and g."""
    folder = root / name
    folder.mkdir(parents=True)
    rows = [{"fold": f, "seed": s, "g": g, "dice": d, "frames": frames[f], "test_videos": videos[f]}
            for (f, s, g), d in sorted(dice.items())]
    folder.joinpath("cv.json").write_text(json.dumps({"model": model, "width": 16, "folds": len(videos),
                                                      "config": config or {}, "rows": rows}))
    return folder


UNET = {(0, 1, 1.0): 0.90, (0, 2, 1.0): 0.88, (1, 1, 1.0): 0.60, (1, 2, 1.0): 0.64,
        (2, 1, 1.0): 0.93, (2, 2, 1.0): 0.95}
MATAE = {(0, 1, 1.0): 0.91, (0, 2, 1.0): 0.90, (1, 1, 1.0): 0.70, (1, 2, 1.0): 0.66,
         (2, 1, 1.0): 0.92, (2, 2, 1.0): 0.96,
         (0, 1, 0.5): 0.89, (0, 2, 0.5): 0.87, (1, 1, 0.5): 0.50, (1, 2, 0.5): 0.58}  # g=1/2: fold 2 not scored


def test_rows_per_folder_and_granularity_with_patients_pooled_worst_and_paired(tmp_path):
    a = _cv(tmp_path, "unet", "unet", UNET)
    b = _cv(tmp_path, "matae", "matae-unet", MATAE)
    tab = _build(a, b)
    assert [r["label"] for r in tab["rows"]] == ["unet", "matae g=1", "matae g=1/2"]
    unet, m1, m2 = tab["rows"]
    assert unet["folds"][1] == {1: 0.60, 2: 0.64}
    assert unet["patients_mean"] == pytest.approx((0.89 + 0.62 + 0.94) / 3)
    assert unet["worst"] == {"fold": 1, "dice": pytest.approx(0.62)}
    # pooled: each seed's held-out frames together (2, 3 and 5 frames)
    assert unet["pooled"][1]["dice"] == pytest.approx((0.90 * 2 + 0.60 * 3 + 0.93 * 5) / 10)
    assert unet["paired"] is None
    diffs = [MATAE[k] - UNET[k] for k in UNET]
    assert m1["paired"] == {"runs": 6, "mean": pytest.approx(sum(diffs) / 6), "min": pytest.approx(-0.01),
                            "max": pytest.approx(0.10), "b_ahead": 5}
    # a row that lacks a fold: paired where both ran, its mean over the folds it has, said in the table
    assert m2["paired"]["runs"] == 4 and m2["worst"]["dice"] == pytest.approx(0.54)
    md = cvtable.markdown(tab)
    lines = md.splitlines()
    assert lines[0] == ("| recipe | P0 | P1 | P2 | pooled, seed by seed | mean of patients | worst patient | "
                        "lowest run |")
    assert lines[2] == ("| unet | .900 / .880 | .600 / .640 | .930 / .950 | 0.825 / 0.843 | 0.817 | 0.620 (P1) | "
                        "0.600 (P1, seed 1) |")
    assert unet["lowest"] == {"fold": 1, "seed": 1, "dice": pytest.approx(0.60)}
    assert lines[4].startswith("| matae g=1/2 | .890 / .870 | .500 / .580 | - | 0.656 (2 folds) / 0.696 (2 folds) |")
    assert "0.710 (2 of 3) | 0.540 (P1) | 0.500 (P1, seed 1) |" in lines[4]
    assert "- matae g=1 - unet, run by run (same fold, same seed): mean +0.0250, min -0.0100, max +0.1000; " \
           "ahead in 5 of 6" in md
    csv_lines = cvtable.csv_text(tab).splitlines()
    assert csv_lines[0] == "recipe,folder,model,g,fold,held_out,seed,dice"
    assert len(csv_lines) == 1 + 6 + 6 + 4


def test_folds_that_hold_out_other_patients_are_refused(tmp_path):
    a = _cv(tmp_path, "a", "unet", UNET)
    b = _cv(tmp_path, "b", "unet", UNET, videos=("P0", "P2", "P1"))
    with pytest.raises(ValueError, match="fold 1 holds out 'P1' in .*a and 'P2' in .*b"):
        _build(a, b)


def test_names_of_granularities_and_patient_columns():
    assert [cvtable.g_name(g) for g in (1.0, 0.5, 0.25, 0.125, 0.3)] == ["1", "1/2", "1/4", "1/8", "0.3"]
    videos = {0: ("0XABCDEF12", None), 1: ("0XABCDEF34", None), 2: ("0X99", None), 3: ("A, B", None)}
    assert cvtable._columns(videos, [0, 1, 2, 3]) == {0: "0XABCDEF1", 1: "0XABCDEF3", 2: "0X99", 3: "fold 3"}


def test_cli_table_writes_markdown_csv_and_picture_and_reports_a_bad_folder(tmp_path):
    from typer.testing import CliRunner

    from echoseg.train.cli import eval_app

    a = _cv(tmp_path, "unet", "unet", UNET)
    b = _cv(tmp_path, "matae", "matae-unet", MATAE)
    (tmp_path / "empty").mkdir()
    out = tmp_path / "tab"
    r = CliRunner().invoke(eval_app, [str(a), str(tmp_path / "empty"), str(b), "--table", "--out", str(out)])
    assert r.exit_code == 1  # the bad folder fails the command; the others are still tabulated
    assert f"{tmp_path / 'empty'}: no cv.json, so not a cross-validation folder" in r.output
    assert "| matae g=1/2 |" in r.output
    assert (out / "patients.md").read_text().splitlines()[2].startswith("| unet | .900 / .880 |")
    assert (out / "patients.csv").read_text().startswith("recipe,folder,model,g,fold")
    assert (out / "patients.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = CliRunner().invoke(eval_app, [str(a), "--table", "--compare", "--data", str(tmp_path)])
    assert r.exit_code == 1 and "--table reads the cv.json of cross-validation folders and scores nothing: " \
                                  "drop --data and --compare" in r.output


def test_cli_table_that_cannot_be_written_leaves_the_earlier_one_whole(tmp_path, monkeypatch):
    import errno

    from typer.testing import CliRunner

    from echoseg.train.cli import eval_app

    a = _cv(tmp_path, "unet", "unet", UNET)
    out = tmp_path / "tab"
    out.mkdir()
    (out / "patients.md").write_text("the earlier table\n")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cvtable, "plot", full)
    r = CliRunner().invoke(eval_app, [str(a), "--table", "--out", str(out)])
    assert r.exit_code == 2
    assert f"error: {out}: the table was not written (no space left on device)" in r.output
    assert (out / "patients.md").read_text() == "the earlier table\n"
    assert sorted(p.name for p in out.iterdir()) == ["patients.md"]


def test_folders_of_one_name_are_told_apart_by_their_paths(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    one = _cv(tmp_path / "a", "unet", "unet", UNET)
    two = _cv(tmp_path / "b", "unet", "unet", UNET)
    assert [r["label"] for r in _build(one, two)["rows"]] == ["a/unet", "b/unet"]
    assert cvtable.short_names([one, two, one]) == [str(one), str(two), str(one)]  # one folder twice
    (tmp_path / "c").mkdir()
    three = _cv(tmp_path / "c", "unet", "unet", _reseeded(UNET, 2))
    assert cvtable.read_joined(f"{one}+{three}")[0]["label"] == "a/unet+c/unet"


def _reseeded(dice, offset):
    return {(f, s + offset, g): d for (f, s, g), d in dice.items()}


RECIPE = {"model": "unet", "width": 16, "lr": 0.0003, "out": "cv/a", "seed": 1}


def test_sweeps_of_one_recipe_with_other_seeds_join_into_one_row(tmp_path):
    a = _cv(tmp_path, "s12", "unet", UNET, config=RECIPE)
    b = _cv(tmp_path, "s34", "unet", _reseeded(UNET, 2) | {(1, 3, 1.0): 0.30},  # seed 3 collapses on P1
            config={**RECIPE, "out": "cv/b", "seed": 3})  # where it was written and the seed are not the recipe
    joined = Path(f"{a}{cvtable.JOIN}{b}")  # each part a path, as the shell gives it: cv/s12+cv/s34
    info, rows = cvtable.read_joined(joined)
    assert info["seeds"] == [1, 2, 3, 4] and info["label"] == "s12+s34" and len(rows) == 12
    tab = cvtable.build({joined: (info, rows), a: cvtable.read_joined(a)})
    both, first = tab["rows"]
    assert both["label"] == "s12+s34" and both["seeds"] == [1, 2, 3, 4]
    assert both["folds"][1] == {1: 0.60, 2: 0.64, 3: 0.30, 4: 0.64}
    assert both["worst"] == {"fold": 1, "dice": pytest.approx((0.60 + 0.64 + 0.30 + 0.64) / 4)}
    assert both["lowest"] == {"fold": 1, "seed": 3, "dice": pytest.approx(0.30)}
    assert first["paired"]["runs"] == 6 and first["paired"]["mean"] == pytest.approx(0)
    # a folder that exists under a name with '+' is that folder, not a join
    plus = _cv(tmp_path, "a+b", "unet", UNET)
    assert cvtable.read_joined(plus)[0].get("label") is None


def test_a_join_of_other_recipes_or_of_the_same_runs_is_refused_in_one_line(tmp_path):
    a = _cv(tmp_path, "a", "unet", UNET, config=RECIPE)
    lr = _cv(tmp_path, "lr", "unet", _reseeded(UNET, 2), config={**RECIPE, "lr": 0.001})
    with pytest.raises(ValueError, match=r"a and .*lr were trained with other recipes \(lr 0.0003 in .*a, 0.001 in "
                                         r".*lr\): join only sweeps of one recipe"):
        cvtable.read_joined(f"{a}+{lr}")
    again = _cv(tmp_path, "again", "unet", UNET, config=RECIPE)
    with pytest.raises(ValueError, match=r"seed 1 of fold 0 \(g=1\) is in both .*a and .*again: join sweeps of other "
                                         "seeds"):
        cvtable.read_joined(f"{a}+{again}")
    other = _cv(tmp_path, "other", "unet", _reseeded(UNET, 2), videos=("P0", "P2", "P1"), config=RECIPE)
    with pytest.raises(ValueError, match="fold 1 holds out 'P1' in .*a and 'P2' in .*other"):
        cvtable.read_joined(f"{a}+{other}")
    with pytest.raises(ValueError, match="an empty folder name"):
        cvtable.read_joined(f"{a}+")
    with pytest.raises(ValueError, match="no cv.json"):
        cvtable.read_joined(f"{a}+{tmp_path / 'missing'}")


def test_cli_table_joins_sweeps_with_a_plus(tmp_path):
    from typer.testing import CliRunner

    from echoseg.train.cli import eval_app

    a = _cv(tmp_path, "s12", "unet", UNET, config=RECIPE)
    b = _cv(tmp_path, "s34", "unet", _reseeded(UNET, 2), config=RECIPE)
    c = _cv(tmp_path, "lr", "unet", _reseeded(UNET, 2), config={**RECIPE, "lr": 0.001})
    r = CliRunner().invoke(eval_app, [f"{a}+{b}", f"{a}+{c}", "--table"])
    assert r.exit_code == 1  # the refused join fails the command; the good one is still tabulated
    assert "| s12+s34 | .900 / .880 / .900 / .880 |" in r.output
    assert "were trained with other recipes (lr 0.0003" in r.output
