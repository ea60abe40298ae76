"""DistributedDataParallel helpers for `torchrun` launches (gloo on CPU, NCCL on CUDA).

A plain `python -m vqi.run` is world size 1 and every helper is a no-op there.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist
from torch.utils.data import Sampler


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_rank() -> int:
    """This process's global rank as `torchrun` sets it (0 outside torchrun)."""
    return int(os.environ.get("RANK", "0"))


def setup(device_type: str) -> DistInfo:
    """Join the process group that `torchrun` describes in the environment (once)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    info = DistInfo(env_rank(), world, int(os.environ.get("LOCAL_RANK", "0")))
    if info.enabled and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return info


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum `tensor` over every rank in place (int64 confusion matrices stay exact)."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


class ShardSampler(Sampler[int]):
    """Every `world_size`-th index from `rank`: each sample on exactly one rank, no padding,
    so a confusion matrix summed over ranks counts every pixel once."""

    def __init__(self, length: int, rank: int, world_size: int):
        self.indices = list(range(rank, length, world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
