"""torchrun / DistributedDataParallel: joining the process group, ranks, and SyncBatchNorm.

Under torchrun (WORLD_SIZE > 1) the process group is initialised (gloo on CPU, nccl on CUDA) and
every global batch is split into `world_size` contiguous shards (`shard`); each rank's loss is
scaled by world_size / global_batch, so the averaged gradient is exactly the global-batch mean
gradient. Only rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from linearcnn.train.config import TrainConfig


@dataclass(frozen=True)
class Dist:
    """This process's place in the run: its rank and the number of processes."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, lo: int, hi: int) -> tuple[int, int]:
        """This rank's contiguous part [lo', hi') of the rows [lo, hi)."""
        size = hi - lo
        return lo + (size * self.rank) // self.world_size, lo + (size * (self.rank + 1)) // self.world_size

    def all_reduce(self, sums: torch.Tensor) -> torch.Tensor:
        """`sums` summed over ranks, in place (one collective; nothing to do in one process)."""
        if self.world_size > 1:
            import torch.distributed as dist

            dist.all_reduce(sums)
        return sums


def is_main_process() -> bool:
    """Whether this process is rank 0 under torchrun (or not under torchrun at all)."""
    return int(os.environ.get("RANK", "0")) == 0


@contextlib.contextmanager
def distributed(device: torch.device) -> Iterator[tuple[Dist, torch.device]]:
    """Join the torchrun process group when WORLD_SIZE > 1 (gloo on CPU, nccl on CUDA).

    Yields this process's Dist and its device (cuda:LOCAL_RANK for a bare "cuda"). The group is
    created once per process and then reused (re-creating a group after destroying it can hang
    under torchrun's rendezvous); it is destroyed when the process exits.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        yield Dist(), device
        return
    import atexit

    import torch.distributed as dist

    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        atexit.register(_leave_process_group)
    yield Dist(rank=dist.get_rank(), world_size=dist.get_world_size()), device


def _leave_process_group() -> None:
    """At exit: wait for every rank, then destroy the group. Without the barrier a rank that ends
    first tears its gloo connections down under a peer still using them ("terminate called without
    an active exception", exit -6)."""
    import torch.distributed as dist

    if not dist.is_initialized():
        return
    try:
        dist.barrier()
    except RuntimeError:  # a peer already gone: nothing left to wait for
        pass
    dist.destroy_process_group()


def use_sync_bn(config: TrainConfig, model: nn.Module, device: torch.device, world_size: int) -> bool:
    """Whether to turn BatchNorm into SyncBatchNorm (see TrainConfig; `train` refuses "on" without CUDA)."""
    has_batch_norm = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    return config.sync_bn != "off" and has_batch_norm and world_size > 1 and device.type == "cuda"


__all__ = ["Dist", "distributed", "is_main_process", "use_sync_bn"]
