"""The training loop: plain steps (nanoGPT style).

`fit` runs optimizer steps (`step.train_step`) to `train.max_steps`. Every `log_every` steps a JSONL /
TensorBoard record (`run_log`); every `eval_every` steps validation (`validation`: losses, the experts' macro
AUROC / F1 and, with `train.eval_generate`, scores of generated reports), model selection into RUN/best/ and
early stopping (`selection`); every `save_every` steps and at the end a checkpoint (`checkpoint`, `state`).
Metrics and checkpointing live there, never in the model.

Nothing trained is lost to a failure after it: a step's checkpoint is written before its validation, a
validation that fails is logged and skipped, and a data error in a training step (an image that does not
decode) first saves the steps completed so far (single process), then stops with the error; so does Ctrl-C
(SIGINT) or SIGTERM, at the end of the current step (`guard.StopRequest`). Decisions that
end training (divergence, early stopping) are taken by all processes together.
"""

from __future__ import annotations

import copy
import logging
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from leadrrg.collectives import DistContext, all_gather_objects, barrier, broadcast_object, shutdown
from leadrrg.config import RunConfig, save_config
from leadrrg.errors import LeadrrgError
from leadrrg.inference.calibrate import calibrate_after_training
from leadrrg.io import check_output_dir
from leadrrg.runs.files import CONFIG_FILE, MODEL_FILE, load_model_weights
from leadrrg.train import checkpoint as ckpt
from leadrrg.train.build import TrainingTask, build_task, make_train_loader, make_val_loader, resolve_paths
from leadrrg.train.distributed import all_reduce_mean, init_distributed
from leadrrg.train.expert_warmup import run_stage_one
from leadrrg.train.guard import StopRequest, checkpoint_write, run_lock, run_outputs
from leadrrg.train.optim import build_optimizer, set_learning_rates
from leadrrg.train.resume import clean_up_unstarted_run, open_for_resume
from leadrrg.train.run_log import RunLogger, tracker_package
from leadrrg.train.selection import BEST_DIR, ModelSelector
from leadrrg.train.sharding import full_model_state, full_states, gathered_root, parallel_model, use_fsdp
from leadrrg.train.state import EVALUATION_FIELDS, TrainerState, restore_checkpoint, state_to_save
from leadrrg.train.step import Diverged, batch_stream, make_grad_scaler, peak_memory_mb, train_step
from leadrrg.train.validation import generate_and_score, make_generation_loader, samples_markdown, validate

logger = logging.getLogger(__name__)

# Called after every optimizer step with (step, record); raising stops training (tests use it to
# simulate a kill between checkpoints).
StepCallback = Callable[[int, dict[str, float]], None]
LOSS_KEYS = ("loss", "lm_loss", "cls_loss")


def _seed_process(seed: int, rank: int) -> None:
    """The training RNG stream (dropout, augmentation) of this process."""
    random.seed(seed + rank)
    np.random.seed((seed + rank) % 2**32)
    torch.manual_seed(seed + rank)


def compile_for_training(model: nn.Module) -> nn.Module:
    """torch.compile of the module the steps call (train.compile); the weights stay those of the raw model."""
    return torch.compile(model)


class Trainer:
    """One call of `fit`: the model (raw, and as the steps call it: DDP, compiled; or sharded in place, FSDP),
    optimizer, loss scaler, data stream, logger, model selector and trainer state."""

    def __init__(self, task: TrainingTask, run_dir: Path, ctx: DistContext, resume_from: Path | None):
        self.task, self.run_dir, self.ctx = task, run_dir, ctx
        self.train_cfg = train_cfg = task.config.train
        self.device = ctx.device
        self.raw_model = task.model
        _seed_process(train_cfg.seed, ctx.rank)
        if resume_from is not None:
            load_model_weights(self.raw_model, resume_from / MODEL_FILE)  # full weights, before any sharding
        self.sharded = use_fsdp(train_cfg, ctx)  # validation and saving then take every rank
        model = parallel_model(self.raw_model, ctx, self.sharded)
        self.optimizer, self.param_names = build_optimizer(self.raw_model, train_cfg)
        self.scaler = make_grad_scaler(train_cfg.precision, self.device)
        self.state = TrainerState()
        if resume_from is not None:
            self.state = restore_checkpoint(
                resume_from, self.raw_model, self.optimizer, self.param_names, self.scaler, train_cfg, ctx
            )
        self.model = compile_for_training(model) if train_cfg.compile else model
        self.model.train()
        loader, sampler = make_train_loader(task, ctx)
        self.stream = batch_stream(loader, sampler, self.state)
        evaluates = ctx.is_main or self.sharded  # a sharded forward is a collective
        self.val_loader = make_val_loader(task) if evaluates else None
        self.generation_loader = (
            make_generation_loader(task.val_dataset, task.collator, task.config) if evaluates else None
        )
        self.selector = ModelSelector(train_cfg, run_dir)
        self.studies_per_step = train_cfg.batch_size * train_cfg.grad_accum_steps * ctx.world_size
        self.saved_step = self.state.step
        self.window = self._empty_window()
        self.started = time.perf_counter()

    @staticmethod
    def _empty_window() -> dict[str, float]:
        return {"loss": 0.0, "lm_loss": 0.0, "cls_loss": 0.0, "steps": 0, "time": 0.0}

    # ----------------------------------------------------------------------------------------------
    # One step

    def step(self) -> tuple[float, float]:
        """One optimizer step; returns (lr factor, grad norm). A data error saves the steps done first (single
        process); a non-finite loss on any process stops every process with the same error."""
        state, train_cfg = self.state, self.train_cfg
        started = time.perf_counter()
        lr_factor = set_learning_rates(self.optimizer, state.step, train_cfg)
        position = (state.epoch, state.samples_in_epoch)
        try:
            losses, grad_norm = train_step(
                self.model, self.optimizer, self.stream, train_cfg, self.device, self.ctx.enabled, self.scaler
            )
        except Diverged as exc:
            where = f" (on {exc.processes} of {exc.world_size} processes)" if exc.world_size > 1 else ""
            raise LeadrrgError(
                f"training diverged: the loss is not finite at step {state.step + 1}{where}; "
                f"lower train.lr (now {train_cfg.lr}) or raise train.warmup_steps"
            ) from None
        except LeadrrgError as exc:  # raised before the optimizer step: the weights are the last step's
            if self.ctx.enabled or state.step == self.saved_step:
                raise
            state.epoch, state.samples_in_epoch = position  # a resume re-reads this step's batches
            self.optimizer.zero_grad(set_to_none=True)
            self.save()
            raise LeadrrgError(
                f"{exc} (the {state.step} steps trained so far are saved: fix the input and continue with "
                f"`leadrrg train --resume --out {self.run_dir}`)"
            ) from None
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        elapsed = time.perf_counter() - started
        state.step += 1
        state.studies_seen += self.studies_per_step
        state.train_time_s += elapsed
        self.window["steps"] += 1
        self.window["time"] += elapsed
        for i, key in enumerate(LOSS_KEYS):
            self.window[key] += float(losses[i])
        return lr_factor, grad_norm

    def train_record(self, lr_factor: float, grad_norm: float) -> dict[str, float]:
        """The logged means since the last record (over all processes); resets the window."""
        window = self.window
        means = all_reduce_mean(torch.tensor([window[k] / window["steps"] for k in LOSS_KEYS]), self.ctx)
        record = {key: float(means[i]) for i, key in enumerate(LOSS_KEYS)}
        record.update(
            lr=self.optimizer.param_groups[0]["lr"],
            lr_factor=lr_factor,
            grad_norm=grad_norm,
            studies_per_s=self.studies_per_step * window["steps"] / max(window["time"], 1e-9),
            epoch=self.state.studies_seen / (len(self.task.train_dataset) or 1),
            wall_s=time.perf_counter() - self.started,
        )
        self.window = self._empty_window()
        return record

    # ----------------------------------------------------------------------------------------------
    # Checkpoints and evaluation

    def save(self) -> None:
        previous, self.saved_step = self.saved_step, self.state.step
        rng_states = all_gather_objects(ckpt.capture_rng_state(), self.ctx)
        # FSDP: the full model and optimizer states, gathered onto rank 0 by every rank
        full = full_states(self.raw_model, self.optimizer, self.param_names) if self.sharded else (None, None)
        if self.ctx.is_main:
            trainer_state = state_to_save(
                self.state, self.train_cfg, self.ctx, self.optimizer, self.scaler, rng_states
            )
            with checkpoint_write(self.run_dir, self.state.step, previous):
                ckpt.save_checkpoint(
                    self.run_dir, self.raw_model, self.optimizer, self.param_names, trainer_state, *full
                )
            logger.info("checkpoint written: step %d in %s", self.state.step, self.run_dir)
        barrier(self.ctx)

    def evaluate(self, run_log: RunLogger, saved: bool) -> bool:
        """Validate (rank 0; all ranks under FSDP) and select; returns whether to stop early, decided on rank 0 for
        every process. A failed validation (e.g. an image that does not decode) is logged and training goes on.
        When this step's checkpoint is written, its trainer state gets the evaluation."""
        stop = False
        if self.val_loader is not None:  # rank 0; every rank under FSDP (a sharded forward is a collective)
            try:
                results = self.validation_results(run_log)
            except LeadrrgError as exc:
                logger.warning("validation at step %d skipped: %s", self.state.step, exc)
                run_log.log("val_error", self.state.step, {"error": str(exc)})
            else:
                # FSDP: the weights RUN/best/ may get, gathered onto rank 0 by every rank
                full = full_model_state(self.raw_model) if self.sharded and self.selector.enabled else None
                if self.ctx.is_main:
                    stop = self.record_evaluation(run_log, results, saved, full)
        return bool(broadcast_object(stop, self.ctx))

    def record_evaluation(
        self, run_log: RunLogger, results: dict[str, float], saved: bool, full: dict[str, torch.Tensor] | None
    ) -> bool:
        """Rank 0: the evaluation into the trainer state, RUN/best/ and the logs; returns whether to stop early."""
        state = self.state
        state.last_eval = {"step": state.step, **results}
        if state.best_val_loss is None or results["val_loss"] < state.best_val_loss:
            state.best_val_loss, state.best_step = results["val_loss"], state.step
        stop = self.selector.update(state, self.raw_model, results, full)
        run_log.log("val", state.step, results)
        if saved:
            ckpt.update_trainer_state(
                self.run_dir, {name: getattr(state, name) for name in EVALUATION_FIELDS}
            )
        return stop

    def validation_results(self, run_log: RunLogger) -> dict[str, float]:
        train_cfg = self.train_cfg
        results = validate(
            self.raw_model, self.val_loader, self.device, train_cfg.precision, train_cfg.eval_batches
        )
        if self.generation_loader is not None:
            references = {study.id: study.report for study in self.task.val_dataset.studies}
            with gathered_root(self.raw_model):
                scores, records = generate_and_score(
                    self.raw_model, self.task.tokenizer, self.generation_loader, self.task.config, references
                )
            results.update(scores)
            if train_cfg.eval_samples:
                run_log.log_text(
                    "val/samples", self.state.step, samples_markdown(records, train_cfg.eval_samples)
                )
        return results

    # ----------------------------------------------------------------------------------------------
    # The loop

    def run(self, run_log: RunLogger, callbacks: Sequence[StepCallback], stop: StopRequest) -> bool:
        """Steps to train.max_steps; returns whether training stopped early. A signal (`stop`) ends the step,
        saves it and raises KeyboardInterrupt."""
        train_cfg, state = self.train_cfg, self.state
        patience = train_cfg.early_stop_patience
        if patience and state.step < train_cfg.max_steps and state.evals_since_best >= patience:
            # A resumed run that had stopped early: its checkpoint is the stop (a larger patience continues).
            logger.warning(
                "not training: this run stopped early at step %d (%s has not improved for %d evaluations); "
                "resume with a larger train.early_stop_patience to continue it",
                state.step,
                train_cfg.select_metric,
                state.evals_since_best,
            )
            return True
        while state.step < train_cfg.max_steps:
            lr_factor, grad_norm = self.step()
            run_log.advance()
            last_step = state.step == train_cfg.max_steps
            record: dict[str, float] = {}
            if state.step % train_cfg.log_every == 0 or last_step:
                record = self.train_record(lr_factor, grad_norm)
                run_log.log("train", state.step, record)
            # Save before validating: nothing that validation can run into loses trained steps.
            save_due = last_step or bool(train_cfg.save_every and state.step % train_cfg.save_every == 0)
            if save_due:
                self.save()
            evaluate_due = last_step or bool(train_cfg.eval_every and state.step % train_cfg.eval_every == 0)
            if evaluate_due and self.evaluate(run_log, saved=save_due) and not last_step:
                self.stop_early(saved=save_due)
                return True
            for callback in callbacks:
                callback(state.step, record)
            if stop.due(self.ctx):
                self.save() if not save_due else None
                raise stop.stopped(state.step, self.run_dir, run_log)
        return False

    def stop_early(self, saved: bool) -> None:
        state = self.state
        logger.warning(
            "early stop at step %d: %s has not improved for %d evaluations (best %s at step %s, in %s)",
            state.step,
            self.train_cfg.select_metric,
            state.evals_since_best,
            state.best_score,
            state.best_score_step,
            self.run_dir / "best",
        )
        if not saved:
            self.save()

    def summary(self, stopped_early: bool) -> dict[str, Any]:
        state, last_eval = self.state, self.state.last_eval or {}
        return {
            "run_dir": str(self.run_dir),
            "steps": state.step,
            "epochs": state.studies_seen / (len(self.task.train_dataset) or 1),
            "final_val_loss": last_eval.get("val_loss"),
            "val_expert_macro_auroc": last_eval.get("val_expert_macro_auroc"),
            "val_expert_macro_f1": last_eval.get("val_expert_macro_f1"),
            "best_val_loss": state.best_val_loss,
            "select_metric": self.train_cfg.select_metric or None,
            "best_score": state.best_score,
            "best_score_step": state.best_score_step,
            "stopped_early": stopped_early,
            "studies_per_s": state.studies_seen / max(state.train_time_s, 1e-9),
            "train_time_s": state.train_time_s,  # in optimizer steps, all sessions of the run
            "joint_time_s": time.perf_counter() - self.started,  # this session's joint stage, wall clock
            "peak_memory_mb": peak_memory_mb(self.device),
            "world_size": self.ctx.world_size,
            "device": str(self.device),
        }


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
    run_dir = Path(run_dir)
    trainer = Trainer(task, run_dir, ctx, resume_from)
    run_log = RunLogger(run_dir, ctx, trainer.state.step, task.config, quiet, resume)
    try:
        with StopRequest() as stop:
            stopped_early = trainer.run(run_log, callbacks, stop)
    finally:
        run_log.close()
    return trainer.summary(stopped_early)


# --------------------------------------------------------------------------------------------------
# Entry point


def train(
    config: RunConfig,
    out_dir: str | Path,
    resume: bool = False,
    callbacks: Sequence[StepCallback] = (),
    quiet: bool = False,
) -> dict[str, Any]:
    """Train a model from `config` into the run directory `out_dir`; return a summary dict (steps,
    final_val_loss, val_expert_macro_auroc, studies_per_s, peak_memory_mb, run_dir, ...).

    A new run refuses a non-empty `out_dir`, and a second process training into `out_dir` is refused (RUN/.lock). `resume=True` continues the run in `out_dir` from its last
    checkpoint (weights, optimizer, schedule, RNG and data order); `config.model` must match the run's,
    while `config.train` may change (e.g. more steps, or another batch size or number of processes).
    Under torchrun every process calls this."""
    out_dir = Path(out_dir)
    check_output_dir(out_dir, "run directory")
    existed = out_dir.exists()
    config = resolve_paths(copy.deepcopy(config))
    tracker_package(config.train.tracker)  # a missing optional tracker is said before any work
    ctx = init_distributed(config.train.device)
    clean = False
    try:
        with run_lock(out_dir, ctx), run_outputs(out_dir):  # one process per run directory
            tokenizer, checkpoint_dir = None, None
            if resume:
                tokenizer, checkpoint_dir = open_for_resume(config, out_dir, ctx)
            elif ckpt.is_run_dir(out_dir):
                raise LeadrrgError(
                    f"{out_dir} already exists and is not empty; choose a new --out, or pass --resume to continue that run"
                )
            barrier(ctx)
            task = build_task(config, ctx, tokenizer, quiet=quiet)
            created = False
            if ctx.is_main:
                if resume:
                    save_config(config, out_dir / CONFIG_FILE)  # records changed train settings
                else:
                    created = True  # refused above unless absent or empty
                    ckpt.init_run_dir(out_dir, config, task.tokenizer)
            barrier(ctx)
            try:
                stage_one = {"stage1_steps": 0, "stage1_time_s": 0.0}
                if checkpoint_dir is None:  # stage 1 (a resumed run's checkpoint holds its result)
                    stage_one = run_stage_one(task, out_dir, ctx, quiet)
                result = {**fit(task, out_dir, ctx, checkpoint_dir, callbacks, quiet, resume), **stage_one}
                result["wall_time_s"] = result["stage1_time_s"] + result["joint_time_s"]  # both stages
            except BaseException:
                if created:
                    clean_up_unstarted_run(out_dir, existed)
                raise
            clean = True
            if ctx.is_main:  # RUN/thresholds.json (and RUN/best's): per-finding thresholds chosen on val
                for run in (out_dir, out_dir / BEST_DIR):
                    calibrate_after_training(run, ctx.device)
            return result
    finally:
        shutdown(ctx, clean)
