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
    results_dir: str | Path | None = None,
    decode_overrides: Sequence[str] = (),
) -> ExperimentResult:
    """Train `config` into `run_dir` (resuming what is there), then for each split write
    `preds_<split>.jsonl` and collect its metrics into `metrics.json` (split -> metrics), both in `results_dir`
    (default `run_dir`), decoding with the run's decode settings plus `decode_overrides` (`decode.*=...`)."""
    from leadrrg.config import apply_overrides, to_dict
    from leadrrg.data.manifests import load_studies
    from leadrrg.evaluation.evaluate import evaluate_predictions
    from leadrrg.inference.predict import generate_split
    from leadrrg.runs.files import MODEL_FILE, load_run, training_device, weights_checksum
    from leadrrg.runs.provenance import predictions_meta
    from leadrrg.train.checkpoint import is_run_dir
    from leadrrg.train.loop import train

    run_dir = Path(run_dir)
    results_dir = Path(results_dir) if results_dir is not None else run_dir
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    summary = train(config, run_dir, resume=is_run_dir(run_dir), quiet=quiet)
    seconds["train"] = time.perf_counter() - start

    model, tokenizer, run_config = load_run(
        run_dir, device=training_device(config)
    )  # not the CPU after GPU training
    run_config = apply_overrides(run_config, list(decode_overrides))
    provenance = {
        "steps": summary.get("steps"),
        "weights_sha256": weights_checksum(run_dir / MODEL_FILE),
        "data": to_dict(run_config.data),
        "decode": to_dict(run_config.decode),
    }
    results_dir.mkdir(parents=True, exist_ok=True)
    metrics_path = results_dir / METRICS
    all_metrics: dict[str, Any] = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    made_by = all_metrics.pop("provenance", {})
    result = ExperimentResult(run_dir, summary, seconds=seconds)
    for split in splits:
        preds_path = results_dir / PREDICTIONS.format(split=split)
        current = made_by.get(split) == provenance
        start = time.perf_counter()
        if preds_path.is_file() and current:
            records = read_jsonl(preds_path)
            if not quiet:
                print(
                    f"{split}: reusing {preds_path} (same weights, data and decode settings)", file=sys.stderr
                )
        else:
            studies = load_studies(run_config.data, split)
            records = generate_split(
                model, tokenizer, run_config, studies, run_config.decode, progress=not quiet
            )
            write_jsonl(preds_path, records)
            all_metrics.pop(split, None)
        seconds[f"generate_{split}"] = time.perf_counter() - start
        start = time.perf_counter()
        if split not in all_metrics:
            all_metrics[split] = evaluate_predictions(
                records, split=split, section=run_config.data.section, meteor=meteor
            )
            all_metrics[split]["meta"].update(predictions_meta(run_dir, run_config.decode, records))
            made_by[split] = provenance
            atomic_write_text(
                metrics_path, json.dumps({**all_metrics, "provenance": made_by}, indent=2) + "\n"
            )
        seconds[f"evaluate_{split}"] = time.perf_counter() - start
        result.metrics[split] = all_metrics[split]
        result.predictions[split] = records
    return result


DIAGNOSIS = "diagnosis.json"


def diagnose_experiment(
    run_dir: str | Path,
    splits: Sequence[str],
    steps: int,
    *,
    results_dir: str | Path | None = None,
    decode_overrides: Sequence[str] = (),
    deep_split: str | None = "shift_test",
    flip: int = 100,
) -> dict[str, dict[str, Any]]:
    """`leadrrg.evaluation.diagnose` on each split of a trained run (expert AUROC, report F1 vs truth, gates); on
    `deep_split` also the oracle and `flip` flips. Written to `results_dir/diagnosis.json` (split -> measures)
    and reused while the run's step count (`steps`, as trained) and decode settings are unchanged. Runs without
    experts get {}."""
    from leadrrg.config import apply_overrides, to_dict
    from leadrrg.data.manifests import load_studies
    from leadrrg.evaluation.diagnose import diagnose
    from leadrrg.runs.files import MODEL_FILE, load_run, training_device, weights_checksum

    run_dir = Path(run_dir)
    results_dir = Path(results_dir) if results_dir is not None else run_dir
    path = results_dir / DIAGNOSIS
    model, tokenizer, config = load_run(run_dir)
    model.to(training_device(config))  # generate where the run trained
    if config.model.injection.fusion == "none":
        return {}
    config = apply_overrides(config, list(decode_overrides))
    provenance = {
        "steps": steps,
        "weights_sha256": weights_checksum(run_dir / MODEL_FILE),
        "data": to_dict(config.data),
        "decode": to_dict(config.decode),
    }
    saved = json.loads(path.read_text()) if path.is_file() else {}
    if saved.get("provenance") != provenance:
        saved = {}
    for split in splits:
        if split in saved:
            continue
        studies = load_studies(config.data, split)
        deep = split == deep_split
        saved[split] = diagnose(
            model, tokenizer, config, studies, oracle=deep, flip=min(flip, len(studies)) if deep else 0
        )
        atomic_write_text(path, json.dumps({**saved, "provenance": provenance}, indent=2) + "\n")
    saved.pop("provenance", None)
    return saved
