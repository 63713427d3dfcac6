"""Stage 1 of a two-stage recipe: the vision encoder and the experts alone, trained on the labels, before joint
training (`model.grounding.expert_warmup_steps`).

The experts are LEAD's bottleneck at small budgets: trained jointly for 400 steps they reach an expert macro AUROC
far below what the same encoder reaches when it is trained longer on L_cls alone (docs/RESULTS.md), and the
report can only be as right as they are. A BCE-only step skips the decoder, so it costs about a third of a joint
step. RaDialog and CCD train their classifiers first as well; here the stage is part of `leadrrg train`, with
the joint loss, data, augmentation and schedule shape of the run:

- the same classification loss as the joint stage (`LeadModel.classification_forward`: label policy, context
  balance), the same training loader and augmentation (epochs numbered after the joint stage's, so the order
  differs) with its items made `images_only` (no report is edited or tokenised, which saved a fifth of a step on 2
  CPU cores), AdamW at `train.lr` (`train.lr_llm` for a pretrained vision encoder) with the run's warmup and a
  cosine decay over the stage's own steps;
- under DDP the gradients are averaged across ranks by hand (only these two modules train), so every rank keeps
  identical weights;
- it runs once, when a run starts (a resumed run has a checkpoint, which holds its result); one
  `expert_warmup` record per `train.log_every` steps goes to logs.jsonl with `step` 0 (before the first joint step).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from leadrrg.collectives import DistContext
from leadrrg.data.collate import collate_images, move_batch
from leadrrg.errors import LeadrrgError
from leadrrg.progress import Progress
from leadrrg.train.build import TrainingTask, make_train_loader, set_loader_epoch, stage_plan
from leadrrg.train.optim import build_optimizer, set_learning_rates
from leadrrg.train.step import autocast_context, make_grad_scaler

logger = logging.getLogger(__name__)

EPOCH_OFFSET = 1_000_000  # stage-1 epochs are numbered after any joint epoch: a different order, same sampler


class ExpertStage(nn.Module):
    """The modules stage 1 trains, with the model's learning-rate groups (a pretrained encoder at lr_llm)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.vision, self.experts = model.vision, model.experts
        self.pretrained_vision = model.config.vision.name == "hf"

    def trainable_parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        vision = [p for p in self.vision.parameters() if p.requires_grad]
        experts = [p for p in self.experts.parameters() if p.requires_grad]
        if self.pretrained_vision:
            return {"new": experts, "pretrained": vision}
        return {"new": vision + experts}


def run_stage_one(task: TrainingTask, run_dir: Path, ctx: DistContext, quiet: bool) -> dict[str, float]:
    """Announce stage 1 (`build.stage_plan`: its steps and how to turn it off; on stderr unless `quiet`, else at
    log level info) and run it -> {stage1_steps, stage1_time_s} for the run's summary."""
    plan = stage_plan(task.config, task.model)
    if plan and ctx.is_main:
        (logger.info if quiet else lambda text: print(f"leadrrg train: {text}", file=sys.stderr))(plan)
    started = time.perf_counter()
    precision = task.config.train.precision
    steps = warm_up_experts(task, run_dir, ctx, lambda: autocast_context(precision, ctx.device), quiet)
    return {"stage1_steps": steps, "stage1_time_s": time.perf_counter() - started if steps else 0.0}


def warm_up_experts(task: TrainingTask, run_dir: Path, ctx: DistContext, autocast, quiet: bool = True) -> int:
    """Train `task.model`'s vision encoder and experts for `model.grounding.expert_warmup_steps` steps on L_cls
    -> the number of steps trained (0: no stage 1). `autocast()` returns the run's autocast context (fp16 gets a
    loss scaler); unless `quiet`, rank 0 shows a progress line."""
    model, config = task.model, task.config
    steps = config.model.grounding.expert_warmup_steps
    if steps == 0:
        return 0
    if getattr(model, "experts", None) is None:  # fusion=none: nothing to warm up
        logger.info("no stage 1: model.injection.fusion=%r has no experts", config.model.injection.fusion)
        return 0
    schedule = dataclasses.replace(
        config.train, max_steps=steps, warmup_steps=min(config.train.warmup_steps, steps)
    )
    stage = ExpertStage(model)
    # Only what stage 1 runs goes to the device: a decoder that train.strategy=fsdp shards never sits on one whole.
    for module in (stage, getattr(model, "balance", None)):
        if module is not None:
            module.to(ctx.device)
    optimizer, _ = build_optimizer(stage, schedule)
    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    scaler = make_grad_scaler(config.train.precision, ctx.device)
    dataset = task.train_dataset
    augment = dataset.augment  # restored for the joint stage
    dataset.augment = augment and config.model.grounding.expert_warmup_augment
    dataset.images_only = True  # no report is edited or tokenised: the same images and targets, cheaper
    loader, sampler = make_train_loader(task, ctx, group_by_length=False, collate=collate_images)
    log = open(run_dir / "logs.jsonl", "a", encoding="utf-8") if ctx.is_main else None  # noqa: SIM115
    bar = Progress(steps, "expert warm-up", unit="steps", enabled=ctx.is_main and not quiet)
    model.train()
    started, window, epoch = time.perf_counter(), [], 0
    try:
        step = 0
        while step < steps:
            set_loader_epoch(loader, sampler, EPOCH_OFFSET + epoch, 0)
            for batch in loader:
                if step == steps:
                    break
                lr_factor = set_learning_rates(optimizer, step, schedule)
                batch = move_batch(batch, ctx.device)
                with autocast():
                    inputs = ("images", "view_mask", "expert_labels", "expert_attributes")
                    loss = model.classification_forward(*(batch.get(key) for key in inputs))
                value = float(loss.detach())
                if not _finite_everywhere(value, ctx):  # decided together: no rank waits in a collective
                    raise LeadrrgError(
                        f"expert warm-up diverged: the loss is not finite at step {step + 1}; lower train.lr "
                        f"(now {config.train.lr})"
                    )
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if ctx.enabled:
                    _average_gradients(parameters, ctx.world_size)
                scaler.unscale_(optimizer)
                if schedule.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(parameters, schedule.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                step += 1
                bar.update(1)
                window.append(value)
                if log is not None and (step % config.train.log_every == 0 or step == steps):
                    _log_record(log, step, window, lr_factor, time.perf_counter() - started)
                    window = []
            epoch += 1
    finally:
        dataset.augment, dataset.images_only = augment, False
        bar.close()
        if log is not None:
            log.close()
    optimizer.zero_grad(set_to_none=True)
    logger.info("expert warm-up: %d steps in %.0f s", steps, time.perf_counter() - started)
    return steps


def _log_record(log, step: int, window: list[float], lr_factor: float, wall_s: float) -> None:
    """One `expert_warmup` record in logs.jsonl: the mean classification loss since the last record."""
    record = {
        "kind": "expert_warmup",
        "step": 0,
        "warmup_step": step,
        "cls_loss": sum(window) / len(window),
        "lr_factor": lr_factor,
        "wall_s": wall_s,
    }
    log.write(json.dumps(record) + "\n")
    log.flush()


def _finite_everywhere(value: float, ctx: DistContext) -> bool:
    bad = torch.tensor(0.0 if math.isfinite(value) else 1.0, device=ctx.device)
    if ctx.enabled:
        dist.all_reduce(bad)
    return bad.item() == 0


def _average_gradients(parameters: list[nn.Parameter], world_size: int) -> None:
    for parameter in parameters:
        if parameter.grad is None:
            parameter.grad = torch.zeros_like(parameter)  # every rank reduces the same tensors
        dist.all_reduce(parameter.grad)
        parameter.grad /= world_size
