"""Length-grouped batches (`data.group_by_length`, after Hugging Face Trainer's `group_by_length`): training batches
of studies whose tokenised reports have similar lengths, so that the collator (which pads to the batch's longest
report) pads less.

The epoch's order is the plain sampler's permutation of (train.seed, epoch) (`EpochShardSampler`), regrouped:

1. the tail that cannot fill a global batch (train.batch_size x processes studies) is set aside at the end (a
   partial global batch is never read, as without grouping: `drop_last`);
2. the rest is cut into mega-batches of `MEGA_BATCHES` global batches, each sorted by report length (stable: ties
   keep the permutation's order);
3. each mega-batch is cut into global batches, and the order of all global batches of the epoch is shuffled from
   (train.seed, epoch); the one holding the longest report goes first, so a batch that does not fit in memory
   fails at the epoch's first step rather than hours later.

Everything else is `EpochShardSampler`'s: global positions dealt round-robin, so the processes' batches of one step
are disjoint shares of one global batch of similar lengths; the data position is global, so a run resumed with the
same global batch (batch size x processes, in any split) reads exactly the batches an uninterrupted run would.
A resume with another global batch regroups the rest of its epoch (`leadrrg.train.resume` warns).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from leadrrg.train.distributed import EpochShardSampler, epoch_seed

MEGA_BATCHES = 50  # global batches per mega-batch (Hugging Face's LengthGroupedSampler: at most 50)


def length_grouped_order(
    order: Sequence[int], lengths: Sequence[int], group: int, generator: torch.Generator
) -> list[int]:
    """`order` (a permutation of item indices) regrouped into runs of `group` items of similar `lengths[index]`,
    the runs shuffled with `generator` (see the module docstring); the last len(order) % group items of `order`
    stay last, in their order."""
    order = np.asarray(order, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    if group < 1:
        raise ValueError(f"group is {group}; expected at least 1")
    usable = len(order) - len(order) % group
    if usable == 0:
        return order.tolist()
    mega = MEGA_BATCHES * group
    runs = []
    for start in range(0, usable, mega):
        chunk = order[start : min(start + mega, usable)]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        runs.extend(chunk[i : i + group] for i in range(0, len(chunk), group))
    shuffled = [runs[i] for i in torch.randperm(len(runs), generator=generator).tolist()]
    longest = max(range(len(shuffled)), key=lambda i: int(lengths[shuffled[i]].max()))
    shuffled[0], shuffled[longest] = shuffled[longest], shuffled[0]
    return np.concatenate([*shuffled, order[usable:]]).tolist()


class LengthGroupedSampler(EpochShardSampler):
    """`EpochShardSampler` over `length_grouped_order`: each global batch of `batch_size` x `world_size` positions
    holds studies of similar report length (`lengths`: each item's tokenised sequence length)."""

    def __init__(
        self,
        lengths: Sequence[int],
        seed: int,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        item_seeds: bool = False,
    ):
        super().__init__(len(lengths), seed, rank, world_size, item_seeds)
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.group = batch_size * world_size  # one global batch: what one step of all processes reads
        self._cached: tuple[int, list[int]] | None = None

    def epoch_order(self) -> list[int]:
        """The epoch's grouped permutation of all items (every rank alike; computed once per epoch)."""
        if self._cached is None or self._cached[0] != self.epoch:
            generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch) + 1)
            grouped = length_grouped_order(super().epoch_order(), self.lengths, self.group, generator)
            self._cached = (self.epoch, grouped)
        return self._cached[1]


def padding_share(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> float:
    """The share of padded positions when each batch of item indices is padded to its longest item."""
    lengths = np.asarray(lengths, dtype=np.int64)
    real = padded = 0
    for batch in batches:
        sizes = lengths[np.asarray(batch, dtype=np.int64)]
        real += int(sizes.sum())
        padded += int(sizes.max()) * len(sizes) if len(sizes) else 0
    return 1.0 - real / padded if padded else 0.0
