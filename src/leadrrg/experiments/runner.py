"""One experiment, end to end: train a run, generate on evaluation splits, score the reports.

Shared by `leadrrg demo` and `leadrrg bench faithfulness`. Re-entrant: a run directory that already
holds a run is resumed (a finished run trains zero more steps), and predictions / metrics already
written for a split are reused (and said to be) when they were made by the same weights (trained steps and the
weights' checksum) from the same data settings with the same decoding settings (recorded as `provenance` in
metrics.json), so an interrupted demo or benchmark
continues where it stopped and a changed one never reports stale results. Decode-time variants (e.g. an
expert logit bias) reuse another run's weights and write their predictions and metrics to `results_dir`.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from leadrrg.config import RunConfig, to_dict
from leadrrg.data.manifests import load_studies
from leadrrg.evaluation.diagnose import diagnose
from leadrrg.evaluation.evaluate import evaluate_predictions
from leadrrg.evaluation.predictions import predictions_meta, read_predictions, write_predictions
from leadrrg.inference.api import ReportGenerator
from leadrrg.inference.calibrate import with_run_thresholds
from leadrrg.inference.predict import generate_split
from leadrrg.inference.quantize import quantize_decoder
from leadrrg.io import atomic_write_text, read_json_object
from leadrrg.runs.files import (
    MODEL_FILE,
    check_trained_overrides,
    load_run,
    training_device,
    weights_checksum,
)
from leadrrg.train.checkpoint import is_run_dir
from leadrrg.train.loop import train

PREDICTIONS = "preds_{split}.jsonl"
METRICS = "metrics.json"
DIAGNOSIS = "diagnosis.json"
EXPECTED = "the JSON object an experiment writes (delete the file to recompute it)"
DECODE_ONLY = ("decode.",)  # what a decode-time variant may change on the trained run


@dataclass
class ExperimentResult:
    run_dir: Path
    train_summary: dict[str, Any]
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)  # split -> evaluate_predictions(...)
    predictions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # split -> records
    seconds: dict[str, float] = field(default_factory=dict)  # stage -> wall-clock seconds


def load_for_decoding(
    run_dir: Path, decode_overrides: Sequence[str], device: torch.device | None = None
) -> ReportGenerator:
    """The trained run with the decode-time overrides (held to the trained run's allow-list), on `device`
    (default: where the run trained, not the CPU after GPU training)."""
    check_trained_overrides(decode_overrides, DECODE_ONLY, "in an experiment")
    model, tokenizer, config = load_run(run_dir, overrides=decode_overrides)
    config = with_run_thresholds(config, run_dir)  # decode.thresholds=calibrated: RUN/thresholds.json
    model.to(device or training_device(config))
    quantize_decoder(model, config.decode.quantize)  # decode.quantize=int8, as leadrrg.load does
    return ReportGenerator(model, tokenizer, config)


def made_by(run_dir: Path, steps: int | None, config: RunConfig) -> dict[str, Any]:
    """What a split's saved results depend on: the weights (steps, checksum), data and decode settings."""
    return {
        "steps": steps,
        "weights_sha256": weights_checksum(run_dir / MODEL_FILE),
        "data": to_dict(config.data),
        "decode": to_dict(config.decode),
    }


def run_experiment(
    config: RunConfig,
    run_dir: str | Path,
    splits: Sequence[str],
    *,
    meteor: bool = True,
    quiet: bool = False,
    results_dir: str | Path | None = None,
    decode_overrides: Sequence[str] = (),
) -> ExperimentResult:
    """Train `config` into `run_dir` (resuming what is there), then for each split write
    `preds_<split>.jsonl` and collect its metrics into `metrics.json` (split -> metrics), both in `results_dir`
    (default `run_dir`), decoding with the run's decode settings plus `decode_overrides` (`decode.*=...`)."""
    run_dir = Path(run_dir)
    results_dir = Path(results_dir) if results_dir is not None else run_dir
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    summary = train(config, run_dir, resume=is_run_dir(run_dir), quiet=quiet)
    seconds["train"] = time.perf_counter() - start

    generator = load_for_decoding(run_dir, decode_overrides, training_device(config))
    run_config = generator.config
    provenance = made_by(run_dir, summary.get("steps"), run_config)
    results_dir.mkdir(parents=True, exist_ok=True)
    metrics_path = results_dir / METRICS
    all_metrics = read_json_object(metrics_path, "metrics file", EXPECTED) if metrics_path.is_file() else {}
    saved_by = all_metrics.pop("provenance", {})
    result = ExperimentResult(run_dir, summary, seconds=seconds)
    for split in splits:
        preds_path = results_dir / PREDICTIONS.format(split=split)
        start = time.perf_counter()
        if preds_path.is_file() and saved_by.get(split) == provenance:
            records = read_predictions(preds_path)
            if not quiet:
                print(
                    f"{split}: reusing {preds_path} (same weights, data and decode settings)", file=sys.stderr
                )
        else:
            generator.reseed(0)  # a split's reports do not depend on which other splits were reused
            records = generate_split(generator, load_studies(run_config.data, split), progress=not quiet)
            write_predictions(preds_path, records)
            all_metrics.pop(split, None)
        seconds[f"generate_{split}"] = time.perf_counter() - start
        start = time.perf_counter()
        if split not in all_metrics:
            all_metrics[split] = evaluate_predictions(
                records, split=split, section=run_config.data.section, meteor=meteor
            )
            all_metrics[split]["meta"].update(predictions_meta(run_dir, run_config.decode, records))
            saved_by[split] = provenance
            atomic_write_text(
                metrics_path, json.dumps({**all_metrics, "provenance": saved_by}, indent=2) + "\n"
            )
        seconds[f"evaluate_{split}"] = time.perf_counter() - start
        result.metrics[split] = all_metrics[split]
        result.predictions[split] = records
    return result


def diagnose_experiment(
    run_dir: str | Path,
    splits: Sequence[str],
    steps: int,
    *,
    results_dir: str | Path | None = None,
    decode_overrides: Sequence[str] = (),
    deep_split: str | None = None,
    flip: int = 100,
) -> dict[str, dict[str, Any]]:
    """`leadrrg.evaluation.diagnose` on each split of a trained run (expert AUROC, report F1 vs truth, gates); on
    `deep_split` (e.g. SynthCXR's shift_test) also the oracle, `flip` flips and `flip` side flips. Written to
    `results_dir/diagnosis.json` (split -> measures) and reused while the run's step count (`steps`, as trained)
    and decode settings are unchanged. Runs without experts get {}."""
    run_dir = Path(run_dir)
    results_dir = Path(results_dir) if results_dir is not None else run_dir
    path = results_dir / DIAGNOSIS
    generator = load_for_decoding(run_dir, decode_overrides)
    config = generator.config
    if not config.model.injection.has_experts:
        return {}
    provenance = made_by(run_dir, steps, config)
    saved = read_json_object(path, "diagnosis file", EXPECTED) if path.is_file() else {}
    if saved.get("provenance") != provenance:
        saved = {}
    for split in splits:
        if split in saved:
            continue
        studies = load_studies(config.data, split)
        deep = split == deep_split
        flips = min(flip, len(studies)) if deep else 0
        saved[split] = diagnose(generator, studies, oracle=deep, flip=flips, flip_side=flips)
        atomic_write_text(path, json.dumps({**saved, "provenance": provenance}, indent=2) + "\n")
    saved.pop("provenance", None)
    return saved
