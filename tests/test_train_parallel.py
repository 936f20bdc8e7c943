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


_RECAL_SCRIPT = r"""
import json, os, sys
import numpy as np, torch, torch.distributed as dist
from torch import nn
from echoseg.config import InputSpec, ModelConfig
from echoseg.models import build_model
from echoseg.train.recipe import recalibrate_bn
from echoseg.train.records import plain_copy

dist.init_process_group("gloo")
torch.manual_seed(0)
model = nn.SyncBatchNorm.convert_sync_batchnorm(build_model(ModelConfig("matae-unet", 4, (0.5, 1.0))))
spec = InputSpec(mean=(40.0,) * 3, std=(50.0,) * 3, height=32, width=32)
frames = np.random.default_rng(1).integers(0, 255, (6, 32, 32, 3), dtype=np.uint8)
out = {}
if dist.get_rank() == 0:  # what EpochEnd does on rank 0 alone
    try:
        recalibrate_bn(model, frames, spec, model.granularities, "cpu")
        out["in_place"] = "ran"
    except Exception as exc:  # SyncBatchNorm in train mode: a collective (on CPU, a refusal)
        out["in_place"] = type(exc).__name__ + ": " + str(exc)[:80]
    shipped = plain_copy(model)
    recalibrate_bn(shipped, frames, spec, shipped.granularities, "cpu")
    plain = build_model(ModelConfig("matae-unet", 4, (0.5, 1.0)))
    plain.load_state_dict(shipped.state_dict())
    recalibrate_bn(plain, frames, spec, plain.granularities, "cpu")
    out["sync_left_in_copy"] = sum(isinstance(m, nn.SyncBatchNorm) for m in shipped.modules())
    out["sync_left_in_model"] = sum(isinstance(m, nn.SyncBatchNorm) for m in model.modules())
    out["same_stats"] = all(torch.equal(a, b) for a, b in zip(shipped.state_dict().values(), plain.state_dict().values()))
    out["stats_moved"] = bool(any((m.running_mean != 0).any() for m in shipped.modules() if isinstance(m, nn.BatchNorm2d)))
    print(json.dumps(out))
dist.barrier()
dist.destroy_process_group()
"""


def test_rank0_recalibrates_a_plain_copy_not_the_syncbatchnorm_model(tmp_path):
    """Under torchrun on GPUs without EMA, rank 0 alone recalibrated the SyncBatchNorm model in train
    mode: a collective the other ranks never join. Two gloo processes: rank 0 runs the recalibration
    on plain_copy (BatchNorm2d, same weights) while rank 1 waits at the barrier."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = tmp_path / "recal.py"
    script.write_text(_RECAL_SCRIPT)
    procs = []
    for rank in range(2):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-800:] for o in outs]
    import json

    got = json.loads(outs[0][0].strip().splitlines()[-1])
    assert got["in_place"] != "ran"  # the old way: SyncBatchNorm refuses to run on one rank alone
    assert got["sync_left_in_copy"] == 0 and got["sync_left_in_model"] > 0  # training model untouched
    assert got["same_stats"] and got["stats_moved"]


def test_default_workers_scale_with_the_epoch_not_only_the_machine(monkeypatch):
    """On a 16-core GPU box a tiny training used to start 8 loader processes every epoch."""
    from echoseg.train import batches

    monkeypatch.setattr(batches.os, "cpu_count", lambda: 16)
    assert batches.default_workers("cuda") == 8 and batches.default_workers("cpu") == 4  # no size given: as before
    assert batches.default_workers("cuda", batches=10) == 0  # a test's or smoke run's epoch: main process
    assert batches.default_workers("cuda", batches=2 * batches.BATCHES_PER_WORKER) == 2
    assert batches.default_workers("cuda", batches=10_000) == 8 and batches.default_workers("cpu", 10_000) == 4
    monkeypatch.setattr(batches.os, "cpu_count", lambda: 2)
    assert batches.default_workers("cpu", 10_000) == 0 and batches.default_workers("cuda", 10_000) == 1
