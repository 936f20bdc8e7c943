"""BaseSession: the one input check, split, pad and trim every backend session inherits, and its closing."""

from __future__ import annotations

import numpy as np
import pytest

from echoseg.backends.session import BaseSession, Session, SessionError, SessionInfo
from echoseg.config import ArtifactMeta, InputSpec, ModelConfig

META = ArtifactMeta(model=ModelConfig("unet", 8), input_spec=InputSpec(height=16, width=16))
PATH = "/models/fake.onnx"


class Fake(BaseSession):
    """A backend that takes min_batch..max_batch frames a call; each frame's logit is its own channel mean + 1."""

    def __init__(self, min_batch: int = 1, max_batch: int = 0) -> None:
        self.info = SessionInfo("fake", "fp32", "cpu", min_batch, max_batch, META, PATH)
        self.calls: list[int] = []
        self.closed = 0

    def _run_piece(self, x: np.ndarray) -> np.ndarray:
        lo, hi = self.info.min_batch, self.info.max_batch or len(x)
        assert lo <= len(x) <= hi, f"a call of {len(x)} frames outside {lo}..{hi}"
        self.calls.append(len(x))
        return x.mean(axis=1, keepdims=True) + 1.0

    def _close(self) -> None:
        self.closed += 1


def _frames(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 3, 16, 16)).astype(np.float32)


def test_a_base_session_is_a_session():
    assert isinstance(Fake(), Session)


@pytest.mark.parametrize("n,calls", [(1, [4]), (5, [5]), (13, [8, 5]), (16, [8, 8]), (17, [8, 8, 4])])
def test_split_pad_and_trim_give_what_frame_by_frame_gives(n, calls):
    x = _frames(n)
    sess = Fake(4, 8)
    y = sess.run(x)
    assert sess.calls == calls  # pieces of at most 8; a piece under 4 padded up to 4
    assert y.shape == (n, 1, 16, 16) and y.dtype == np.float32
    one = Fake(4, 8)
    np.testing.assert_array_equal(y, np.concatenate([one.run(x[i:i + 1]) for i in range(n)]))
    assert one.calls == [4] * n


def test_a_fixed_batch_gets_every_piece_at_its_size():
    sess = Fake(4, 4)
    y = sess.run(_frames(5))
    assert sess.calls == [4, 4] and y.shape == (5, 1, 16, 16)
    np.testing.assert_array_equal(y, _frames(5).mean(axis=1, keepdims=True) + 1.0)


def test_the_pieces_a_backend_sets_beat_its_info():
    sess = Fake()
    sess.max_piece = 4  # e.g. ONNX Runtime's CPU piece
    sess.run(_frames(10))
    assert sess.calls == [4, 4, 2]
    sess.calls.clear()
    sess.max_piece = 0  # the whole batch
    sess.run(_frames(10))
    assert sess.calls == [10]


@pytest.mark.parametrize("x,match", [
    (np.zeros((2, 3, 16, 8), np.float32), r"input of shape \(3, 16, 8\) given, the model takes \(3, 16, 16\)"),
    (np.zeros((2, 1, 16, 16), np.float32), r"input of shape \(1, 16, 16\) given, the model takes \(3, 16, 16\)"),
    (np.zeros((0, 3, 16, 16), np.float32), r"empty batch \(0 frames\); give a batch N,C,H,W with N >= 1"),
    (np.zeros(16, np.float32), r"expected a batch N,C,H,W, got an array of shape \(16,\)"),
    (np.zeros((3, 16, 16), np.float32), r"expected a batch N,C,H,W, got an array of shape \(3, 16, 16\)"),
    (np.zeros((2, 3, 16, 16), np.uint8), r"expected float frames, got uint8"),
])
def test_a_bad_batch_is_one_line_naming_the_file_and_the_fix(x, match):
    sess = Fake()
    with pytest.raises(SessionError, match=match) as err:
        sess.run(x)
    msg = str(err.value)
    assert msg.startswith(f"{PATH}: ") and "\n" not in msg and ";" in msg
    assert sess.calls == []  # refused before any backend call


def test_close_runs_once_and_a_closed_session_refuses_to_run():
    sess = Fake()
    sess.close()
    sess.close()
    assert sess.closed == 1
    with pytest.raises(SessionError, match=f"{PATH}: this fake session is closed"):
        sess.run(_frames(1))


def test_with_closes_on_an_exception_and_lets_it_through():
    with pytest.raises(ZeroDivisionError):
        with Fake() as sess:
            assert sess.run(_frames(2)).shape == (2, 1, 16, 16)
            1 / 0
    assert sess.closed == 1
    with Fake() as other:
        pass
    assert other.closed == 1


def test_every_builtin_backend_session_is_a_base_session():
    from echoseg.backends import openvino, ort, tensorrt, torch

    for cls in (ort.OrtSession, openvino.OpenVinoSession, tensorrt.TrtSession, torch.TorchSession):
        assert issubclass(cls, BaseSession)
        assert "run" not in vars(cls) and "close" not in vars(cls)  # only the one-piece call and the release
