"""The bundled model: bundling an export, the fallback when no model is found, --model pretrained."""

from __future__ import annotations

import json
import logging

import pytest
from test_export_fixtures import bundled, export_base, exported, no_tensorrt  # noqa: F401
from typer.testing import CliRunner

from echoseg import pretrained
from echoseg.pretrained.bundle import bundle
from echoseg.backends.choose import choose, find_default_model
from echoseg.backends.session import SessionError


@pytest.fixture()
def no_bundle(monkeypatch, tmp_path):
    monkeypatch.setattr(pretrained, "FOLDER", tmp_path / "no-bundle")


def test_without_a_bundle_the_error_says_how_to_get_a_model(no_bundle, tmp_path):
    with pytest.raises(SessionError, match="no bundled model; pass --model PATH"):
        find_default_model(tmp_path)
    with pytest.raises(SessionError, match="make pretrained"):
        choose("pretrained")


def test_bundle_keeps_only_the_fp16_and_int8_graphs_and_a_narrowed_manifest(bundled):
    graphs = ["model.fp16.onnx", "model.g0.5.fp16.onnx", "model.g0.5.int8.onnx", "model.int8.onnx"]
    names = sorted(p.name for p in bundled.iterdir())
    assert names == sorted(["manifest.json", "parity.json", *graphs])
    man = json.loads((bundled / "manifest.json").read_text())
    assert sorted(f["file"] for f in man["files"]) == sorted([*graphs, "parity.json"])
    assert man["passed"] is True and man["model"]["name"] == "matae-unet"


def test_bundle_refuses_an_export_without_a_full_width_int8_graph(exported, tmp_path):
    import shutil

    src = tmp_path / "src"
    shutil.copytree(exported / "matae-unet", src)
    (src / "model.int8.onnx").unlink()
    with pytest.raises(SystemExit, match="no full-width int8 graph; export with echo-export build --fp16 --int8"):
        bundle(src, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


@pytest.mark.skipif(not __import__("echoseg.backends.registry", fromlist=["x"]).importable("openvino"),
                    reason="OpenVINO is not installed")
def test_on_a_cpu_auto_runs_the_bundled_int8_graph_on_openvino(bundled):
    rec = json.loads((bundled / "manifest.json").read_text())["exports"][0]["parity"]["openvino_int8_vs_fp32"]
    c = choose("pretrained", "auto")
    assert rec["passed"] is True  # the bundle carries OpenVINO's records: auto needs no FP32 graph to decide
    assert (c.backend, c.path.name, c.options) == ("openvino", "model.int8.onnx", {"precision": "int8"})


def test_no_model_found_falls_back_to_the_bundle_and_says_so(bundled, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        assert find_default_model(tmp_path) == bundled
    assert "using the bundled model" in caplog.text
    c = choose("pretrained", "onnxruntime")
    assert c.path.parent == bundled and c.path.name == "model.fp16.onnx"
    assert choose("pretrained", "onnxruntime", 0.5).path.name == "model.g0.5.fp16.onnx"
    (tmp_path / "runs" / "mine").mkdir(parents=True)
    (tmp_path / "runs" / "mine" / "best.pt").write_bytes(b"x")
    assert find_default_model(tmp_path) == tmp_path / "runs" / "mine"  # a user's own model comes first


def test_echo_run_in_an_empty_folder_uses_the_bundle(bundled, tmp_path, monkeypatch, caplog):
    from echoseg.data.synthetic import make_video
    from echoseg.data.video import write_video
    from echoseg.runtime.cli import app

    work = tmp_path / "empty"
    work.mkdir()
    monkeypatch.chdir(work)
    write_video(work / "clip.avi", make_video(3, frames=30).frames, 50.0)
    with caplog.at_level(logging.WARNING):
        r = CliRunner().invoke(app, ["clip.avi", "--out", "o", "--no-video"])
    assert r.exit_code == 0, r.output
    said = [m for m in caplog.messages if "bundled model" in m] + [ln for ln in r.output.splitlines()
                                                                 if "bundled model" in ln]
    assert len(said) == 1, said  # one line, not two
    summary = json.loads((work / "o" / "clip" / "summary.json").read_text())
    assert summary["frames"] == 30 and (work / "o" / "clip" / "frames.csv").is_file()


def test_echo_eval_scores_the_bundle_through_the_runtime(bundled, synth_dir, tmp_path):
    from echoseg.train.eval import evaluate

    m = evaluate("pretrained", synth_dir, "test", tmp_path / "ev")
    assert m["model"] == "matae-unet" and m["checkpoint"] == "pretrained"
    assert set(m["granularities"]) == {"1", "0.5"} and 0.0 <= m["dice"] <= 1.0 and m["frames"] > 0
    assert m["granularities"]["0.5"]["gmacs"] < m["gmacs"]
    assert (tmp_path / "ev" / "frames.csv").is_file()
    from echoseg.backends.choose import choose

    for g, what in m["ran"].items():  # scored with what echo-run would run here, and said so
        c = choose("pretrained", "auto", float(g))
        assert what.split()[0] == c.backend and what.endswith(c.path.name)
    ort = evaluate("pretrained", synth_dir, "test", tmp_path / "ev-ort", backend="onnxruntime")
    assert ort["ran"] == {"1": "onnxruntime fp16 model.fp16.onnx", "0.5": "onnxruntime fp16 model.g0.5.fp16.onnx"}
    assert abs(ort["dice"] - m["dice"]) < 0.02  # INT8 or FP16: the same model


def test_bundle_main_writes_a_model_card_with_recipe_scores_and_intended_use(monkeypatch, tmp_path, exported):
    from echoseg.pretrained import bundle as b

    dest = tmp_path / "pkg" / "echo-synth-matae-w16"
    monkeypatch.setattr(pretrained, "FOLDER", dest)
    monkeypatch.setattr(b, "FOLDER", dest)
    real = tmp_path / "REAL_ECHO.md"
    real.write_text("## Real echo\nDice 0.123 on nobody's frames (a test stand-in)\n")
    monkeypatch.setattr(b, "REAL_ECHO", real)
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"dice": 0.91, "iou": 0.84, "frames": 40, "granularities": {
        "1": {"dice": 0.91, "iou": 0.84, "frames": 40}, "0.5": {"dice": 0.89, "iou": 0.81, "frames": 40}}}))
    ckpt = json.loads((exported / "matae-unet" / "manifest.json").read_text())["checkpoint"]
    assert b.main([str(exported / "matae-unet"), "--run", ckpt, "--eval", str(metrics)]) == 0
    card = (dest / "MODEL_CARD.md").read_text()
    assert "Not a medical device" in card
    assert "| 0.5 | 0.8900 | 0.8100 | 40 |" in card and "| 1 | 0.9100 |" in card
    assert "| model | matae-unet |" in card and "| epochs |" in card
    assert "Dice 0.123 on nobody's frames" in card
    assert (dest / "model.fp16.onnx").is_file()


def test_bundle_main_refuses_an_unreadable_metrics_file_in_one_line(monkeypatch, tmp_path, exported, capsys):
    from echoseg.pretrained import bundle as b

    dest = tmp_path / "pkg" / "echo-synth-matae-w16"
    monkeypatch.setattr(pretrained, "FOLDER", dest)
    monkeypatch.setattr(b, "FOLDER", dest)
    assert b.main([str(exported / "matae-unet"), "--eval", str(tmp_path / "missing.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.json" in err[0]
    assert not dest.exists()  # nothing bundled when an input is bad


@pytest.mark.shipped_bundle
@pytest.mark.skipif(pretrained.bundled_dir() is None, reason="this source tree has no bundled model (make pretrained)")
def test_the_shipped_bundle_runs_in_an_empty_folder_and_says_so_once(tmp_path):
    """The acceptance check, on the model that ships: a fresh folder, no --model."""
    import subprocess
    import sys

    from echoseg.data.synthetic import make_video
    from echoseg.data.video import write_video

    write_video(tmp_path / "clip.avi", make_video(6, frames=40, style="echo").frames, 50.0)
    code = "from echoseg.runtime.cli import main; main()"
    r = subprocess.run([sys.executable, "-c", code, "clip.avi", "--no-video"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    text = r.stdout + r.stderr
    assert text.count("using the bundled model") == 1 and "used the bundled" not in text
    summary = json.loads((tmp_path / "outputs" / "clip" / "summary.json").read_text())
    assert summary["frames"] == 40 and pretrained.FOLDER.name in summary["model"]
    assert {p.name for p in (tmp_path / "outputs" / "clip").iterdir()} >= {"frames.csv", "summary.json", "area.png"}
