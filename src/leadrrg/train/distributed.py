"""Data-parallel training: process group set-up from torchrun's environment, a seeded sharded sampler,
and the few collectives the loop needs. A single process (no torchrun) is world size 1 and every
helper degrades to a no-op, so the loop has one code path.

`torchrun --nproc_per_node N -m leadrrg.cli train ...` trains with DDP: NCCL on GPUs, gloo on CPUs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, Sampler

from leadrrg.collectives import (
    DistContext,
)
from leadrrg.errors import LeadrrgError


def resolve_device(preference: str, local_rank: int = 0) -> torch.device:
    """`auto` picks this process's GPU when CUDA is available, else the CPU."""
    if preference == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(preference)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LeadrrgError(
            f"train.device is {preference!r} but CUDA is not available; use train.device=cpu or auto"
        )
    if device.type == "cuda" and device.index is None:
        device = torch.device(f"cuda:{local_rank}")
    return device


def init_distributed(device_preference: str = "auto") -> DistContext:
    """A DistContext from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT);
    world size 1 without it. Joins an existing process group if one is already initialised."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1 and not (dist.is_available() and dist.is_initialized()):
        return DistContext(device=resolve_device(device_preference))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_preference, local_rank)
    owns = False
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend, device_id=device if device.type == "cuda" else None)
        owns = True
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, device, owns)


def all_reduce_mean(values: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Mean of `values` over ranks (a copy; the input is unchanged)."""
    if not ctx.enabled:
        return values
    values = values.detach().clone().to(ctx.device if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values / ctx.world_size


class EpochShardSampler(Sampler):
    """Indices of one epoch for one rank: a permutation that is a pure function of (seed, epoch), read from
    global position `start` (the studies of the epoch already consumed, by all ranks together) and dealt
    round-robin to the ranks; the tail that does not fill one index per rank is left out.

    With world size W and per-rank batch B, rank r's k-th batch holds permutation positions
    start + k*W*B .. start + (k+1)*W*B - 1 (those = start + r mod W): the ranks together see exactly the global
    batch a single process with batch W*B would see. Since the position is global, a run resumed with another
    world size or batch size reads the rest of the epoch, each study once.

    With `item_seeds`, it yields `(index, item_seed)` pairs for `PositionSeeded`: the seed is a function of
    (seed, epoch, global position), so augmentation does not depend on the number of processes or loader
    workers, or on where a run was resumed."""

    def __init__(
        self, num_items: int, seed: int, rank: int = 0, world_size: int = 1, item_seeds: bool = False
    ):
        self.num_items, self.seed, self.rank, self.world_size = num_items, seed, rank, world_size
        self.item_seeds = item_seeds
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Read epoch `epoch` from global position `start` (studies of the epoch already consumed)."""
        self.epoch, self.start = epoch, start

    def epoch_order(self) -> list[int]:
        """The epoch's permutation of all items (every rank alike)."""
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        return torch.randperm(self.num_items, generator=generator).tolist()

    def positions(self) -> range:
        """This rank's global positions from `start`: start + rank, start + rank + W, ... (len(self) of them)."""
        first = self.start + self.rank
        return range(first, first + len(self) * self.world_size, self.world_size)

    def epoch_indices(self) -> list[int]:
        """The item indices this rank reads, in order."""
        order = self.epoch_order()
        return [order[position] for position in self.positions()]

    def __iter__(self) -> Iterator:
        order = self.epoch_order()
        if not self.item_seeds:
            return iter([order[position] for position in self.positions()])
        base = epoch_seed(self.seed, self.epoch)
        return iter((order[position], (base + 104_729 * position) % 2**63) for position in self.positions())

    def __len__(self) -> int:
        return max(self.num_items - self.start, 0) // self.world_size


class PositionSeeded(Dataset):
    """Wraps a dataset whose items draw from torch's global RNG (augmentation): item `(index, seed)` is
    drawn under `torch.manual_seed(seed)` inside `fork_rng`, so the caller's RNG stream is untouched."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]


def epoch_seed(seed: int, epoch: int) -> int:
    """A distinct, reproducible seed per (seed, epoch) for data order and loader workers."""
    return (seed * 1_000_003 + epoch * 7_919 + 12_345) % (2**63 - 1)
