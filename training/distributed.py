"""Data-parallel training through torch.distributed (``torchrun --nproc_per_node N -m nnpot.cli train ...``).

Each rank takes its share of every global batch (``batch_size`` frames per rank, the same frame
order on all ranks), and gradients are averaged over ranks after each backward pass, so N ranks
at batch size b take the same steps as one process at batch size N*b (for frames of equal size).
Only rank 0 writes files. ``gloo`` on CPU, ``nccl`` on CUDA.

Why not ``torch.nn.parallel.DistributedDataParallel``: the force loss differentiates the energy
with ``torch.autograd.grad(..., create_graph=True)`` inside the forward pass, which DDP's
documentation says it does not support, and DDP's wrapper would hide the model's attributes
from the one ``derivatives`` function. :class:`BucketedAllReduce` does what DDP's reducer does:
gradients are flattened into buckets of about 25 MB in reverse registration order (the order
backward produces them) and each bucket's all-reduce starts, asynchronously, as soon as its last
gradient has been accumulated, overlapping communication with the rest of the backward pass.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "init_distributed", "average_gradients", "BucketedAllReduce"]


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


def average_gradients(parameters: Iterable[torch.nn.Parameter], info: DistInfo) -> None:
    """All-reduce and average the gradients of ``parameters`` over the ranks, one parameter at
    a time after the backward pass (the simple reference :class:`BucketedAllReduce` replaces)."""
    if info.world == 1:
        return
    for p in parameters:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= info.world


class BucketedAllReduce:
    """Average gradients over the ranks in buckets whose all-reduce overlaps the backward pass.

    Buckets are launched strictly in order (a ready bucket waits for the earlier ones), so every
    rank issues the same collectives in the same order even when a parameter gets no gradient
    on some rank (its bucket is then launched by :meth:`finish`, with zeros).

    Use: ``sync = BucketedAllReduce(model.parameters(), info)``; after each ``loss.backward()``
    call ``sync.finish()`` before the optimizer step.
    """

    def __init__(self, parameters: Iterable[torch.nn.Parameter], info: DistInfo, bucket_bytes: int = 25 << 20):
        self.info = info
        params = [p for p in parameters if p.requires_grad]
        self.buckets: list[list[torch.nn.Parameter]] = []
        size = bucket_bytes
        for p in reversed(params):  # backward produces the last layers' gradients first
            if size + p.numel() * p.element_size() > bucket_bytes:
                self.buckets.append([])
                size = 0
            self.buckets[-1].append(p)
            size += p.numel() * p.element_size()
        self.where = {id(p): k for k, bucket in enumerate(self.buckets) for p in bucket}
        self._reset()
        if info.world > 1:
            for p in params:
                p.register_post_accumulate_grad_hook(self._ready)

    def _reset(self) -> None:
        self.pending = [len(b) for b in self.buckets]
        self.launched: list[tuple[torch.Tensor, object]] = []

    def _ready(self, p: torch.nn.Parameter) -> None:
        self.pending[self.where[id(p)]] -= 1
        while len(self.launched) < len(self.buckets) and self.pending[len(self.launched)] == 0:
            self._launch(len(self.launched))

    def _launch(self, k: int) -> None:
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.buckets[k]]
        flat = torch.cat([g.reshape(-1) for g in grads])
        self.launched.append((flat, dist.all_reduce(flat, async_op=True)))

    def finish(self) -> None:
        """Launch what is left, wait for every bucket and write the averaged gradients back."""
        if self.info.world == 1:
            return
        while len(self.launched) < len(self.buckets):
            self._launch(len(self.launched))
        for (flat, work), bucket in zip(self.launched, self.buckets):
            work.wait()
            flat /= self.info.world
            start = 0
            for p in bucket:
                n = p.numel()
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                p.grad.copy_(flat[start:start + n].view_as(p))
                start += n
        self._reset()
