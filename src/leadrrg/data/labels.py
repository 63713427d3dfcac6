"""CheXpert-format labels: parsing JSON label values, reading label tables (CSV or JSON lines), and filling
missing labels with the rule-based labeler (cached by report hash)."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from leadrrg.constants import NUM_OBSERVATIONS, OBSERVATIONS
from leadrrg.errors import LeadrrgError
from leadrrg.io import read_csv_table, read_text, text_lines

if TYPE_CHECKING:  # manifests imports this module
    from leadrrg.data.manifests import Study

LABEL_VALUES = (1.0, 0.0, -1.0)


def parse_labels(value: Any, where: str) -> np.ndarray | None:
    """JSON labels -> (14,) float32: a list of 14 numbers (null: not mentioned) or an object
    {observation: value}; None stays None. Values must be 1, 0, -1 or null/NaN."""
    if value is None:
        return None
    labels = np.full(NUM_OBSERVATIONS, np.nan, np.float32)
    if isinstance(value, dict):
        for name, item in value.items():
            if name not in OBSERVATIONS:
                raise LeadrrgError(
                    f"{where}: unknown label {name!r}; expected CheXpert observations: {', '.join(OBSERVATIONS)}"
                )
            labels[OBSERVATIONS.index(name)] = _label_value(item, f"{where}, label {name!r}")
        return labels
    if isinstance(value, (list, tuple)):
        if len(value) != NUM_OBSERVATIONS:
            raise LeadrrgError(
                f"{where}: labels has {len(value)} values; expected {NUM_OBSERVATIONS} (CheXpert order)"
            )
        for i, item in enumerate(value):
            labels[i] = _label_value(item, f"{where}, label {OBSERVATIONS[i]!r}")
        return labels
    raise LeadrrgError(
        f"{where}: labels is {type(value).__name__}; expected a list of 14 numbers or an object"
    )


def _label_value(item: Any, where: str) -> float:
    if item is None or item == "":
        return math.nan
    if isinstance(item, bool) or not isinstance(item, (int, float, str)):
        raise LeadrrgError(f"{where} is {item!r}; expected 1, 0, -1 or empty")
    try:
        number = float(item)
    except ValueError:
        raise LeadrrgError(f"{where} is {item!r}; expected 1, 0, -1 or empty") from None
    if math.isnan(number):
        return math.nan
    if number not in LABEL_VALUES:
        raise LeadrrgError(f"{where} is {item!r}; expected 1, 0, -1 or empty")
    return number


def read_label_file(path: str | Path, key_column: str) -> dict[str, np.ndarray]:
    """A CheXpert-format label table keyed by `key_column`: CSV (observation columns, empty = not
    mentioned) or JSON lines (one object per line). Missing observation columns are NaN."""
    path = Path(path)
    content = read_text(path, "label file", "a CheXpert-format CSV or JSON-lines file")
    table: dict[str, np.ndarray] = {}
    if path.suffix.lower() == ".csv":
        columns, rows = read_csv_table(path, content)
        if key_column not in columns or not set(columns) & set(OBSERVATIONS):
            raise LeadrrgError(
                f"label file {path} has columns {columns[:20]}; expected {key_column!r} and CheXpert observation columns"
            )
        present = [name for name in OBSERVATIONS if name in columns]
        for line, row in rows:
            values = {name: row[name] for name in present}
            table[normalise_key(row[key_column])] = parse_labels(values, f"label file {path} line {line}")
        return table
    for line, text in enumerate(text_lines(content), start=1):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as exc:
            raise LeadrrgError(
                f"label file {path} line {line} is not valid JSON ({exc.msg}); expected JSON lines"
            ) from None
        if not isinstance(row, dict) or key_column not in row:
            raise LeadrrgError(
                f"label file {path} line {line} has no {key_column!r} key; expected an object with it"
            )
        values = {name: row[name] for name in OBSERVATIONS if name in row}
        table[normalise_key(row[key_column])] = parse_labels(values, f"label file {path} line {line}")
    return table


def normalise_key(value: Any) -> str:
    text = str(value).strip()
    return text[:-2] if text.endswith(".0") and text[:-2].isdigit() else text


def report_hash(report: str) -> str:
    return hashlib.sha256(report.encode("utf-8")).hexdigest()


def labels_from_labeler(studies: Sequence[Study], cache_path: str | Path) -> list[Study]:
    """Fill missing labels with the rule-based labeler, cached in a CSV keyed by the report's SHA-256.

    Studies that already have labels keep them. The cache (`report_sha256` + 14 observation columns,
    empty = not mentioned) grows with each call and is rewritten atomically.
    """
    from leadrrg.io import atomic_open
    from leadrrg.labeler import label_reports

    cache_path = Path(cache_path)
    cache = read_label_file(cache_path, "report_sha256") if cache_path.exists() else {}
    missing = sorted({s.report for s in studies if s.labels is None and report_hash(s.report) not in cache})
    if missing:
        new_labels = np.asarray(label_reports(missing), dtype=np.float32).reshape(
            len(missing), NUM_OBSERVATIONS
        )
        for report, labels in zip(missing, new_labels):
            cache[report_hash(report)] = labels
        with atomic_open(cache_path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["report_sha256", *OBSERVATIONS])
            for key in sorted(cache):
                writer.writerow([key, *("" if np.isnan(v) else f"{v:.1f}" for v in cache[key])])
    return [
        s if s.labels is not None else dataclasses.replace(s, labels=cache[report_hash(s.report)].copy())
        for s in studies
    ]
