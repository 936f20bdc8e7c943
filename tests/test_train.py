"""Training, checkpoints, metrics and evaluation on synthetic data."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from echoseg.config import TrainConfig
from echoseg.models.checkpoint import CheckpointError, build_from_checkpoint, load_checkpoint, save_checkpoint
from echoseg.train.metrics import bootstrap_ci, mask_agreement, per_frame, summarize


def test_metrics_values():
    t = np.zeros((2, 4, 4), bool)
    p = np.zeros((2, 4, 4), bool)
    t[0, :2, :2] = True  # 4 px
    p[0, :2, :] = True  # 8 px, 4 overlap
    s = per_frame(p, t)
    assert s["dice"][0] == pytest.approx(2 * 4 / 12)
    assert s["iou"][0] == pytest.approx(4 / 8)
    assert s["pixel_accuracy"][0] == pytest.approx(12 / 16)
    assert s["dice"][1] == 1.0 and s["iou"][1] == 1.0  # both empty
    assert summarize(p, t)["dice"] == pytest.approx((2 / 3 + 1) / 2)
    assert mask_agreement(p, t) == pytest.approx(8 / 12)
    lo, hi = bootstrap_ci(np.array([0.8, 0.9, 1.0, 0.85, 0.95]))
    assert 0.8 <= lo < 0.9 < hi <= 1.0


def test_checkpoint_round_trip(unet_ckpt, tmp_path):
    ck = load_checkpoint(unet_ckpt)
    model = build_from_checkpoint(ck)
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        y1 = model(x)
    out = save_checkpoint(tmp_path / "copy.pt", model, ck.model, ck.input_spec, metrics={"val_dice": 0.75})
    ck2 = load_checkpoint(out)
    assert ck2.model == ck.model and ck2.input_spec == ck.input_spec
    assert ck2.metrics["val_dice"] == 0.75
    with torch.no_grad():
        assert torch.equal(build_from_checkpoint(ck2)(x), y1)
    assert len(ck.meta().source_sha256) == 64
    assert load_checkpoint(unet_ckpt.parent).path == unet_ckpt  # a run folder resolves to best.pt


def test_corrupt_and_wrong_kind_checkpoints(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00garbage" * 20)
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_checkpoint(bad)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(CheckpointError, match="not an echoseg checkpoint"):
        load_checkpoint(other)
    with pytest.raises(CheckpointError, match="no best.pt or last.pt"):
        load_checkpoint(tmp_path)


@pytest.fixture(scope="module")
def train_data(tmp_path_factory):
    from echoseg.data.synthetic import write_dataset

    return write_dataset(tmp_path_factory.mktemp("traindata"), videos=40, frames=24, seed=21)


@pytest.mark.slow
def test_unet_training_reaches_dice_and_resumes(train_data, tmp_path):
    from echoseg.train.eval import evaluate
    from echoseg.train.loop import train

    out = tmp_path / "run"
    cfg = TrainConfig(data=str(train_data), model="unet", width=8, epochs=5, batch_size=8, out=str(out), seed=0)
    result = train(cfg)
    assert result.best["val_dice"] > 0.85
    for name in ("best.pt", "last.pt", "log.csv", "curves.png"):
        assert (out / name).is_file()
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert [int(r["epoch"]) for r in rows] == list(range(1, 6))
    m = evaluate(out, train_data, "test")
    assert m["dice"] > 0.85 and m["frames"] == 12
    assert set(m["phases"]) == {"ED", "ES"}
    saved = json.loads((out / "eval-test" / "metrics.json").read_text())
    assert {"dice", "iou", "pixel_accuracy", "frames"} <= set(saved)
    assert saved["dice"] == pytest.approx(m["dice"])
    assert (out / "eval-test" / "montage.png").stat().st_size > 1000
    # Resume continues from last.pt to the new epoch count, keeping the log.
    resumed = train(TrainConfig(**{**cfg.to_dict(), "epochs": 6}), resume=True)
    assert [r["epoch"] for r in resumed.rows] == list(range(1, 7))
    assert load_checkpoint(out / "last.pt").epoch == 6


@pytest.mark.slow
def test_resume_restores_optimizer_ema_and_rng_state(train_data, tmp_path):
    """A run interrupted after epoch 2 and resumed ends with the same weights as one that ran 3
    epochs straight: optimizer, EMA, schedule and every random stream are restored, not restarted."""
    from echoseg.train.loop import Callbacks, train

    base = dict(data=str(train_data), model="matae-unet", width=8, batch_size=8, seed=3, epochs=3,
                granularities=(0.5, 1.0))
    train(TrainConfig(**base, out=str(tmp_path / "straight")))

    def stop_after_two(row):
        if row["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(**base, out=str(tmp_path / "split")), callbacks=Callbacks(on_epoch=stop_after_two))
    assert load_checkpoint(tmp_path / "split" / "last.pt").epoch == 2
    train(TrainConfig(**base, out=str(tmp_path / "split")), resume=True)
    a = load_checkpoint(tmp_path / "straight" / "last.pt")
    b = load_checkpoint(tmp_path / "split" / "last.pt")
    for k, v in a.state_dict.items():
        assert torch.allclose(v.float(), b.state_dict[k].float(), atol=1e-6), k
    for k, v in a.optimizer["raw_state_dict"].items():
        assert torch.allclose(v.float(), b.optimizer["raw_state_dict"][k].float(), atol=1e-6), k


@pytest.mark.slow
def test_matae_training_all_granularities_and_unlabelled(train_data, tmp_path):
    from echoseg.train.eval import evaluate
    from echoseg.train.loop import train

    out = tmp_path / "mat"
    # 8 epochs: the warm-up + cosine recipe reaches on these 56 frames in 8 what constant-LR Adam did in 5
    cfg = TrainConfig(data=str(train_data), model="matae-unet", width=8, epochs=8, batch_size=8, out=str(out),
                      unlabelled_frames=True, unlabelled_per_step=2, granularities=(0.125, 0.25, 0.5, 1.0),
                      recon_weight=0.1, recon_until=1.0, select="best")
    result = train(cfg)
    assert result.best["val_dice"] > 0.8
    m = evaluate(out, train_data, "test")
    assert set(m["granularities"]) == {"0.125", "0.25", "0.5", "1"}
    assert m["granularities"]["1"]["dice"] == pytest.approx(m["dice"])
    gm = [m["granularities"][g]["gmacs"] for g in ("0.125", "0.25", "0.5", "1")]
    assert gm == sorted(gm) and gm[0] < gm[-1] / 40
    assert m["granularities"]["0.5"]["dice"] > 0.45  # a 4-channel sub-network: a real, if rough, LV mask
    header = next(csv.reader(open(out / "eval-test" / "frames.csv")))
    assert header[-3:] == ["dice_g0.125", "dice_g0.25", "dice_g0.5"]


def test_default_granularities_follow_the_width():
    from echoseg.train.loop import model_config

    assert model_config(TrainConfig(model="matae-unet", width=16)).granularities == (0.25, 0.5, 1.0)
    assert model_config(TrainConfig(model="matae-unet", width=64)).granularities == (0.125, 0.25, 0.5, 1.0)
    assert model_config(TrainConfig(model="matae-unet", width=16, granularities=(0.125, 1.0))).granularities == (0.125, 1.0)
    assert model_config(TrainConfig(model="unet", width=16)).granularities == (1.0,)


def test_training_refuses_data_without_any_lv_pixel(tmp_path):
    """Given frames whose masks are all empty (the readers refuse such a split already), training
    refuses too rather than scoring empty-vs-empty as a perfect Dice."""
    from echoseg.data.frameset import FrameSet
    from echoseg.train.loop import TrainError, train

    fs = FrameSet(np.full((4, 16, 16, 3), 80, np.uint8), np.zeros((4, 16, 16), bool), [f"v_{i}" for i in range(4)],
                  [""] * 4)
    with pytest.raises(TrainError, match="no training frame has any LV pixel"):
        train(TrainConfig(model="unet", width=8, epochs=1, out=str(tmp_path / "r")), data=(fs, fs))


def test_resume_without_last_is_an_error(synth_dir, tmp_path):
    from echoseg.train.loop import TrainError, train

    with pytest.raises(TrainError, match="does not exist"):
        train(TrainConfig(data=str(synth_dir), model="unet", width=8, epochs=1, out=str(tmp_path / "x")), resume=True)


def test_a_checkpoint_whose_training_options_this_version_cannot_read_still_loads(unet_ckpt, tmp_path, caplog):
    raw = torch.load(unet_ckpt, map_location="cpu", weights_only=True)
    raw["train_config"] = {**TrainConfig().to_dict(), "select": "some-future-policy"}
    torch.save(raw, tmp_path / "best.pt")
    ck = load_checkpoint(tmp_path / "best.pt")
    assert ck.train_config is None and ck.model.name == "unet"
    assert "training options are not readable" in caplog.text
    raw["train_config"] = {**TrainConfig().to_dict(), "from_the_future": 1}
    torch.save(raw, tmp_path / "best.pt")
    assert load_checkpoint(tmp_path / "best.pt").train_config is None
