"""echo-synth, echo-train and echo-eval as a user runs them."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from echoseg.data.cli import app as synth_app
from echoseg.train.cli import eval_app, train_app

runner = CliRunner()


def test_synth_train_eval_cli(tmp_path):
    data = tmp_path / "d"
    r = runner.invoke(synth_app, [str(data), "--videos", "6", "--frames", "16", "--seed", "2"])
    assert r.exit_code == 0, r.output
    assert (data / "FileList.csv").is_file() and len(list((data / "Videos").glob("*.avi"))) == 6
    run = tmp_path / "run"
    r = runner.invoke(train_app, ["--data", str(data), "--model", "matae-unet", "--width", "8",
                                  "--epochs", "1", "--batch-size", "4", "--out", str(run)])
    assert r.exit_code == 0, r.output
    assert "best val Dice" in r.output and (run / "best.pt").is_file()
    r = runner.invoke(eval_app, [str(run), "--data", str(data), "--out", str(tmp_path / "ev")])
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert m["frames"] == 2 and set(m["granularities"]) == {"0.5", "1"}  # width 8 holds 1/2 and 1
    assert "Dice" in r.output and "matae-unet w8" in r.output


def test_cross_validation_and_compare_cli(tmp_path):
    data = tmp_path / "d"
    assert runner.invoke(synth_app, [str(data), "--videos", "6", "--frames", "16", "--seed", "4"]).exit_code == 0
    for model in ("unet", "matae-unet"):
        r = runner.invoke(train_app, ["--data", str(data), "--model", model, "--width", "8", "--epochs", "1",
                                      "--batch-size", "4", "--folds", "3", "--fold", "0", "--fold", "2",
                                      "--seeds", "1,2", "--out", str(tmp_path / model)])
        assert r.exit_code == 0, r.output
        cv = json.loads((tmp_path / model / "cv.json").read_text())
        assert cv["evaluated_folds"] == [0, 2] and cv["seeds"] == [1, 2]
        assert {(row["fold"], row["seed"]) for row in cv["rows"]} == {(0, 1), (0, 2), (2, 1), (2, 2)}
        assert "cross-validation by video" in r.output
    # a sweep in pieces: the same folder is refused without --resume, and --resume adds fold 1 seed 1 only
    args = ["--data", str(data), "--model", "unet", "--width", "8", "--epochs", "1", "--batch-size", "4",
            "--folds", "3", "--fold", "1", "--seeds", "1", "--out", str(tmp_path / "unet")]
    r = runner.invoke(train_app, args)
    lines = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
    assert r.exit_code == 2 and len(lines) == 1 and "already holds a cross-validation" in lines[0], r.output
    before = (tmp_path / "unet" / "fold0-seed1" / "best.pt").stat().st_mtime_ns
    r = runner.invoke(train_app, args + ["--resume"])
    assert r.exit_code == 0, r.output
    cv = json.loads((tmp_path / "unet" / "cv.json").read_text())
    assert {(row["fold"], row["seed"]) for row in cv["rows"]} == {(0, 1), (0, 2), (1, 1), (2, 1), (2, 2)}
    assert cv["evaluated_folds"] == [0, 1, 2] and cv["seeds"] == [1, 2]
    assert cv["summary"]["1"]["missing_runs"] == [[1, 2]]
    assert "1 of 6 runs not scored yet (fold 1 seed 2)" in r.output
    assert (tmp_path / "unet" / "fold0-seed1" / "best.pt").stat().st_mtime_ns == before  # kept, not retrained
    r = runner.invoke(eval_app, [str(tmp_path / "unet"), str(tmp_path / "matae-unet"), "--compare",
                                 "--out", str(tmp_path / "cmp")])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert res["a_model"] == "unet w8" and res["b_model"] == "matae-unet w8"
    assert {d["g_b"] for d in res["differences"]} == {1.0, 0.5}
    assert all(d["videos"] == 4 and d["ci95"][0] <= d["mean"] <= d["ci95"][1] for d in res["differences"])
    assert "paired difference B - A" in r.output
    r = runner.invoke(eval_app, [str(tmp_path / "unet" / "fold0-seed1"), "--data", str(data), "--compare"])
    assert r.exit_code == 2 and "needs two runs" in r.output
    r = runner.invoke(eval_app, [str(tmp_path / "unet" / "fold0-seed1"), "--compare"])
    assert r.exit_code == 1 and "--data is needed" in r.output


def test_cli_errors_are_one_line(tmp_path):
    r = runner.invoke(train_app, ["--data", str(tmp_path), "--model", "vit"])
    assert r.exit_code == 2 and "unknown model 'vit'; valid models are: unet, matae-unet" in r.output
    r = runner.invoke(train_app, ["--data", str(tmp_path / "none"), "--model", "unet"])
    assert r.exit_code == 2 and "no such data folder" in r.output
    r = runner.invoke(train_app, ["--data", str(tmp_path), "--model", "matae-unet", "--width", "12"])
    assert r.exit_code == 2 and "use a multiple of 8" in r.output
    r = runner.invoke(eval_app, [str(tmp_path / "missing"), "--data", str(tmp_path)])
    assert r.exit_code == 1 and "no such checkpoint or run directory" in r.output.replace("\n", "")
    r = runner.invoke(train_app, ["--data", str(tmp_path), "--model", "unet", "--width", "8", "--full-lr", "3e-4",
                                  "--out", str(tmp_path / "f")])
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert r.exit_code == 2 and len(lines) == 1 and "--full-lr 0.0003: only a matae-unet" in r.output, r.output
    assert not (tmp_path / "f").exists()


def test_full_lr_is_kept_by_resume_and_another_rate_is_refused(tmp_path):
    """A sweep started with --full-lr goes on at that rate when --resume does not say it again (fold 1's run
    records it), and a --resume with another rate is refused in one line with both rates named."""
    data = tmp_path / "d"
    assert runner.invoke(synth_app, [str(data), "--videos", "6", "--frames", "16", "--seed", "5"]).exit_code == 0
    out = tmp_path / "cv"
    args = ["--data", str(data), "--model", "matae-unet", "--width", "8", "--epochs", "1", "--batch-size", "4",
            "--init", "none", "--folds", "3", "--seeds", "1", "--out", str(out)]
    r = runner.invoke(train_app, args + ["--fold", "0", "--full-lr", "3e-4"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(train_app, args + ["--fold", "1", "--resume"])
    assert r.exit_code == 0, r.output
    cv = json.loads((out / "cv.json").read_text())
    assert cv["config"]["full_lr"] == 3e-4 and cv["evaluated_folds"] == [0, 1]
    assert json.loads((out / "fold1-seed1" / "train_config.json").read_text())["full_lr"] == 3e-4
    r = runner.invoke(train_app, args + ["--fold", "2", "--resume", "--full-lr", "1e-4"])
    lines = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
    assert r.exit_code == 2 and len(lines) == 1, r.output
    assert "another recipe (full_lr 0.0003 there, 0.0001 now)" in lines[0]
    assert not (out / "fold2-seed1").exists()


def test_eval_errors_are_one_line_whatever_the_path_length(tmp_path):
    deep = tmp_path.joinpath(*["a-rather-long-folder-name-for-a-run"] * 8) / "missing-run"
    assert len(str(deep)) > 300
    r = runner.invoke(eval_app, [str(deep), "--data", str(tmp_path)], env={"COLUMNS": "40"})
    assert r.exit_code == 1
    lines = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and str(deep) in lines[0] and "no such checkpoint or run directory" in lines[0]


def test_reconstruction_is_off_by_default_and_on_with_unlabelled_frames(tmp_path, monkeypatch):
    """matae-unet's reconstruction MSE is off unless asked for (it cost the atypical unseen patient Dice on real
    echo); --unlabelled-frames turns it on at 0.1; a weight given is kept; unlabelled frames at weight 0 are refused."""
    import pytest

    from echoseg.config import ConfigError, TrainConfig
    from echoseg.train import loop

    data = tmp_path / "d"
    assert runner.invoke(synth_app, [str(data), "--videos", "3", "--frames", "8", "--seed", "1"]).exit_code == 0
    seen: list[TrainConfig] = []

    def record(cfg, **kwargs):
        seen.append(cfg)
        raise ConfigError("stopped by the test before training")

    monkeypatch.setattr(loop, "train", record)
    base = ["--data", str(data), "--model", "matae-unet", "--width", "8", "--epochs", "1"]
    for extra, want in (([], 0.0), (["--unlabelled-frames"], 0.1), (["--recon-weight", "0.05"], 0.05),
                        (["--unlabelled-frames", "--recon-weight", "0.3"], 0.3)):
        runner.invoke(train_app, [*base, *extra, "--out", str(tmp_path / f"r{len(seen)}")])
        assert seen[-1].recon_weight == want, extra
    assert TrainConfig().recon_weight == 0.0
    r = runner.invoke(train_app, [*base, "--unlabelled-frames", "--recon-weight", "0", "--out", str(tmp_path / "z")])
    assert r.exit_code != 0 and "--recon-weight 0.1" in r.output and "Traceback" not in r.output
    with pytest.raises(ConfigError, match="unlabelled frames"):
        TrainConfig(unlabelled_frames=True)
