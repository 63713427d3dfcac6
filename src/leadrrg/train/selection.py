"""Model selection: RUN/best/ keeps the weights of the best evaluation by `train.select_metric`, and
`train.early_stop_patience` stops a run after that many evaluations without a better one.

RUN/best/ is a run directory of its own (config.json, tokenizer/, model.safetensors, best.json with the step,
the metric and every validation score of that evaluation): `leadrrg generate --run RUN/best` and
`leadrrg.load("RUN/best")` read it as they read RUN. It is replaced as a whole (never half-written).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from leadrrg.config import LOWER_IS_BETTER, TrainConfig
from leadrrg.io import atomic_directory
from leadrrg.runs.files import CONFIG_FILE, MODEL_FILE, TOKENIZER_DIR, save_model_weights

logger = logging.getLogger(__name__)

BEST_DIR = "best"
BEST_FILE = "best.json"


def lower_is_better(train_cfg: TrainConfig) -> bool:
    if train_cfg.select_mode != "auto":
        return train_cfg.select_mode == "min"
    return train_cfg.select_metric in LOWER_IS_BETTER


def improves(value: float, best: float | None, lower: bool) -> bool:
    """Whether `value` is strictly better than `best` (None: nothing yet); a NaN never is."""
    if not math.isfinite(value):
        return False
    return best is None or (value < best if lower else value > best)


def write_best(
    run_dir: Path,
    model: nn.Module,
    step: int,
    metric: str,
    results: dict[str, Any],
    state_dict: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Replace RUN/best/ with the model's current weights (`state_dict`: the full state of a sharded model), the
    run's config and tokenizer, and best.json."""
    target = run_dir / BEST_DIR
    with atomic_directory(target) as tmp:
        save_model_weights(model, tmp / MODEL_FILE, state_dict)
        shutil.copyfile(run_dir / CONFIG_FILE, tmp / CONFIG_FILE)
        shutil.copytree(run_dir / TOKENIZER_DIR, tmp / TOKENIZER_DIR)
        best = {"step": step, "metric": metric, "value": results[metric], "scores": results}
        (tmp / BEST_FILE).write_text(json.dumps(best, indent=1) + "\n", encoding="utf-8")
    return target


class ModelSelector:
    """Tracks the best evaluation in the trainer state (`best_score`, `best_score_step`, `evals_since_best`),
    writes RUN/best/ when one improves, and says when patience has run out."""

    def __init__(self, train_cfg: TrainConfig, run_dir: Path):
        self.metric = train_cfg.select_metric
        self.patience = train_cfg.early_stop_patience
        self.lower = lower_is_better(train_cfg)
        self.run_dir = run_dir

    @property
    def enabled(self) -> bool:
        return bool(self.metric)

    def update(
        self,
        state,
        model: nn.Module,
        results: dict[str, Any],
        state_dict: dict[str, torch.Tensor] | None = None,
    ) -> bool:
        """Record the evaluation `results` of `state.step`; returns True when training should stop early.
        `state_dict`: the full state of a sharded model (what RUN/best/ gets if this evaluation is the best)."""
        if not self.enabled:
            return False
        value = results.get(self.metric)
        if value is None:
            logger.warning("validation at step %d has no %s; RUN/best/ unchanged", state.step, self.metric)
        elif improves(float(value), state.best_score, self.lower):
            state.best_score, state.best_score_step, state.evals_since_best = float(value), state.step, 0
            write_best(self.run_dir, model, state.step, self.metric, results, state_dict)
            return False
        state.evals_since_best += 1
        return bool(self.patience) and state.evals_since_best >= self.patience
