"""The process-group context and the few collectives shared by training (`leadrrg.train.distributed`) and
sharded inference (`leadrrg.inference.shards`), with no training code. A single process (no torchrun) is
world size 1 and every helper is a no-op."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False  # this context created the process group (and destroys it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def shutdown(ctx: DistContext, clean: bool = True) -> None:
    if ctx.owns_group:
        leave_group(clean)


def leave_group(clean: bool = True) -> None:
    """Destroys the default process group. After a clean finish it first waits for every rank: without that
    barrier a rank that finishes first can tear its sockets down while a peer's last collective is still in
    flight, and on gloo that rarely ends the peer with SIGABRT ("terminate called without an active
    exception") after its work is done, so torchrun reports a failure for a run that wrote everything. After
    an error there is no barrier: the others may never reach it, and this rank must exit so that torchrun
    stops them."""
    if not dist.is_initialized():
        return
    if clean:
        dist.barrier()
    dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def all_gather_objects(obj: Any, ctx: DistContext) -> list[Any]:
    """[obj of rank 0, obj of rank 1, ...] on every rank (small JSON-like objects only)."""
    if not ctx.enabled:
        return [obj]
    gathered: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj: Any, ctx: DistContext) -> Any:
    """Rank 0's `obj` on every rank."""
    if not ctx.enabled:
        return obj
    box = [obj if ctx.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]
