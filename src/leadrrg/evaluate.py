"""Score generated reports: NLG metrics on the text, clinical efficacy and hallucination on the labels
that `leadrrg.labeler` finds in the reference and generated reports, and -- when the predictions carry
the image's ground-truth labels (synthetic data) -- clinical efficacy and hallucination against those
under ``gt_`` names.

A prediction record is one line of preds.jsonl: ``{"id": str, "reference": str, "generated": str,
"labels": [14 x 0/1] (optional), "evidence": ... (optional, ignored here)}``.
"""

from __future__ import annotations

import math
import platform
from collections.abc import Callable, Sequence
from importlib import metadata
from typing import Any

import numpy as np

from leadrrg import __version__
from leadrrg.constants import NUM_OBSERVATIONS
from leadrrg.errors import LeadrrgError

LabelFn = Callable[[Sequence[str]], np.ndarray]


def _record_name(record: dict, index: int) -> str:
    return f"record {index + 1} (id {record['id']!r})" if "id" in record else f"record {index + 1}"


LABEL_VALUES = (1, 0, -1)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _ground_truth(records: Sequence[dict]) -> np.ndarray | None:
    """(N, 14) float ground-truth labels (null -> NaN) when every record has ``labels``; None when none
    has; LeadrrgError when only some have, or a row is not 14 numbers."""
    with_labels = [i for i, record in enumerate(records) if record.get("labels") is not None]
    if not with_labels:
        return None
    if len(with_labels) != len(records):
        without = next(i for i, record in enumerate(records) if record.get("labels") is None)
        raise LeadrrgError(
            f"{len(with_labels)} of {len(records)} predictions carry 'labels' but {_record_name(records[without], without)} "
            "does not; give ground-truth labels for every study or for none"
        )
    rows = []
    for index, record in enumerate(records):
        labels = record["labels"]
        valid = isinstance(labels, list) and len(labels) == NUM_OBSERVATIONS
        valid = valid and all(
            value is None or (_is_number(value) and value in LABEL_VALUES) for value in labels
        )
        if not valid:
            raise LeadrrgError(
                f"{_record_name(record, index)}: 'labels' must be a list of {NUM_OBSERVATIONS} values, each 1, 0, -1 "
                f"or null (CheXpert order: positive, negative, uncertain, not mentioned), got {labels!r}"
            )
        rows.append([math.nan if value is None else float(value) for value in labels])
    return np.asarray(rows, dtype=np.float32)


def _versions(java: str | None, meteor_missing: str | None) -> dict[str, str | None]:
    def version_of(package: str) -> str | None:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return None

    return {
        "leadrrg": __version__,
        "pycocoevalcap": version_of("pycocoevalcap"),
        "numpy": np.__version__,
        "python": platform.python_version(),
        "java": java if java is not None else f"missing ({meteor_missing or 'java not found on PATH'})",
    }


def evaluate_predictions(
    records: Sequence[dict],
    *,
    split: str | None = None,
    section: str = "findings",
    meteor: bool = True,
    label_fn: LabelFn | None = None,
) -> dict[str, Any]:
    """All metrics of one set of predictions.

    `label_fn` labels reports ((N,) texts -> (N, 14) float 1/0/-1/NaN); default
    `leadrrg.labeler.label_reports`. Returns a flat dict of named metrics (`metrics.nlg`,
    `metrics.clinical`, `metrics.hallucination`; the same CE and hallucination metrics prefixed ``gt_``
    when records carry ground-truth ``labels``), the nested per-observation dicts, ``missing``
    (metric -> reason) and ``meta`` (split, section, normalisation, number of studies, tool versions)."""
    from leadrrg.metrics.clinical import ce_scores
    from leadrrg.metrics.hallucination import hallucination_scores
    from leadrrg.metrics.nlg import NORMALIZATION, java_version, nlg_scores

    if not records:
        raise LeadrrgError("no predictions to evaluate (the predictions are empty)")
    for index, record in enumerate(records):
        for key in ("reference", "generated"):
            if not isinstance(record.get(key), str):
                raise LeadrrgError(f"{_record_name(record, index)}: '{key}' must be a string")
    references = [record["reference"] for record in records]
    generated = [record["generated"] for record in records]
    ground_truth = _ground_truth(records)

    if label_fn is None:
        from leadrrg.labeler import label_reports as label_fn
    labels = np.asarray(label_fn(references + generated), dtype=np.float32)
    if labels.shape != (2 * len(records), NUM_OBSERVATIONS):
        raise RuntimeError(f"the labeler returned shape {labels.shape} for {2 * len(records)} reports")
    ref_labels, hyp_labels = labels[: len(records)], labels[len(records) :]

    metrics: dict[str, Any] = {}
    nlg = nlg_scores(references, generated, meteor=meteor)
    missing: dict[str, str] = nlg.pop("missing")
    metrics.update(nlg)
    metrics.update(ce_scores(ref_labels, hyp_labels))
    metrics.update(hallucination_scores(ref_labels, hyp_labels))
    if ground_truth is not None:
        for name, value in ce_scores(ground_truth, hyp_labels).items():
            metrics[f"gt_{name}"] = value
        for name, value in hallucination_scores(ground_truth, hyp_labels).items():
            metrics[f"gt_{name}"] = value

    metrics["missing"] = missing
    metrics["meta"] = {
        "split": split,
        "section": section,
        "num_studies": len(records),
        "normalization": NORMALIZATION,
        "reference_labels": "leadrrg.labeler on the reference reports",
        "ground_truth_labels": ground_truth is not None,
        "versions": _versions(java_version(), missing.get("meteor")),
    }
    return metrics


def _value(metrics: dict[str, Any], name: str) -> str:
    value = metrics.get(name)
    if value is None:
        reason = metrics.get("missing", {}).get(name)
        return f"missing ({reason})" if reason else "missing"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _ce_rows(metrics: dict[str, Any], prefix: str) -> list[str]:
    rows = [f"  {'':<18}{'precision':>10}{'recall':>10}{'f1':>10}"]
    for subset in ("ce14", "ce5"):
        for average in ("micro", "macro", "example"):
            key = f"{prefix}{subset}_{average}"
            cells = "".join(
                f"{_value(metrics, f'{key}_{part}'):>10}" for part in ("precision", "recall", "f1")
            )
            rows.append(f"  {subset + '_' + average:<18}{cells}")
    return rows


def _hallucination_rows(metrics: dict[str, Any], prefix: str) -> list[str]:
    names = ("hallucination_rate", "reports_with_hallucination", "omission_rate")
    return [f"  {name:<28}{_value(metrics, prefix + name):>10}" for name in names]


def format_table(metrics: dict[str, Any]) -> str:
    """The metrics of `evaluate_predictions` as a plain-text table for the console."""
    meta = metrics.get("meta", {})
    header = f"{meta.get('num_studies', '?')} studies"
    if meta.get("split"):
        header += f", split {meta['split']}"
    if meta.get("section"):
        header += f", section {meta['section']}"
    lines = [header, "NLG (R2Gen-normalised text, pycocoevalcap)"]
    for name in ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider"):
        lines.append(f"  {name:<28}{_value(metrics, name):>10}")
    lines.append("Clinical efficacy (labeler: reference vs generated)")
    lines += _ce_rows(metrics, "")
    lines.append("Hallucination (vs reference labels, 13 findings)")
    lines += _hallucination_rows(metrics, "")
    if "gt_ce14_micro_f1" in metrics:
        lines.append("Clinical efficacy (ground-truth labels vs generated)")
        lines += _ce_rows(metrics, "gt_")
        lines.append("Hallucination (vs ground-truth labels, 13 findings)")
        lines += _hallucination_rows(metrics, "gt_")
    return "\n".join(lines)
