"""One experiment, end to end: train a run, generate on evaluation splits, score the reports.

Shared by `leadrrg demo` and `leadrrg bench faithfulness`. Re-entrant: a run directory that already
holds a run is resumed (a finished run trains zero more steps), and predictions / metrics already
written for a split are reused, so an interrupted demo or benchmark continues where it stopped.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from leadrrg.config import RunConfig
from leadrrg.io import atomic_open, atomic_write_text

PREDICTIONS = "preds_{split}.jsonl"
METRICS = "metrics.json"


@dataclass
class ExperimentResult:
    run_dir: Path
    train_summary: dict[str, Any]
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)  # split -> evaluate_predictions(...)
    predictions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # split -> records
    seconds: dict[str, float] = field(default_factory=dict)  # stage -> wall-clock seconds


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def write_jsonl(path: Path, records: Sequence[dict[str, Any]]) -> None:
    with atomic_open(path, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")


def run_experiment(
    config: RunConfig,
    run_dir: str | Path,
    splits: Sequence[str],
    *,
    meteor: bool = True,
    quiet: bool = False,
) -> ExperimentResult:
    """Train `config` into `run_dir` (resuming what is there), then for each split write
    `preds_<split>.jsonl` and collect its metrics into `run_dir/metrics.json` (split -> metrics)."""
    from leadrrg.data.manifests import load_studies
    from leadrrg.evaluate import evaluate_predictions
    from leadrrg.predict import generate_split
    from leadrrg.train import load_run, train
    from leadrrg.train.checkpoint import is_run_dir

    run_dir = Path(run_dir)
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    summary = train(config, run_dir, resume=is_run_dir(run_dir), quiet=quiet)
    seconds["train"] = time.perf_counter() - start

    model, tokenizer, run_config = load_run(run_dir)
    metrics_path = run_dir / METRICS
    all_metrics: dict[str, Any] = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    result = ExperimentResult(run_dir, summary, seconds=seconds)
    for split in splits:
        preds_path = run_dir / PREDICTIONS.format(split=split)
        start = time.perf_counter()
        if preds_path.is_file():
            records = read_jsonl(preds_path)
        else:
            studies = load_studies(run_config.data, split)
            records = generate_split(
                model, tokenizer, run_config, studies, run_config.decode, progress=not quiet
            )
            write_jsonl(preds_path, records)
        seconds[f"generate_{split}"] = time.perf_counter() - start
        start = time.perf_counter()
        if split not in all_metrics:
            all_metrics[split] = evaluate_predictions(
                records, split=split, section=run_config.data.section, meteor=meteor
            )
            atomic_write_text(metrics_path, json.dumps(all_metrics, indent=2) + "\n")
        seconds[f"evaluate_{split}"] = time.perf_counter() - start
        result.metrics[split] = all_metrics[split]
        result.predictions[split] = records
    return result
