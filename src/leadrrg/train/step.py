"""One optimizer step, and what it needs: the mixed precision, the batch stream across epochs, divergence.

One optimizer step = `grad_accum_steps` micro-batches (forward under autocast, backward, DDP gradient sync on
the last one only, FSDP's on each) -> a collective non-finite-loss check -> unscale (fp16) -> clip -> AdamW step.
"""

from __future__ import annotations

import contextlib
import resource
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from leadrrg.config import TrainConfig
from leadrrg.data.collate import move_batch
from leadrrg.model.losses import target_token_count
from leadrrg.train.build import set_loader_epoch


def resolve_precision(precision: str, device: torch.device) -> str:
    """fp32 | bf16 | fp16 for train.precision on `device`: auto is bf16 on CUDA with bf16, fp16 (with a
    GradScaler) on older GPUs, fp32 on CPU."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def autocast_context(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast to bf16 or fp16 per `resolve_precision`; nothing for fp32."""
    resolved = resolve_precision(precision, device)
    if resolved == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if resolved == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def make_grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """A loss scaler, enabled for fp16 only (fp16 gradients underflow without it); disabled it passes through."""
    return torch.amp.GradScaler(device.type, enabled=resolve_precision(precision, device) == "fp16")


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def batch_stream(loader, sampler, state) -> Iterator[dict[str, Any]]:
    """Batches across epochs from the state's position; the state tracks what has been consumed (in studies
    of the epoch, over all processes, so that a resume with another world size or batch size goes on from
    the same place)."""
    while True:
        set_loader_epoch(loader, sampler, state.epoch, state.samples_in_epoch)
        for batch in loader:
            state.samples_in_epoch += loader.batch_size * sampler.world_size  # every rank read a full batch
            yield batch
        state.epoch += 1
        state.samples_in_epoch = 0


class Diverged(Exception):
    """A non-finite loss on `processes` of the `world_size` processes (raised on every process alike)."""

    def __init__(self, processes: int, world_size: int):
        super().__init__(f"the loss is not finite on {processes} of {world_size} processes")
        self.processes, self.world_size = processes, world_size


def count_non_finite(losses: torch.Tensor, device: torch.device, distributed: bool) -> int:
    """How many processes have a non-finite loss this step: a collective, so that all decide alike (a rank
    that stopped alone would leave the others waiting in the next collective)."""
    flag = torch.tensor([0.0 if bool(torch.isfinite(losses).all()) else 1.0], device=device)
    if distributed:
        torch.distributed.all_reduce(flag)
    return int(flag.item())


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterator[dict[str, Any]],
    train_cfg: TrainConfig,
    device: torch.device,
    distributed: bool = False,
    scaler: torch.amp.GradScaler | None = None,
) -> tuple[torch.Tensor, float]:
    """One optimizer step over `grad_accum_steps` batches from `batches` (DDP gradient sync on the last
    only); returns the mean (loss, lm_loss, cls_loss) (3,) and the gradient norm before clipping. A non-finite
    loss on any process raises `Diverged` on every process, before the optimizer step. With an enabled
    `scaler` (fp16) the loss is scaled for backward and a step with overflowed gradients is skipped.

    The LM loss is the mean over every report token of the step, across micro-batches and processes (not a mean
    of per-batch means, which would weigh a token of a short-report batch more): each micro-batch's token mean is
    weighted by its share of the step's tokens (times the world size, since DDP averages gradients over
    processes). The classification loss stays a mean over micro-batches."""
    scaler = scaler or torch.amp.GradScaler(device.type, enabled=False)
    micro_batches = [next(batches) for _ in range(train_cfg.grad_accum_steps)]
    counts = torch.stack([target_token_count(b["target_ids"]) for b in micro_batches]).double()  # (A,)
    total = counts.sum().to(device)
    world_size = 1
    if distributed:
        torch.distributed.all_reduce(total)
        world_size = torch.distributed.get_world_size()
    weights = (counts * world_size / total.cpu().clamp(min=1)).tolist()  # (A,) sum to world_size
    losses = torch.zeros(3)
    for micro, batch in enumerate(micro_batches):
        last = micro == train_cfg.grad_accum_steps - 1
        # FSDP (no `no_sync`) reduce-scatters every micro-batch: its gradients stay sharded while they accumulate.
        no_sync = getattr(model, "no_sync", None)
        sync = no_sync() if (distributed and not last and no_sync) else contextlib.nullcontext()
        with sync:
            with autocast_context(train_cfg.precision, device):
                out = model(**move_batch(batch, device))
            cls_term = out["loss"] - out["lm_loss"]  # lambda * L_cls
            scaler.scale(out["lm_loss"] * weights[micro] + cls_term / train_cfg.grad_accum_steps).backward()
        terms = torch.stack([out["loss"].detach(), out["lm_loss"].detach(), out["cls_loss"].detach()])
        losses += terms.float().cpu()
    processes_diverged = count_non_finite(losses, device, distributed)
    if processes_diverged:  # every process stops here together; the weights stay the last step's
        optimizer.zero_grad(set_to_none=True)
        raise Diverged(processes_diverged, world_size)
    scaler.unscale_(optimizer)
    parameters = [p for p in model.parameters() if p.grad is not None]
    max_norm = train_cfg.grad_clip if train_cfg.grad_clip > 0 else float("inf")
    grad_norm = torch.nn.utils.clip_grad_norm_(parameters, max_norm)
    if hasattr(grad_norm, "full_tensor"):  # sharded gradients (FSDP): a DTensor
        grad_norm = grad_norm.full_tensor()
    grad_norm = float(grad_norm)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return losses / train_cfg.grad_accum_steps, grad_norm
