"""Loader workers and data-parallel training: the same batches however the work is split."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from echoseg.train.batches import BatchPlan, make_loader


def _frames(n=37):
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (n, 24, 24, 3), dtype=np.uint8), (rng.random((n, 24, 24)) > 0.5).astype(np.uint8)


def _epoch(workers, epoch=2, unlabelled=None):
    images, masks = _frames()
    loader, plan = make_loader(images, masks, batch_size=8, seed=5, augment=True, workers=workers, pin_memory=False,
                               unlabelled=unlabelled, unlabelled_per_step=3 if unlabelled is not None else 0)
    plan.epoch = epoch
    return list(loader)


def test_batches_are_the_same_with_and_without_workers():
    unl = np.random.default_rng(1).integers(0, 255, (10, 24, 24, 3), dtype=np.uint8)
    a, b = _epoch(0, unlabelled=unl), _epoch(2, unlabelled=unl)
    assert len(a) == len(b) == 5
    for x, y in zip(a, b):
        assert torch.equal(x["x"], y["x"]) and torch.equal(x["y"], y["y"]) and torch.equal(x["u"], y["u"])
    c = _epoch(0, epoch=3)
    assert not torch.equal(a[0]["x"], c[0]["x"])  # a new epoch is a new order and new augmentation
    assert a[0]["x"].dtype == torch.float32 and set(torch.unique(a[0]["y"]).tolist()) <= {0.0, 1.0}


def test_ranks_take_equal_disjoint_shares_of_one_order():
    plans = [BatchPlan(37, 4, seed=1, rank=r, world=2) for r in range(2)]
    for p in plans:
        p.epoch = 4
    shares = [np.concatenate([idx for _, _, idx in p]) for p in plans]
    assert len(shares[0]) == len(shares[1]) == 19 and len(plans[0]) == len(plans[1]) == 5
    assert set(shares[0]) | set(shares[1]) == set(range(37))  # everyone seen; one frame repeated to pad
    single = BatchPlan(37, 4, seed=1)
    single.epoch = 4
    assert sorted(np.concatenate([idx for _, _, idx in single])) == list(range(37))


@pytest.mark.slow
def test_torchrun_two_cpu_processes_train_one_run(synth_dir, tmp_path):
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([torchrun, "--standalone", "--nproc-per-node", "2", "-m", "echoseg.train",
                        "--data", str(synth_dir), "--model", "matae-unet", "--width", "8", "--epochs", "1",
                        "--batch-size", "4", "--out", str(out), "--device", "cpu"],
                       capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir() if p.suffix in (".pt", ".csv", ".png", ".json")) == \
        ["best.pt", "curves.png", "last.pt", "log.csv", "train_config.json"]
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert [r_["epoch"] for r_ in rows] == ["1"]  # one log, written once (rank 0)
    assert r.stdout.count("best val Dice") == 1
