"""Sessions opened by echo-run, echo-bench's worker and echo-eval's artifact scorer close on every path,
errors included."""

from __future__ import annotations

import numpy as np
import pytest
from oracle import CyclingOracle

from echoseg.backends.session import SessionInfo
from echoseg.config import ArtifactMeta, InputSpec, ModelConfig


class Counted(CyclingOracle):
    """An oracle session that counts its closes (BaseSession runs _close once however often close is called)."""

    def __init__(self, granularity: float = 1.0) -> None:
        super().__init__(np.zeros((1, 112, 112), bool))
        meta = ArtifactMeta(model=ModelConfig("matae-unet", 8, (0.5, 1.0)), input_spec=InputSpec(),
                            granularity=granularity)
        self.info = SessionInfo("oracle", "fp32", "cpu", 1, 0, meta, "oracle.onnx")
        self.closes = 0

    def _close(self) -> None:
        self.closes += 1


def test_run_videos_closes_the_session_it_opened_when_the_inputs_cannot_be_listed(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from echoseg.runtime import api

    opened: list[Counted] = []
    monkeypatch.setattr(api, "choose", lambda *a: SimpleNamespace(path=tmp_path / "m.onnx", backend="onnxruntime",
                                                                 reason="test", options={}))
    monkeypatch.setattr(api, "open_choice", lambda *a, **k: opened.append(Counted()) or opened[-1])

    def unreadable(inputs):
        raise PermissionError(13, "Permission denied", str(inputs[0]))

    monkeypatch.setattr(api, "expand_inputs", unreadable)
    with pytest.raises(PermissionError):
        api.run_videos([tmp_path / "in"], out=tmp_path / "out")
    assert len(opened) == 1 and opened[0].closes == 1


def test_run_videos_leaves_a_session_it_was_given_open(tmp_path, monkeypatch):
    from echoseg.runtime import api

    given = Counted()
    assert api.run_videos([tmp_path / "missing.avi"], out=tmp_path / "out", session=given)[0].ok is False
    assert given.closes == 0


def test_the_bench_worker_closes_its_sessions_when_a_pass_fails(tmp_path, monkeypatch):
    from echoseg.bench import worker

    opened: list[Counted] = []
    monkeypatch.setattr(worker, "_open", lambda cfg: opened.append(Counted()) or opened[-1])

    def fails(sess, video, batch):
        raise RuntimeError("decoder died")

    monkeypatch.setattr(worker, "stream_masks", fails)
    cfg = worker.WorkerConfig(artifact="m.onnx", backend="onnxruntime", videos=["v.avi"], mode="reference")
    with pytest.raises(RuntimeError, match="decoder died"):
        worker.run(cfg)
    assert len(opened) == 1 and opened[0].closes == 1


def test_the_artifact_scorer_closes_its_sessions_on_a_refusal_and_on_with(tmp_path, monkeypatch):
    from echoseg.artifacts import ArtifactError
    from echoseg.backends import choose
    from echoseg.train.eval_artifact import artifact_scorer

    opened: list[Counted] = []
    g = {"value": 0.5}
    monkeypatch.setattr(choose, "open_session",
                        lambda path, backend, granularity=None: opened.append(Counted(g["value"])) or opened[-1])
    half = tmp_path / "model.g0.5.onnx"
    half.write_bytes(b"")
    with pytest.raises(ArtifactError, match="no full-width"):
        artifact_scorer(half, "onnxruntime")
    assert opened[0].closes == 1  # refused after opening: closed, not left to the garbage collector
    g["value"] = 1.0
    full = tmp_path / "model.onnx"
    full.write_bytes(b"")
    with artifact_scorer(full, "onnxruntime") as scorer:
        assert scorer.granularities == (1.0,) and opened[1].closes == 0
        assert scorer.predict(np.zeros((3, 112, 112, 3), np.uint8), 1.0).shape == (3, 112, 112)
    assert opened[1].closes == 1
    scorer.close()  # twice is harmless
    assert opened[1].closes == 1


def test_evaluate_closes_the_scorer_after_scoring_and_when_scoring_fails(tmp_path, monkeypatch):
    from echoseg.data.dataset import FrameSet
    from echoseg.train import eval as ev
    from echoseg.train.scorer import Scorer

    closes: list[str] = []

    def scorer(target, device, backend, tta):
        return Scorer("unet", 8, str(target), (112, 112), (1.0,), lambda x, g: np.zeros(x.shape[:3], bool),
                      lambda g: 0.0, tmp_path, close=lambda: closes.append(str(target)))

    monkeypatch.setattr(ev, "scorer_for", scorer)
    frames = FrameSet(images=np.zeros((2, 112, 112, 3), np.uint8), masks=np.ones((2, 112, 112), bool),
                      names=["a", "b"], phases=["", ""], layout="frames")
    result = ev.evaluate("good.onnx", tmp_path, frames=frames, out=tmp_path / "e")
    assert closes == ["good.onnx"] and result["frames"] == 2
    empty = FrameSet(images=np.zeros((0, 112, 112, 3), np.uint8), masks=np.zeros((0, 112, 112), bool),
                     names=[], phases=[], layout="frames")
    with pytest.raises(ValueError, match="no usable"):
        ev.evaluate("bad.onnx", tmp_path, frames=empty, out=tmp_path / "f")
    assert closes == ["good.onnx", "bad.onnx"]
