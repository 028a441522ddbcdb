"""Data-parallel training through torch.distributed (``torchrun --nproc_per_node N -m nnpot.cli train ...``).

Each rank takes its share of every global batch (``batch_size`` frames per rank, the same frame
order on all ranks), and gradients are averaged over ranks after each backward pass, so N ranks
at batch size b take the same steps as one process at batch size N*b (for frames of equal size).
Only rank 0 writes files. ``gloo`` on CPU, ``nccl`` on CUDA.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "init_distributed", "average_gradients"]


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> tuple[DistInfo, torch.device]:
    """Join the process group that torchrun describes in the environment (if any)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return DistInfo(), device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size()), device


def average_gradients(parameters, info: DistInfo) -> None:
    """All-reduce and average the gradients of ``parameters`` over the ranks."""
    if info.world == 1:
        return
    for p in parameters:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= info.world
