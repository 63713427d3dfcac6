"""The training loop: plain steps (nanoGPT style).

One optimizer step = `grad_accum_steps` micro-batches (forward under autocast, backward, DDP gradient
sync on the last one only) -> clip -> AdamW step at the scheduled lr. Every `log_every` steps a JSONL /
TensorBoard record; every `eval_every` steps validation (loss and a cheap clinical check from the
expert logits: macro AUROC / F1, no generation); every `save_every` steps and at the end a checkpoint.
Metrics and checkpointing live here and in `checkpoint.py`, never in the model.

Nothing trained is lost to a failure after it: a step's checkpoint is written before its validation, a
validation that fails is logged and skipped, and a data error in a training step (an image that does not
decode) first saves the steps completed so far (single process), then stops with the error.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import random
import resource
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from leadrrg.config import RunConfig, TrainConfig, first_difference, load_run_config, save_config, to_dict
from leadrrg.data.collate import move_batch
from leadrrg.errors import LeadrrgError
from leadrrg.io import atomic_write_text, check_output_dir
from leadrrg.metrics.experts import expert_scores
from leadrrg.tokenizer import ReportTokenizer
from leadrrg.train import checkpoint as ckpt
from leadrrg.train.distributed import (
    DistContext,
    all_gather_objects,
    all_reduce_mean,
    barrier,
    epoch_seed,
    init_distributed,
    shutdown,
)
from leadrrg.train.optim import build_optimizer, set_learning_rates
from leadrrg.train.task import (
    TrainingTask,
    build_task,
    make_train_loader,
    make_val_loader,
    resolve_paths,
    set_loader_epoch,
)

logger = logging.getLogger(__name__)

# Called after every optimizer step with (step, record); raising stops training (tests use it to
# simulate a kill between checkpoints).
StepCallback = Callable[[int, dict[str, float]], None]


@dataclasses.dataclass
class TrainerState:
    step: int = 0  # optimizer steps done
    epoch: int = 0  # current epoch
    samples_in_epoch: int = 0  # studies of the current epoch consumed by all processes (global position)
    studies_seen: int = 0  # global (all processes)
    train_time_s: float = 0.0  # time in training steps (excluding validation and checkpoints)
    best_val_loss: float | None = None
    best_step: int | None = None
    last_eval: dict[str, float] | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainerState:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


# --------------------------------------------------------------------------------------------------
# Small pure helpers


def autocast_context(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (auto) or wherever precision=bf16; fp32 otherwise."""
    if precision == "bf16" or (
        precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported()
    ):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def resumed_trainer_state(
    saved: dict[str, Any], train_cfg: TrainConfig, checkpoint_dir: Path
) -> TrainerState:
    """The TrainerState of a checkpoint's trainer state; its data position is global (studies of the epoch), so
    it holds for any world size and batch size, as long as the epoch's permutation (train.seed) is the run's."""
    state = TrainerState.from_dict(saved)
    if "samples_in_epoch" not in saved:  # format 1: per-process batches of the run's own batch and world size
        state.samples_in_epoch = (
            int(saved.get("batch_in_epoch", 0)) * train_cfg.batch_size * saved.get("world_size", 1)
        )
        logger.warning(
            "checkpoint of format 1: its data position assumes train.batch_size=%d", train_cfg.batch_size
        )
    expected = epoch_seed(train_cfg.seed, state.epoch)
    if saved.get("epoch_seed", expected) != expected:
        raise LeadrrgError(
            f"cannot resume from {checkpoint_dir}: it stopped inside the data order of train.seed="
            f"{saved.get('seed')}, not train.seed={train_cfg.seed}; resume with train.seed={saved.get('seed')}"
        )
    return state


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


# --------------------------------------------------------------------------------------------------
# Logging


def _log_lines(path: Path) -> list[str]:
    """The complete JSON records of logs.jsonl; a line torn by a kill mid-write (or otherwise unreadable) is
    dropped with a warning."""
    kept = []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if isinstance(record, dict):
            kept.append(line)
        else:
            logger.warning(
                "%s line %d is not a complete JSON record (a write cut short?); dropped", path, number
            )
    return kept


def supersede_records(path: Path, start_step: int) -> None:
    """Move the records of logs.jsonl past `start_step` (steps a resume trains again) to logs.superseded.jsonl:
    logs.jsonl then reads as one uninterrupted run, and nothing a run logged is deleted."""
    lines = _log_lines(path)
    kept = [line for line in lines if json.loads(line).get("step", 0) <= start_step]
    dropped = [line for line in lines if json.loads(line).get("step", 0) > start_step]
    if dropped:
        with open(path.with_name(ckpt.SUPERSEDED_LOG_FILE), "a", encoding="utf-8") as handle:
            handle.write("".join(line + "\n" for line in dropped))
    atomic_write_text(path, "".join(line + "\n" for line in kept))


def logged_anything(run_dir: Path) -> bool:
    """Whether the run has written a log record (then a failure never deletes the run directory)."""
    path = run_dir / ckpt.LOG_FILE
    return path.is_file() and bool(_log_lines(path))


class RunLogger:
    """logs.jsonl + TensorBoard (rank 0 only), a progress bar on a TTY, one line per eval otherwise."""

    def __init__(
        self, run_dir: Path, ctx: DistContext, start_step: int, max_steps: int, quiet: bool, resume: bool
    ):
        self.enabled = ctx.is_main
        self.quiet = quiet
        self.writer = None
        self.bar = None
        self.plain = None
        if not self.enabled:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        self.path = run_dir / ckpt.LOG_FILE
        if resume and self.path.exists():
            supersede_records(self.path, start_step)
        self.handle = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(run_dir / ckpt.TB_DIR), purge_step=start_step + 1 if resume else None)
        if not quiet and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(
                total=max_steps, initial=start_step, unit="step", desc="train", dynamic_ncols=True
            )
        elif not quiet:  # a log file or pipe: a plain line every 30 s, no carriage returns
            from leadrrg.progress import Progress

            self.plain = Progress(max_steps - start_step, "train", unit="steps")

    def log(self, kind: str, step: int, values: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {"kind": kind, "step": step, **values}
        self.handle.write(json.dumps(record) + "\n")
        self.handle.flush()
        for key, value in values.items():
            if isinstance(value, (int, float)) and value is not None:
                self.writer.add_scalar(f"{kind}/{key}", value, step)
        if kind == "train" and self.bar is not None:
            self.bar.set_postfix(loss=f"{values['loss']:.3f}", sps=f"{values['studies_per_s']:.1f}")
        if kind == "val" and not self.quiet:
            text = " ".join(f"{k}={v:.4g}" for k, v in values.items() if isinstance(v, float))
            (self.bar.write if self.bar is not None else lambda s: print(s, file=sys.stderr))(
                f"step {step}: {text}"
            )

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.update(1)
        if self.plain is not None:
            self.plain.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.plain is not None:
            self.plain.close()
        if self.writer is not None:
            self.writer.close()
            self.handle.close()


# --------------------------------------------------------------------------------------------------
# Validation


@torch.no_grad()
def validate(
    model: nn.Module, loader, device: torch.device, precision: str, max_batches: int
) -> dict[str, float]:
    """Mean losses over the first `max_batches` validation batches (0: all) and expert macro AUROC/F1."""
    from leadrrg.model.lead import expert_targets

    was_training = model.training
    model.eval()
    totals: dict[str, float] = {"loss": 0.0, "lm_loss": 0.0, "cls_loss": 0.0}
    count = 0
    logits_all, labels_all = [], []
    for index, batch in enumerate(loader):
        if max_batches and index >= max_batches:
            break
        with autocast_context(precision, device):
            out = model(**move_batch(batch, device))
        size = len(batch["ids"])
        for key in totals:
            totals[key] += float(out[key]) * size
        count += size
        if out.get("expert_logits") is not None:
            logits_all.append(out["expert_logits"].float().cpu())
            labels_all.append(model.select_expert_labels(batch["expert_labels"]))
    model.train(was_training)
    results = {f"val_{k}": v / max(count, 1) for k, v in totals.items()}
    if logits_all:
        targets, weights = expert_targets(torch.cat(labels_all), model.config.label_policy)
        scores = expert_scores(torch.cat(logits_all).numpy(), targets.numpy(), weights.numpy())
        results.update({f"val_{k}": v for k, v in scores.items() if v is not None})
    return results


# --------------------------------------------------------------------------------------------------
# The loop


def _batch_stream(loader, sampler, state: TrainerState) -> Iterator[dict[str, Any]]:
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
) -> tuple[torch.Tensor, float]:
    """One optimizer step over `grad_accum_steps` batches from `batches` (DDP gradient sync on the last
    only); returns the mean (loss, lm_loss, cls_loss) (3,) and the gradient norm before clipping. A non-finite
    loss on any process raises `Diverged` on every process, before the optimizer step.

    The LM loss is the mean over every report token of the step, across micro-batches and processes (not a mean
    of per-batch means, which would weigh a token of a short-report batch more): each micro-batch's token mean is
    weighted by its share of the step's tokens (times the world size, since DDP averages gradients over
    processes). The classification loss stays a mean over micro-batches."""
    from leadrrg.model.lead import target_token_count

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
        sync = model.no_sync() if (distributed and not last) else contextlib.nullcontext()
        with sync:
            with autocast_context(train_cfg.precision, device):
                out = model(**move_batch(batch, device))
            cls_term = out["loss"] - out["lm_loss"]  # lambda * L_cls
            (out["lm_loss"] * weights[micro] + cls_term / train_cfg.grad_accum_steps).backward()
        terms = torch.stack([out["loss"].detach(), out["lm_loss"].detach(), out["cls_loss"].detach()])
        losses += terms.float().cpu()
    processes_diverged = count_non_finite(losses, device, distributed)
    if processes_diverged:  # every process stops here together; the weights stay the last step's
        optimizer.zero_grad(set_to_none=True)
        raise Diverged(processes_diverged, world_size)
    parameters = [p for p in model.parameters() if p.grad is not None]
    max_norm = train_cfg.grad_clip if train_cfg.grad_clip > 0 else float("inf")
    grad_norm = float(torch.nn.utils.clip_grad_norm_(parameters, max_norm))
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return losses / train_cfg.grad_accum_steps, grad_norm


def _seed_process(seed: int, rank: int) -> None:
    """The training RNG stream (dropout, augmentation) of this process."""
    random.seed(seed + rank)
    np.random.seed((seed + rank) % 2**32)
    torch.manual_seed(seed + rank)


def fit(
    task: TrainingTask,
    run_dir: Path,
    ctx: DistContext,
    resume_from: Path | None = None,
    callbacks: Sequence[StepCallback] = (),
    quiet: bool = False,
    resume: bool = False,
) -> dict[str, Any]:
    """Train `task.model` to `train.max_steps`, from scratch or from the checkpoint in `resume_from`. `resume`
    (implied by `resume_from`) continues the run's logs; without a checkpoint it starts again from step 0."""
    resume = resume or resume_from is not None
    train_cfg = task.config.train
    run_dir = Path(run_dir)
    device = ctx.device
    raw_model = task.model
    state = TrainerState()
    _seed_process(train_cfg.seed, ctx.rank)
    saved_state: dict[str, Any] | None = None
    if resume_from is not None:
        saved_state = ckpt.read_trainer_state(resume_from)
        ckpt.load_model_weights(raw_model, resume_from / ckpt.MODEL_FILE)
        state = resumed_trainer_state(saved_state, train_cfg, resume_from)
    raw_model.to(device)
    optimizer, param_names = build_optimizer(raw_model, train_cfg)
    if saved_state is not None:
        optimizer_tensors, _ = ckpt.read_safetensors(resume_from / ckpt.OPTIMIZER_FILE)
        configured = [
            {key: group[key] for key in RESUMED_HYPERPARAMETERS} for group in optimizer.param_groups
        ]
        with ckpt.damaged_checkpoint(resume_from):
            ckpt.load_optimizer_state(optimizer, param_names, optimizer_tensors, saved_state["optimizer"])
        apply_configured_hyperparameters(optimizer, configured)
        rng_states = saved_state.get("rng", [])
        if isinstance(rng_states, list) and len(rng_states) == ctx.world_size:
            with ckpt.damaged_checkpoint(resume_from):
                ckpt.restore_rng_state(rng_states[ctx.rank])
        else:
            logger.warning(
                "checkpoint has RNG states for %d processes, now %d: RNG reseeded",
                len(rng_states),
                ctx.world_size,
            )
    model: nn.Module = raw_model
    if ctx.enabled:
        model = nn.parallel.DistributedDataParallel(
            raw_model, device_ids=[device] if device.type == "cuda" else None
        )
    model.train()

    loader, sampler = make_train_loader(task, ctx)
    val_loader = make_val_loader(task) if ctx.is_main else None
    run_log = RunLogger(run_dir, ctx, state.step, train_cfg.max_steps, quiet, resume)
    studies_per_step = train_cfg.batch_size * train_cfg.grad_accum_steps * ctx.world_size
    stream = _batch_stream(loader, sampler, state)
    fit_started = time.perf_counter()
    window = {"loss": 0.0, "lm_loss": 0.0, "cls_loss": 0.0, "steps": 0, "time": 0.0}

    def run_validation(saved: bool) -> None:
        """Validate; a failure (e.g. an image that does not decode) is logged and training goes on. When the
        checkpoint of this step is already written, its trainer state gets the new evaluation."""
        if ctx.is_main and val_loader is not None:
            try:
                results = validate(raw_model, val_loader, device, train_cfg.precision, train_cfg.eval_batches)
            except LeadrrgError as exc:
                logger.warning("validation at step %d skipped: %s", state.step, exc)
                run_log.log("val_error", state.step, {"error": str(exc)})
            else:
                state.last_eval = {"step": state.step, **results}
                if state.best_val_loss is None or results["val_loss"] < state.best_val_loss:
                    state.best_val_loss, state.best_step = results["val_loss"], state.step
                run_log.log("val", state.step, results)
                if saved:
                    fields = ("best_val_loss", "best_step", "last_eval")
                    ckpt.update_trainer_state(run_dir, {name: getattr(state, name) for name in fields})
        barrier(ctx)

    saved_step = state.step

    def save() -> None:
        nonlocal saved_step
        saved_step = state.step
        rng_states = all_gather_objects(ckpt.capture_rng_state(), ctx)
        if ctx.is_main:
            trainer_state = {
                **dataclasses.asdict(state),
                "world_size": ctx.world_size,
                "seed": train_cfg.seed,
                # the permutation that samples_in_epoch indexes (checked on resume)
                "epoch_seed": epoch_seed(train_cfg.seed, state.epoch),
                "rng": rng_states,
                "scheduler": {
                    "name": "warmup_cosine",
                    "step": state.step,
                    "base_lrs": [g["initial_lr"] for g in optimizer.param_groups],
                },
            }
            ckpt.save_checkpoint(run_dir, raw_model, optimizer, param_names, trainer_state)
        barrier(ctx)

    try:
        while state.step < train_cfg.max_steps:
            started = time.perf_counter()
            lr_factor = set_learning_rates(optimizer, state.step, train_cfg)
            position = (state.epoch, state.samples_in_epoch)
            try:
                losses, grad_norm = train_step(model, optimizer, stream, train_cfg, device, ctx.enabled)
            except Diverged as exc:
                where = f" (on {exc.processes} of {exc.world_size} processes)" if exc.world_size > 1 else ""
                raise LeadrrgError(
                    f"training diverged: the loss is not finite at step {state.step + 1}{where}; "
                    f"lower train.lr (now {train_cfg.lr}) or raise train.warmup_steps"
                ) from None
            except LeadrrgError as exc:  # raised before the optimizer step: the weights are the last step's
                if ctx.enabled or state.step == saved_step:
                    raise
                state.epoch, state.samples_in_epoch = position  # a resume re-reads this step's batches
                optimizer.zero_grad(set_to_none=True)
                save()
                raise LeadrrgError(
                    f"{exc} (the {state.step} steps trained so far are saved: fix the input and continue with "
                    f"`leadrrg train --resume --out {run_dir}`)"
                ) from None
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            elapsed = time.perf_counter() - started
            state.step += 1
            state.studies_seen += studies_per_step
            state.train_time_s += elapsed
            window["steps"] += 1
            window["time"] += elapsed
            for i, key in enumerate(("loss", "lm_loss", "cls_loss")):
                window[key] += float(losses[i])
            run_log.advance()

            record: dict[str, float] = {}
            if state.step % train_cfg.log_every == 0 or state.step == train_cfg.max_steps:
                means = all_reduce_mean(
                    torch.tensor([window[k] / window["steps"] for k in ("loss", "lm_loss", "cls_loss")]), ctx
                )
                record = {
                    "loss": float(means[0]),
                    "lm_loss": float(means[1]),
                    "cls_loss": float(means[2]),
                    "lr": optimizer.param_groups[0]["lr"],
                    "lr_factor": lr_factor,
                    "grad_norm": grad_norm,
                    "studies_per_s": studies_per_step * window["steps"] / max(window["time"], 1e-9),
                    "epoch": state.studies_seen / (len(task.train_dataset) or 1),
                    "wall_s": time.perf_counter() - fit_started,
                }
                run_log.log("train", state.step, record)
                window = {"loss": 0.0, "lm_loss": 0.0, "cls_loss": 0.0, "steps": 0, "time": 0.0}
            last_step = state.step == train_cfg.max_steps
            # Save before validating: nothing that validation can run into loses trained steps.
            save_due = last_step or (train_cfg.save_every and state.step % train_cfg.save_every == 0)
            if save_due:
                save()
            if last_step or (train_cfg.eval_every and state.step % train_cfg.eval_every == 0):
                run_validation(saved=bool(save_due))
            for callback in callbacks:
                callback(state.step, record)
    finally:
        run_log.close()

    last_eval = state.last_eval or {}
    return {
        "run_dir": str(run_dir),
        "steps": state.step,
        "epochs": state.studies_seen / (len(task.train_dataset) or 1),
        "final_val_loss": last_eval.get("val_loss"),
        "val_expert_macro_auroc": last_eval.get("val_expert_macro_auroc"),
        "val_expert_macro_f1": last_eval.get("val_expert_macro_f1"),
        "best_val_loss": state.best_val_loss,
        "studies_per_s": state.studies_seen / max(state.train_time_s, 1e-9),
        "train_time_s": state.train_time_s,
        "peak_memory_mb": peak_memory_mb(device),
        "world_size": ctx.world_size,
        "device": str(device),
    }


# --------------------------------------------------------------------------------------------------
# Entry point


# Optimizer settings taken from the config on --resume (the checkpoint's moments are kept): a changed train.lr,
# lr_llm or weight_decay applies from the resumed step on, as config.json then records.
RESUMED_HYPERPARAMETERS = ("initial_lr", "weight_decay")


def apply_configured_hyperparameters(
    optimizer: torch.optim.Optimizer, configured: list[dict[str, Any]]
) -> None:
    for group, values in zip(optimizer.param_groups, configured):
        changed = {k: (group[k], v) for k, v in values.items() if group[k] != v}
        if changed:
            logger.info(
                "resume: optimizer group %s now uses %s (checkpoint, config)", group.get("name"), changed
            )
        group.update(values)


def train(
    config: RunConfig,
    out_dir: str | Path,
    resume: bool = False,
    callbacks: Sequence[StepCallback] = (),
    quiet: bool = False,
) -> dict[str, Any]:
    """Train a model from `config` into the run directory `out_dir`; return a summary dict (steps,
    final_val_loss, val_expert_macro_auroc, studies_per_s, peak_memory_mb, run_dir, ...).

    A new run refuses a non-empty `out_dir`. `resume=True` continues the run in `out_dir` from its last
    checkpoint (weights, optimizer, schedule, RNG and data order); `config.model` must match the run's,
    while `config.train` may change (e.g. more steps). Under torchrun every process calls this."""
    out_dir = Path(out_dir)
    check_output_dir(out_dir, "run directory")
    existed = out_dir.exists()
    config = resolve_paths(copy.deepcopy(config))
    ctx = init_distributed(config.train.device)
    try:
        tokenizer, checkpoint_dir = None, None
        if resume:
            if not (out_dir / ckpt.CONFIG_FILE).is_file():
                raise LeadrrgError(
                    f"cannot resume: {out_dir} is not a leadrrg run (no {ckpt.CONFIG_FILE}); start it without --resume"
                )
            saved = load_run_config(out_dir / ckpt.CONFIG_FILE)
            difference = first_difference(to_dict(config.model), to_dict(saved.model), "model")
            if difference:
                raise LeadrrgError(
                    f"cannot resume {out_dir}: the model config differs from the run's at {difference}; "
                    "train the new config into another directory (the run is left as it is)"
                )
            if ctx.is_main:
                checkpoint_dir = ckpt.recover_checkpoint_dir(out_dir)
            barrier(ctx)
            checkpoint_dir = ckpt.recover_checkpoint_dir(out_dir) if not ctx.is_main else checkpoint_dir
            if checkpoint_dir is None:
                logger.warning(
                    "%s has no checkpoint (it stopped before its first save): training starts again from step 0",
                    out_dir,
                )
            tokenizer = ReportTokenizer.load(out_dir / ckpt.TOKENIZER_DIR)
        elif ckpt.is_run_dir(out_dir):
            raise LeadrrgError(
                f"{out_dir} already exists and is not empty; choose a new --out, or pass --resume to continue that run"
            )
        barrier(ctx)
        task = build_task(config, ctx, tokenizer)
        created = False
        if ctx.is_main:
            if resume:
                save_config(config, out_dir / ckpt.CONFIG_FILE)  # records changed train settings
            else:
                created = True  # refused above unless absent or empty
                ckpt.init_run_dir(out_dir, config, task.tokenizer)
        barrier(ctx)
        try:
            return fit(task, out_dir, ctx, checkpoint_dir, callbacks, quiet, resume)
        except BaseException:
            # A new run that stopped before its first checkpoint and logged nothing is not a run: leave nothing
            # behind. Once it has logged, its logs are what tells why it stopped: they stay.
            if created and ckpt.recover_checkpoint_dir(out_dir) is None:
                if logged_anything(out_dir):
                    logger.warning(
                        "%s stopped before its first checkpoint; its logs are kept there "
                        "(`leadrrg train --resume --out %s` starts it again from step 0)",
                        out_dir,
                        out_dir,
                    )
                elif not existed:
                    shutil.rmtree(out_dir, ignore_errors=True)
                else:
                    for path in out_dir.iterdir():
                        shutil.rmtree(path) if path.is_dir() else path.unlink()
            raise
    finally:
        shutdown(ctx)
