"""Process-group set-up for ``torchrun`` (gloo on CPU, nccl on CUDA); a no-op otherwise."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def slice(self, n: int) -> slice:
        """This rank's rows of a global batch of n (n divisible by world)."""
        per = n // self.world
        return slice(self.rank * per, (self.rank + 1) * per)


def init_dist(device: str) -> Dist:
    """Join the torchrun process group before any device is chosen: ``local_rank`` picks this process's GPU.

    ``device`` is the --device option (auto, cpu, cuda, cuda:N): CUDA gets nccl, the CPU gloo.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if cuda and device in ("auto", "cuda"):
        torch.cuda.set_device(local_rank)  # nccl binds each process to the current device
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), local_rank)


def barrier(d: Dist) -> None:
    if d.world > 1:
        dist.barrier()


def broadcast_tensor(x: torch.Tensor, d: Dist) -> torch.Tensor:
    """Rank 0's value of x on every rank (so all ranks share one guard)."""
    if d.world > 1:
        dist.broadcast(x, src=0)
    return x
