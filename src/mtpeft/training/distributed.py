"""Data-parallel training under torchrun: rank, world size, sharding, gradient sync, rank-0 writes.

``torchrun --nproc-per-node N -m mtpeft train ...`` starts N copies of the command; each reads the
environment torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT) and joins one process
group (nccl on CUDA, gloo on the CPU). Every rank draws the same global batches (same seeds, the
task sampler in lockstep) and encodes its own contiguous shard of each; ``training.batch_size`` is
the global batch, so N processes train exactly what one process with that batch trains.

Gradients are synchronised once per step, after every task's backward and before clipping: one
all-reduce (SUM) of all trainable gradients flattened into a single buffer. Each rank's loss term
is scaled by its share of the global batch (n_rank / n_global), so the sum is the gradient of the
global batch mean, whatever the shard sizes. (DistributedDataParallel's reducer is not used: the
loop runs several forward/backward passes per step outside the wrapped ``forward``, and in its
synchronising pass DDP leaves the gradients of parameters unused in that pass, here the other
tasks' heads, unreduced.) Search's in-batch negatives are gathered from every rank with a
gradient (``gather_rows``), so the global batch means the same as in one process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Iterable, Sequence

import torch
import torch.distributed as dist
from torch import nn

from mtpeft.errors import MtpeftError


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        """Only rank 0 writes files and validates."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


SINGLE = Distributed()


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: torch.device) -> tuple[Distributed, torch.device]:
    """Join the process group torchrun describes (a no-op for one process); on CUDA each rank
    takes the GPU of its LOCAL_RANK."""
    if not launched_by_torchrun():
        return SINGLE, device
    rank, world, local = (int(os.environ.get(k, "0")) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise MtpeftError(f"rank {rank}: LOCAL_RANK {local} but only {torch.cuda.device_count()} CUDA device(s)")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        # validation runs on rank 0 while the others wait: a long timeout, not the default 30 min
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timedelta(hours=6))
    return Distributed(rank, world, local), device


def teardown(info: Distributed) -> None:
    if info.active and dist.is_initialized():
        dist.destroy_process_group()


def shard_sizes(n: int, world: int) -> list[int]:
    """Contiguous shard sizes of ``n`` examples over ``world`` ranks (the first ranks take one more)."""
    return [n // world + (1 if r < n % world else 0) for r in range(world)]


def shard(examples: Sequence[Any], info: Distributed) -> tuple[list[Any], float]:
    """This rank's contiguous shard of a global batch and its weight n_rank / n_global. A rank whose
    shard is empty (a batch smaller than the world) runs one example with weight 0, so that every
    rank still takes part in the step's collectives."""
    examples = list(examples)
    if not info.active:
        return examples, 1.0
    sizes = shard_sizes(len(examples), info.world)
    start = sum(sizes[: info.rank])
    mine = examples[start : start + sizes[info.rank]]
    if not mine:
        return examples[:1], 0.0
    return mine, len(mine) / len(examples)


def broadcast_parameters(modules: Iterable[nn.Module], info: Distributed) -> None:
    """Every rank starts from rank 0's weights (they are seeded alike; this makes it certain)."""
    if not info.active:
        return
    with torch.no_grad():
        for module in modules:
            for tensor in [*module.parameters(), *module.buffers()]:
                dist.broadcast(tensor.data, src=0)


def all_reduce_gradients(parameters: Iterable[nn.Parameter], info: Distributed) -> None:
    """Sum every trainable gradient over the ranks, in one flat buffer per device (one collective)."""
    if not info.active:
        return
    params = [p for p in parameters if p.requires_grad]
    by_device: dict[torch.device, list[nn.Parameter]] = {}
    for p in params:
        by_device.setdefault(p.device, []).append(p)
    for group in by_device.values():
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in group]
        flat = torch.cat([g.reshape(-1).float() for g in grads])
        dist.all_reduce(flat)
        offset = 0
        for p in group:
            n = p.numel()
            p.grad = flat[offset : offset + n].view_as(p).to(p.dtype)
            offset += n


def all_reduce_sum(values: torch.Tensor, info: Distributed) -> torch.Tensor:
    if info.active:
        values = values.clone()
        dist.all_reduce(values)
    return values


class _GatherRows(torch.autograd.Function):
    """All ranks' rows, concatenated in rank order; the backward pass sums every rank's gradient
    of the gathered rows (each rank's loss reads all of them) and keeps this rank's own rows."""

    @staticmethod
    def forward(ctx: Any, local: torch.Tensor, counts: list[int], rank: int) -> torch.Tensor:
        width = max(max(counts), 1)
        padded = local.new_zeros((width, *local.shape[1:]))
        keep = min(counts[rank], len(local))
        padded[:keep] = local[:keep]
        parts = [torch.empty_like(padded) for _ in counts]
        dist.all_gather(parts, padded.contiguous())
        ctx.counts, ctx.rank, ctx.local_shape = counts, rank, local.shape
        return torch.cat([part[:count] for part, count in zip(parts, counts)])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        start = sum(ctx.counts[: ctx.rank])
        own = grad.new_zeros(ctx.local_shape)
        count = ctx.counts[ctx.rank]
        own[:count] = grad[start : start + count]
        return own, None, None


def gather_rows(local: torch.Tensor, counts: list[int], info: Distributed) -> tuple[torch.Tensor, int]:
    """Every rank's rows (rank r has ``counts[r]``, the shard sizes) in rank order, with a gradient
    back to each rank's own rows, and the offset of this rank's rows among them."""
    if not info.active:
        return local, 0
    return _GatherRows.apply(local, list(counts), info.rank), sum(counts[: info.rank])
