"""Core records and the one probability-threshold-to-logit cut every part uses."""

from __future__ import annotations

import math

import pytest

from echoseg.config import ArtifactMeta, ConfigError, InputSpec, ModelConfig, TrainConfig, logit_cut


def test_logit_cut_is_the_logit_of_the_probability_threshold():
    assert logit_cut(0.5) == 0.0
    assert logit_cut(0.8) == pytest.approx(math.log(4.0))
    assert logit_cut(0.8, output="probabilities") == pytest.approx(0.8)
    assert math.isfinite(logit_cut(1.0)) and math.isfinite(logit_cut(0.0))  # clamped, never inf


def test_records_round_trip_and_reject_unknown_keys():
    spec = InputSpec(mean=(10, 20, 30), std=(5, 6, 7))
    assert spec.to_dict()["mean"] == [10.0, 20.0, 30.0]
    assert InputSpec.from_dict(spec.to_dict()) == spec
    assert TrainConfig.from_dict(TrainConfig(epochs=3).to_dict()) == TrainConfig(epochs=3)
    meta = ArtifactMeta(model=ModelConfig(name="matae-unet", width=8, granularities=(0.5, 1.0)),
                        input_spec=spec, granularity=0.5, threshold=0.4)
    assert ArtifactMeta.from_json(meta.to_json()) == meta
    with pytest.raises(ConfigError, match="unknown keys \\['depth'\\]"):
        ModelConfig.from_dict({"name": "unet", "depth": 5})
    with pytest.raises(ConfigError, match="std must be positive"):
        InputSpec(std=(1, 0, 1))


def test_full_lr_is_refused_for_a_model_without_a_full_only_part():
    """An API user who sets full_lr on a unet gets the CLI's one line, not a silently unused rate."""
    with pytest.raises(ConfigError, match="--full-lr 0.0003: only a matae-unet"):
        TrainConfig(model="unet", full_lr=3e-4)
    assert TrainConfig(model="matae-unet", full_lr=3e-4).full_lr == 3e-4
    assert TrainConfig(model="unet", full_lr=0.0).full_lr == 0.0
