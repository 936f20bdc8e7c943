"""echo-bench checks what it is given before measuring anything: one line on stderr, exit 2, no files."""

from __future__ import annotations

from typer.testing import CliRunner

from echoseg.bench.cli import app


def _invoke(*args: str):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "250"})


def _only_line(res) -> str:
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.output
    assert lines[0].startswith("error:") and "error:" not in res.stdout and "Traceback" not in res.output
    return lines[0]


def _empty(tmp_path) -> list[str]:
    return ["--exports", str(tmp_path / "e"), "--runs", str(tmp_path / "r")]


def test_a_model_path_that_does_not_exist_is_named(tmp_path):
    missing = tmp_path / "nonexistent"
    res = _invoke("compare", "--models", str(missing), *_empty(tmp_path), "--out", str(tmp_path / "o"))
    assert res.exit_code == 2
    line = _only_line(res)
    assert str(missing) in line and "no such file or directory" in line
    res = _invoke("table1", "--model", str(tmp_path / "model.onnx"))
    assert res.exit_code == 2 and str(tmp_path / "model.onnx") in _only_line(res)


def test_an_unreadable_video_is_refused_before_any_measurement(tmp_path):
    bad = tmp_path / "notes.avi"
    bad.write_text("not a video")
    out = tmp_path / "o"
    res = _invoke("compare", "--video", str(bad), "--out", str(out))
    assert res.exit_code == 2
    line = _only_line(res)
    assert str(bad) in line and "--video" in line
    assert not out.exists() or list(out.iterdir()) == []


def test_batch_sizes_are_bounded(tmp_path):
    res = _invoke("compare", "--batch", "1,16,100000000", "--out", str(tmp_path / "o"))
    assert res.exit_code == 2 and "between 1 and 4096" in _only_line(res)
    res = _invoke("table1", "--batch", "0")
    assert res.exit_code == 2 and "between 1 and 4096" in _only_line(res)


def test_errors_go_to_stderr(tmp_path):
    res = _invoke("compare", *_empty(tmp_path), "--out", str(tmp_path / "o"))
    assert res.exit_code == 2 and "nothing to benchmark" in _only_line(res)
    (tmp_path / "blocker").write_text("x")
    res = _invoke("compare", "--out", str(tmp_path / "blocker" / "o"))
    assert res.exit_code == 2 and "cannot write outputs here" in _only_line(res)
