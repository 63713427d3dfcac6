"""Fully sharded data parallelism (`train.strategy=fsdp`, PyTorch's FSDP2 `fully_shard`) for decoders that do not
fit one device: each process keeps 1/W of every parameter, gradient and AdamW moment, and gathers the parameters of
one unit at a time for its forward and backward.

Units: every HF decoder layer (the layer inside LEAD's `InjectedLayer`) is one; the root unit holds the rest:
vision encoder, projector, experts, expert projections, gates, embeddings, final norm and LM head. The gates stay
in the root because `injecting` prepares them (`ExpertGate.prepare`) once per study, outside the layers' forward;
the root's parameters are gathered for the whole of `LeadModel.forward`.

What leaves the processes is always full (unsharded): checkpoints, RUN/model.safetensors and RUN/best/ are the files
DDP writes (`full_model_state`, `full_optimizer_state`: collectives that put full tensors in rank 0's CPU memory),
so resume, export and decoding cannot tell the strategies apart, and a run resumes under either strategy and any
number of processes. With one process there is nothing to shard: training runs unsharded (`use_fsdp`).
`parallel_model` is where the two strategies part: DDP wraps the model, FSDP shards it in place.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, fully_shard

from leadrrg.collectives import DistContext
from leadrrg.config import TrainConfig
from leadrrg.model.decoder import get_decoder_layers
from leadrrg.model.injection import InjectedLayer

logger = logging.getLogger(__name__)


def use_fsdp(train_cfg: TrainConfig, ctx: DistContext) -> bool:
    """Whether this run shards its model: train.strategy=fsdp under torchrun with more than one process."""
    if train_cfg.strategy != "fsdp":
        return False
    if not ctx.enabled:
        logger.info("train.strategy=fsdp with a single process: nothing to shard, the model trains unsharded")
        return False
    return True


def is_sharded(model: nn.Module) -> bool:
    return isinstance(model, FSDPModule)


def parallel_model(model: nn.Module, ctx: DistContext, sharded: bool) -> nn.Module:
    """The module the training steps call: `model` sharded in place across the processes (`sharded`), else `model`
    on this process's device, wrapped in DDP under torchrun. Build the optimizer after this call: sharding
    replaces the parameters."""
    if sharded:
        return shard_model(model, ctx)
    model.to(ctx.device)
    if not ctx.enabled:
        return model
    return nn.parallel.DistributedDataParallel(
        model, device_ids=[ctx.device] if ctx.device.type == "cuda" else None
    )


def shard_model(model: nn.Module, ctx: DistContext) -> nn.Module:
    """`fully_shard` each decoder layer, then the root (see the module docstring); rank 0's weights on every rank
    first, as DDP does. Only the shards move to the device: the model may sit in CPU memory until here."""
    _broadcast_from_rank0(model, ctx.device)
    mesh = init_device_mesh(ctx.device.type, (ctx.world_size,))
    for layer in get_decoder_layers(model.lm, model.backbone):
        fully_shard(layer.layer if isinstance(layer, InjectedLayer) else layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    units = sum(isinstance(module, FSDPModule) for module in model.modules())
    logger.info(
        "train.strategy=fsdp: %d units (decoder layers and the root) over %d processes", units, ctx.world_size
    )
    return model


@torch.no_grad()
def _broadcast_from_rank0(model: nn.Module, device: torch.device) -> None:
    """Rank 0's parameters and buffers on every rank, one tensor at a time through `device` (NCCL sends device
    tensors only), so that no rank ever holds the whole model on its device."""
    for tensor in [*model.parameters(), *model.buffers()]:
        on_device = tensor.detach().to(device).contiguous()
        dist.broadcast(on_device, src=0)
        tensor.copy_(on_device)


def full_model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict of a sharded `model` without its frozen parameters (which are never saved), full, in CPU
    memory on rank 0 (other ranks get nothing to use): a collective. Tied parameters share one tensor again, as in
    `model.state_dict()`, so that `weights_to_save` saves them once."""
    options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
    state = get_model_state_dict(model, options=options)
    first: dict[int, str] = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        tied = first.setdefault(id(parameter), name)
        if name in state and tied in state:
            state[name] = state[tied]
    return state


def full_optimizer_state(
    model: nn.Module, optimizer: torch.optim.Optimizer, param_names: list[str]
) -> dict[str, Any]:
    """`optimizer.state_dict()` as one unsharded process would return it (parameters numbered in optimizer order,
    `param_names`), with full tensors in CPU memory on rank 0 (other ranks get nothing to use): a collective."""
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    full = get_optimizer_state_dict(model, optimizer, options=options)
    if not full.get("param_groups"):
        return {}
    index = {name: i for i, name in enumerate(param_names)}
    return {
        "state": {index[name]: full["state"][name] for name in sorted(full["state"], key=index.__getitem__)},
        "param_groups": [
            {**group, "params": [index[name] for name in group["params"]]} for group in full["param_groups"]
        ],
    }


def full_states(
    model: nn.Module, optimizer: torch.optim.Optimizer, param_names: list[str]
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(`full_model_state`, `full_optimizer_state`): what a checkpoint saves of a sharded model."""
    return full_model_state(model), full_optimizer_state(model, optimizer, param_names)


def load_full_optimizer_state(
    model: nn.Module, optimizer: torch.optim.Optimizer, param_names: list[str], state: dict[str, Any]
) -> None:
    """Load `state`, an `optimizer.state_dict()` with full tensors (a checkpoint's, of any strategy and number of
    processes), into the optimizer of a sharded `model`: each rank keeps its shard of every moment."""
    full = {
        "state": {param_names[index]: values for index, values in state["state"].items()},
        "param_groups": [
            {**group, "params": [param_names[index] for index in group["params"]]}
            for group in state["param_groups"]
        ],
    }
    set_optimizer_state_dict(model, optimizer, full, options=StateDictOptions(full_state_dict=True))


@contextlib.contextmanager
def gathered_root(model: nn.Module) -> Iterator[None]:
    """The root unit's parameters gathered for the block: decoding calls the model's methods (`encode_study`,
    `lm_forward`), not its forward, whose hook would gather them. The decoder layers gather their own. Every rank
    runs the block alike (the gathers are collectives); a no-op for a model that is not sharded."""
    if not is_sharded(model):
        yield
        return
    model.unshard()
    try:
        yield
    finally:
        model.reshard()
