"""Training batches through a torch DataLoader: augmentation in the workers, deterministic.

Every batch is named by (seed, epoch, step) and everything random about it (which frames, which
augmentation, which unlabelled frames) is drawn from generators seeded by that name. So a run
gives the same batches with 0 or 8 workers, on one process or sharded over several
(data-parallel ranks take interleaved shares of the same per-epoch order), and a resumed run
continues exactly where it stopped.
"""

from __future__ import annotations

import math
import os
from typing import Iterator, Sequence

import numpy as np


#: An epoch shorter than this many batches per worker is loaded in the main process: each worker is
#: a process started again every epoch, which a short epoch does not pay back.
BATCHES_PER_WORKER = 32


def default_workers(device: str, batches: int | None = None) -> int:
    """Loader workers when --workers is not given: on a GPU box most cores (the GPU waits for
    augmentation otherwise), none on a small CPU box (workers would take the cores the training
    runs on); in both, at most one per BATCHES_PER_WORKER batches of an epoch (``batches``: this
    rank's batches per epoch), so a tiny training (a test, a smoke run) starts no processes."""
    cores = os.cpu_count() or 1
    if device.startswith("cuda"):
        cap = max(0, min(8, cores - 1))
    else:
        cap = 0 if cores <= 4 else min(4, cores // 4)
    if batches is not None:
        cap = min(cap, max(0, int(batches)) // BATCHES_PER_WORKER)
    return cap


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


class BatchPlan:
    """The batches of one rank's share of an epoch, as (epoch, step, frame indices)."""

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1) -> None:
        self.n, self.batch_size, self.seed, self.rank, self.world = n, batch_size, seed, rank, world
        self.epoch = 1

    def steps(self) -> int:
        return math.ceil(math.ceil(self.n / self.world) / self.batch_size)

    def __len__(self) -> int:
        return self.steps()

    def _mine(self) -> np.ndarray:
        if getattr(self, "_cached", (None,))[0] != self.epoch:
            order = epoch_order(self.n, self.seed, self.epoch)
            per_rank = math.ceil(self.n / self.world)
            padded = np.resize(order, per_rank * self.world)  # equal shares: ranks must step together
            self._cached = (self.epoch, padded[self.rank::self.world])
        return self._cached[1]

    def batch(self, step: int) -> tuple[int, int, np.ndarray]:
        if not 0 <= step < self.steps():
            raise IndexError(step)
        return self.epoch, step, self._mine()[step * self.batch_size:(step + 1) * self.batch_size]

    def __iter__(self) -> Iterator[tuple[int, int, np.ndarray]]:
        return (self.batch(k) for k in range(self.steps()))


class Frames:
    """Index -> (image H,W,3 uint8, mask H,W uint8) over a FrameSet's arrays."""

    def __init__(self, images: np.ndarray, masks: np.ndarray) -> None:
        self.images, self.masks = images, masks

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.images[i], self.masks[i]


class Collate:
    """Builds one batch in a worker: stacks, augments, adds unlabelled frames (float 0..255)."""

    def __init__(self, frames: Frames, seed: int, augment: bool, unlabelled=None, unlabelled_per_step: int = 0,
                 strength: str = "light", device: str = "cpu") -> None:
        from echoseg.data.augment import augment_config

        self.frames, self.seed, self.augment, self.device = frames, seed, augment, device
        self.aug_cfg = augment_config(strength)
        self.unlabelled, self.per_step = unlabelled, unlabelled_per_step

    def __call__(self, item: Sequence) -> dict:
        import torch

        from echoseg.data.augment import augment_batch

        (epoch, step, idx), = item
        gen = torch.Generator().manual_seed(int(np.random.default_rng([self.seed, epoch, step]).integers(2**62)))
        # the uint8 frames travel to the device first: there (a GPU) the augmentation costs no CPU
        x = torch.from_numpy(np.stack([self.frames[i][0] for i in idx])).to(self.device).permute(0, 3, 1, 2).float()
        y = torch.from_numpy(np.stack([self.frames[i][1] for i in idx])).to(self.device)[:, None].float()
        if self.augment:
            x, y = augment_batch(x, y, gen, self.aug_cfg)
        batch = {"x": x, "y": y, "u": None}
        if self.unlabelled is not None and len(self.unlabelled) and self.per_step:
            pick = np.random.default_rng([self.seed, epoch, step, 1]).integers(0, len(self.unlabelled), self.per_step)
            u = torch.from_numpy(np.stack([np.asarray(self.unlabelled[int(i)]) for i in pick])).to(self.device)
            u = u.permute(0, 3, 1, 2).float()
            if self.augment:
                u, _ = augment_batch(u, torch.zeros_like(u[:, :1]), gen, self.aug_cfg)
            batch["u"] = u
        return batch


def make_loader(images: np.ndarray, masks: np.ndarray, *, batch_size: int, seed: int, augment: bool,
                workers: int, pin_memory: bool, rank: int = 0, world: int = 1, unlabelled=None,
                unlabelled_per_step: int = 0, augment_strength: str = "light", device: str = "cpu"):
    """(DataLoader, BatchPlan): set ``plan.epoch`` before iterating the loader for an epoch.

    With no workers the batch is built in the training process and augmented on ``device``
    (on a GPU: no CPU spent on augmentation, so many runs can share one machine); workers always
    augment on the CPU. The random draws are the same either way (CPU generators)."""
    from torch.utils.data import DataLoader

    on = device if workers == 0 else "cpu"
    plan = BatchPlan(len(images), batch_size, seed, rank, world)
    collate = Collate(Frames(images, masks), seed, augment, unlabelled, unlabelled_per_step, augment_strength, on)
    loader = DataLoader(_PlanDataset(plan), batch_size=1, shuffle=False, num_workers=workers,
                        collate_fn=collate, pin_memory=pin_memory and on == "cpu", persistent_workers=False)
    return loader, plan


class _PlanDataset:
    """The plan's batches as a map-style dataset (a worker builds batch k of the current epoch)."""

    def __init__(self, plan: BatchPlan) -> None:
        self.plan = plan

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, k: int):
        return self.plan.batch(k)
