"""Data-parallel training under torchrun, on PyTorch's own engine (DistributedDataParallel).

``torchrun --standalone --nproc-per-node N -m echoseg.train <echo-train options>`` sets RANK,
WORLD_SIZE and LOCAL_RANK; each process trains on its share of every epoch's batches, gradients
are averaged by DDP (NCCL on GPUs, gloo on CPU), and rank 0 alone validates, selects, saves
checkpoints and writes logs and plots. Batch norm: on GPUs every BatchNorm (each granularity's
switchable one too) becomes a SyncBatchNorm, so statistics are those of the global batch; on
CPU (gloo) each rank normalises with its own batch and rank 0's running statistics are
broadcast; either way the shipped statistics are recalibrated on rank 0 before validation.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def world_from_env() -> World:
    """The process's place in a torchrun job (a single process without torchrun)."""
    try:
        return World(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                     int(os.environ.get("LOCAL_RANK", 0)))
    except ValueError:
        return World()


def start(world: World, device: str) -> str:
    """Join the process group; returns the device this rank trains on."""
    import torch
    import torch.distributed as dist

    if not world.distributed:
        return device
    if device.startswith("cuda"):
        torch.cuda.set_device(world.local_rank)
        device = f"cuda:{world.local_rank}"
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return device


def wrap(module, world: World, device: str):
    """``module`` as a DDP module (SyncBatchNorm on GPUs); unchanged in a single process."""
    if not world.distributed:
        return module
    from torch import nn
    from torch.nn.parallel import DistributedDataParallel as DDP

    if device.startswith("cuda"):
        module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
        return DDP(module, device_ids=[world.local_rank], find_unused_parameters=True)
    return DDP(module, find_unused_parameters=True)


def barrier(world: World) -> None:
    if world.distributed:
        import torch.distributed as dist

        dist.barrier()


def stop(world: World) -> None:
    if world.distributed:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
