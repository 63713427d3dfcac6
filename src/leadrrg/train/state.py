"""The trainer state (step, data position, best evaluation) and restoring a run from its checkpoint.

The data position is global, in studies of the epoch consumed by all processes together, stored with the
epoch's permutation seed: a resume with another world size or batch size reads the rest of the epoch, each
study once. The optimizer's moments, the fp16 loss scale and the RNG states come from the checkpoint; the
learning rates and weight decay from the (possibly changed) config.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from leadrrg.collectives import DistContext
from leadrrg.config import TrainConfig
from leadrrg.errors import LeadrrgError
from leadrrg.runs.files import read_safetensors
from leadrrg.train import checkpoint as ckpt
from leadrrg.train.distributed import epoch_seed
from leadrrg.train.sharding import is_sharded, load_full_optimizer_state

logger = logging.getLogger(__name__)

# Optimizer settings taken from the config on --resume (the checkpoint's moments are kept): a changed train.lr,
# lr_llm or weight_decay applies from the resumed step on, as config.json then records.
RESUMED_HYPERPARAMETERS = ("initial_lr", "weight_decay")


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
    best_score: float | None = None  # best train.select_metric so far (RUN/best/ holds its weights)
    best_score_step: int | None = None
    evals_since_best: int = 0  # evaluations without a better select_metric (early stopping)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainerState:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


# Set again in the checkpoint's trainer state after the validation that follows its save.
EVALUATION_FIELDS = (
    "best_val_loss",
    "best_step",
    "last_eval",
    "best_score",
    "best_score_step",
    "evals_since_best",
)


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


def state_to_save(
    state: TrainerState,
    train_cfg: TrainConfig,
    ctx: DistContext,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    rng_states: list[dict[str, Any]],
) -> dict[str, Any]:
    """The checkpoint's trainer state (the optimizer's tensors are saved apart)."""
    return {
        **dataclasses.asdict(state),
        "world_size": ctx.world_size,
        "seed": train_cfg.seed,
        # the permutation that samples_in_epoch indexes (checked on resume)
        "epoch_seed": epoch_seed(train_cfg.seed, state.epoch),
        "rng": rng_states,
        "grad_scaler": scaler.state_dict() if scaler.is_enabled() else None,
        "scheduler": {
            "name": "warmup_cosine",
            "step": state.step,
            "base_lrs": [g["initial_lr"] for g in optimizer.param_groups],
        },
    }


def restore_checkpoint(
    checkpoint_dir: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    param_names: list[str],
    scaler: torch.amp.GradScaler,
    train_cfg: TrainConfig,
    ctx: DistContext,
) -> TrainerState:
    """Load a checkpoint's optimizer state, loss scale and this rank's RNG state (the weights are loaded
    before the optimizer is built); the configured lr and weight decay replace the checkpoint's."""
    saved = ckpt.read_trainer_state(checkpoint_dir)
    state = resumed_trainer_state(saved, train_cfg, checkpoint_dir)
    optimizer_tensors, _ = read_safetensors(checkpoint_dir / ckpt.OPTIMIZER_FILE)
    configured = [{key: group[key] for key in RESUMED_HYPERPARAMETERS} for group in optimizer.param_groups]
    with ckpt.damaged_checkpoint(checkpoint_dir):
        if is_sharded(model):  # train.strategy=fsdp: each rank keeps its shard of the full state saved
            full = ckpt.saved_optimizer_state(param_names, optimizer_tensors, saved["optimizer"])
            load_full_optimizer_state(model, optimizer, param_names, full)
        else:
            ckpt.load_optimizer_state(optimizer, param_names, optimizer_tensors, saved["optimizer"])
        if saved.get("grad_scaler") and scaler.is_enabled():
            scaler.load_state_dict(saved["grad_scaler"])
    apply_configured_hyperparameters(optimizer, configured)
    rng_states = saved.get("rng", [])
    if isinstance(rng_states, list) and len(rng_states) == ctx.world_size:
        with ckpt.damaged_checkpoint(checkpoint_dir):
            ckpt.restore_rng_state(rng_states[ctx.rank])
    else:
        logger.warning(
            "checkpoint has RNG states for %d processes, now %d: RNG reseeded",
            len(rng_states),
            ctx.world_size,
        )
    return state


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
