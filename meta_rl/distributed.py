"""Data-parallel meta-training with ``torch.distributed``: each rank takes a slice of the tasks.

``torchrun --nproc-per-node P [--nnodes N --rdzv-endpoint HOST:PORT] -m meta_rl train ...``
runs the ordinary command on ``P x N`` ranks. Every rank draws the iteration's ``T`` tasks from
``(seed, iteration)`` and keeps a contiguous slice of them (:meth:`Shard.part`; ``T`` need not
divide evenly). It samples, adapts and differentiates its slice locally, as one process does, and
the rest is combined exactly, so every rank takes the same step:

- sampling: the slice's episodes are those the whole batch would give its tasks (its envs are
  seeded and its action noise drawn as the whole batch's rows; ``"steps"`` batches agree on
  each round's tasks and size);
- the meta-objective: each rank weights its tasks by ``1 / T`` and its sums are all-reduced (the
  meta-gradient in one flat tensor, each of TRPO's curvature products, the line search's
  surrogate and KL); Reptile's direction likewise; the metrics too;
- the linear baseline and advantage normalisation are per task, so nothing else crosses ranks.

No ``DistributedDataParallel``: it does not carry the second-order (``create_graph``)
meta-gradients; the flat tensors are all-reduced here. Rank 0 alone writes the run folder and
the console. A single process needs no launcher and runs none of this (``SINGLE``).
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


@dataclass(frozen=True)
class Shard:
    """This process's place in a job of ``world`` ranks (``rank`` 0 writes the run)."""

    rank: int = 0
    world: int = 1

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def part(self, total: int) -> tuple[int, int]:
        """``(start, stop)``: this rank's contiguous share of ``total`` items, the shares
        differing by at most one."""
        bounds = np.linspace(0, total, self.world + 1).round().astype(int)
        return int(bounds[self.rank]), int(bounds[self.rank + 1])

    def all_reduce(self, tensor: Tensor, op: str = "sum") -> Tensor:
        """``tensor`` summed (or its maximum, ``op="max"``) over the ranks, in place."""
        if self.distributed:
            import torch.distributed as dist

            dist.all_reduce(tensor, dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
        return tensor

    def all_gather_vector(self, values: np.ndarray) -> list[np.ndarray]:
        """Every rank's 1-d ``values`` (of any length), in rank order."""
        if not self.distributed:
            return [values]
        import torch.distributed as dist

        local = torch.as_tensor(values, dtype=torch.float64)
        sizes = [torch.zeros(1, dtype=torch.int64) for _ in range(self.world)]
        dist.all_gather(sizes, torch.tensor([local.numel()]))
        width = int(max(s.item() for s in sizes))
        padded = torch.zeros(width, dtype=torch.float64)
        padded[: local.numel()] = local
        gathered = [torch.zeros(width, dtype=torch.float64) for _ in range(self.world)]
        dist.all_gather(gathered, padded)
        return [g[: int(n.item())].numpy() for g, n in zip(gathered, sizes)]

    def check_same(self, tensors: list[Tensor], what: str) -> None:
        """Raise a ``RuntimeError`` naming the ranks unless ``tensors`` are equal on all ranks
        (compared through a float64 fingerprint)."""
        if not self.distributed:
            return
        fingerprint = torch.stack([
            torch.cat([t.detach().double().reshape(-1).cpu() for t in tensors]).sum(),
            torch.cat([t.detach().double().reshape(-1).cpu().abs() for t in tensors]).sum(),
        ])
        prints = self.all_gather_vector(fingerprint.numpy())
        differ = [r for r, p in enumerate(prints) if not np.array_equal(p, prints[0])]
        if differ:
            raise RuntimeError(f"{what} differ between ranks (ranks {differ} differ from rank 0); "
                               "every rank must start from the same config and checkpoint")


SINGLE = Shard()


def current() -> Shard:
    """The shard of this process: its rank in the default process group, if there is one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return Shard(dist.get_rank(), dist.get_world_size())
    return SINGLE


def launched() -> bool:
    """Whether this process was started by ``torchrun`` (or another launcher) with several
    ranks."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device: str, timeout_s: float = 120.0) -> Shard:
    """Join the process group ``torchrun`` set up: gloo for the CPU, nccl for CUDA (rank ``r``
    then uses GPU ``LOCAL_RANK``). Every collective gives up after ``timeout_s``, so a rank that
    fails never leaves the others waiting for good."""
    import torch.distributed as dist

    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo",
                                timeout=datetime.timedelta(seconds=timeout_s))
    return current()


def leave() -> None:
    """Leave the process group, if this process joined one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def local_world() -> int:
    """Ranks on this machine (``LOCAL_WORLD_SIZE``), to share its cores among them."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))
