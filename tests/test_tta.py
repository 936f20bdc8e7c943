"""Test-time augmentation (runtime/tta.py): the views, their way back, the averaging, and that
echo-eval (PyTorch or an exported graph) and echo-run run the same thing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from oracle import CyclingOracle
from test_export_fixtures import export_base, exported, no_tensorrt  # noqa: F401  (fixtures)

from echoseg.errors import EchosegError
from echoseg.runtime.tta import (TtaError, ViewAveraging, average_views, check_tta, shifted, shifted_back,
                                 view_shifts, with_tta)


def _cv2_moved(img: np.ndarray, dy: int, dx: int, border: int, value: float = 0.0) -> np.ndarray:
    """img moved by (dy, dx) with OpenCV's affine warp: the reference the module's slicing must equal."""
    import cv2

    m = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(img, m, (img.shape[1], img.shape[0]), flags=cv2.INTER_LINEAR, borderMode=border,
                          borderValue=value)


@pytest.mark.parametrize("dy,dx", [(4, 4), (-4, -4), (3, -2), (0, 5)])
def test_a_view_is_the_frame_moved_on_black_and_its_output_moves_back_with_edges_repeated(dy, dx):
    import cv2

    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 20, 24)).astype(np.float32)
    fill = np.array([-1.0, -2.0, -3.0], np.float32)
    moved = shifted(x, dy, dx, fill)
    for n in range(2):
        for c in range(3):
            ref = _cv2_moved(x[n, c], dy, dx, cv2.BORDER_CONSTANT, float(fill[c]))
            np.testing.assert_allclose(moved[n, c], ref, atol=1e-6)
    p = rng.random((2, 1, 20, 24)).astype(np.float32)
    back = shifted_back(p, dy, dx)
    for n in range(2):
        np.testing.assert_allclose(back[n, 0], _cv2_moved(p[n, 0], -dy, -dx, cv2.BORDER_REPLICATE), atol=1e-6)


def test_shifts_are_given_at_112_pixels_and_scale_with_the_input():
    assert view_shifts("shift3", 112, 112) == [(0, 0), (4, 4), (-4, -4)]
    assert view_shifts("shift3", 224, 56) == [(0, 0), (8, 2), (-8, -2)]
    assert view_shifts("none", 112, 112) == [(0, 0)]


def test_none_is_the_plain_output_and_one_call():
    calls = []
    x = np.random.default_rng(1).normal(size=(3, 3, 16, 16)).astype(np.float32)

    def run(b):
        calls.append(len(b))
        return b[:, :1] * 3.0

    np.testing.assert_array_equal(average_views(run, x, "none", 0.0), x[:, :1] * 3.0)
    assert calls == [3]


def test_a_model_that_moves_with_the_frame_is_left_as_it_is_inside_the_frame():
    """A per-pixel model gives every view the same answer at a pixel once moved back; only the
    4-pixel border, where a view saw black, may differ. A view moved back the wrong way fails this."""
    x = np.random.default_rng(2).normal(size=(2, 3, 32, 32)).astype(np.float32)
    run = lambda b: b.mean(axis=1, keepdims=True) * 2.0  # noqa: E731
    plain = run(x)
    tta = average_views(run, x, "shift3", -5.0)
    np.testing.assert_allclose(tta[..., 4:-4, 4:-4], plain[..., 4:-4, 4:-4], atol=1e-4)
    assert not np.allclose(tta, plain, atol=1e-3)  # the border did see black


def test_views_are_averaged_as_probabilities_in_the_model_s_own_kind():
    x = np.zeros((1, 3, 16, 16), np.float32)

    def constant_per_call(values):
        it = iter(values)
        return lambda b: np.full((len(b), 1, 16, 16), next(it), np.float32)

    logit = average_views(constant_per_call([-2.0, 0.0, 4.0]), x, "shift3", 0.0, "logits")
    p = np.mean(1 / (1 + np.exp(-np.array([-2.0, 0.0, 4.0]))))
    np.testing.assert_allclose(logit, np.log(p / (1 - p)), atol=1e-5)  # mean logit 0.67 would read 0.66, not 0.53
    prob = average_views(constant_per_call([0.2, 0.5, 0.9]), x, "shift3", 0.0, "probabilities")
    np.testing.assert_allclose(prob, np.full_like(prob, (0.2 + 0.5 + 0.9) / 3), atol=1e-6)


def test_an_unknown_view_set_is_a_one_line_error():
    with pytest.raises(TtaError, match=r"--tta 'flip': use one of none, shift3"):
        check_tta("flip")
    assert issubclass(TtaError, EchosegError)


class Counting(CyclingOracle):
    def __init__(self, masks):
        super().__init__(masks)
        self.frames, self.closed = 0, 0

    def _run_piece(self, x):
        self.frames += len(x)
        return super()._run_piece(x)

    def _close(self):
        self.closed += 1


def test_the_wrapped_session_runs_each_batch_once_per_view_and_closes_what_it_wraps():
    from echoseg.data.synthetic import make_video

    inner = Counting(make_video(3, frames=10).masks)
    assert with_tta(inner, "none") is inner
    s = with_tta(inner, "shift3")
    assert isinstance(s, ViewAveraging) and s.info is inner.info and s.tta == "shift3"
    y = s.run(np.zeros((5, 3, 112, 112), np.float32))
    assert y.shape == (5, 1, 112, 112) and y.dtype == np.float32 and inner.frames == 15
    s.close()
    assert inner.closed == 1


def test_echo_run_with_tta_runs_three_views_and_says_so(tmp_path):
    from echoseg.data.synthetic import make_video
    from echoseg.data.video import write_video
    from echoseg.runtime import run_videos

    v = make_video(5, frames=30)
    video = write_video(tmp_path / "a.avi", v.frames, fps=50.0)
    for tta, per_frame in (("none", 1), ("shift3", 3)):
        sess = Counting(v.masks)
        (r,) = run_videos([video], out=tmp_path / tta, session=sess, video=False, roi="full", tta=tta)
        assert r.ok, r.error
        assert sess.frames == per_frame * 30  # a given session gets no start-up check
        assert json.loads((Path(r.out_dir) / "summary.json").read_text())["tta"] == tta
        assert sess.closed == 0  # a session given by the caller stays the caller's to close
    with pytest.raises(TtaError):
        run_videos([video], out=tmp_path / "bad", session=Counting(v.masks), tta="flip")
    assert not (tmp_path / "bad" / "a").exists()


def test_echo_run_cli_rejects_an_unknown_view_set_in_one_line(tmp_path):
    from typer.testing import CliRunner

    from echoseg.runtime.cli import app

    r = CliRunner().invoke(app, [str(tmp_path / "x.avi"), "--tta", "flip", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2
    assert "--tta 'flip': use one of none, shift3" in r.output and "Traceback" not in r.output


def test_views_on_a_per_pixel_graph_change_only_the_border(tmp_path):
    """The tiny ONNX graph is per pixel: through ONNX Runtime, its shift3 output equals its plain
    output away from the frame's edge (compared as logits: a mask comparison would flip on pixels
    whose logit is exactly at the cut, where float rounding decides)."""
    from tiny_onnx import write_tiny_onnx

    from echoseg.artifacts import preprocess
    from echoseg.backends.choose import open_session
    from echoseg.data.synthetic import make_video

    graph = write_tiny_onnx(tmp_path / "tiny.onnx")
    with open_session(graph, "onnxruntime") as sess:
        x = preprocess(make_video(6, frames=6).frames, sess.info.meta)
        plain = sess.run(x)
        views = with_tta(sess, "shift3").run(x)
    assert views.shape == plain.shape and (plain > 0).any() and (plain < 0).any()
    np.testing.assert_allclose(views[..., 4:-4, 4:-4], plain[..., 4:-4, 4:-4], atol=1e-4)
    assert not np.allclose(views, plain, atol=1e-3)  # the border did see black


def test_echo_eval_scores_the_same_views_in_pytorch_and_on_the_exported_graph(exported, synth_dir, tmp_path):
    """One implementation: a checkpoint scored in PyTorch and its ONNX graph scored through the
    runtime give the same shift3 Dice; and shift3 is not the plain score (the option is not ignored)."""
    from test_export_fixtures import cached_checkpoint

    from echoseg.train.eval import evaluate

    ckpt = cached_checkpoint(exported.parent, "unet")
    graph = exported / "unet" / "model.onnx"
    got = {}
    for name, target, backend in (("torch", ckpt, "auto"), ("onnx", graph, "onnxruntime")):
        for tta in ("none", "shift3"):
            r = evaluate(target, synth_dir, "test", tmp_path / f"{name}-{tta}", device="cpu", backend=backend, tta=tta)
            assert r["tta"] == tta
            assert json.loads((tmp_path / f"{name}-{tta}" / "metrics.json").read_text())["tta"] == tta
            got[name, tta] = r["dice"]
    assert got["torch", "shift3"] == pytest.approx(got["onnx", "shift3"], abs=2e-3)
    assert got["torch", "none"] == pytest.approx(got["onnx", "none"], abs=2e-3)
    assert abs(got["torch", "shift3"] - got["torch", "none"]) > 1e-6


def test_echo_eval_cli_takes_tta_and_records_it_with_the_ef(tmp_path, synth_dir):
    from typer.testing import CliRunner
    from tiny_onnx import write_tiny_onnx

    from echoseg.train.cli import eval_app

    graph = write_tiny_onnx(tmp_path / "tiny.onnx")
    out = tmp_path / "ev"
    r = CliRunner().invoke(eval_app, [str(graph), "--data", str(synth_dir), "--split", "test", "--ef", "--tta",
                                      "shift3", "--out", str(out)], env={"COLUMNS": "250"})
    assert r.exit_code == 0, r.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["tta"] == "shift3" and metrics["ef"]["tta"] == "shift3"
    assert "test-time views shift3" in r.output
    bad = CliRunner().invoke(eval_app, [str(graph), "--data", str(synth_dir), "--tta", "flip"])
    assert bad.exit_code == 1 and "--tta 'flip': use one of none, shift3" in bad.output


def test_scores_with_views_go_to_their_own_default_folder(tmp_path, synth_dir):
    """A reading with --tta and no --out leaves the plain one in place (eval-test, eval-test-shift3)."""
    from tiny_onnx import write_tiny_onnx

    from echoseg.train.eval import evaluate

    graph = write_tiny_onnx(tmp_path / "tiny.onnx")
    plain = evaluate(graph, synth_dir, "test")
    views = evaluate(graph, synth_dir, "test", tta="shift3")
    assert Path(plain["out"]) == tmp_path / "eval-test" and Path(views["out"]) == tmp_path / "eval-test-shift3"
    assert json.loads((tmp_path / "eval-test" / "metrics.json").read_text())["tta"] == "none"
    assert json.loads((tmp_path / "eval-test-shift3" / "metrics.json").read_text())["tta"] == "shift3"
