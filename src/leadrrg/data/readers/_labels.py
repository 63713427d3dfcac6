"""What every reader does with labels: join an external label file, and notice label codings that cannot be
told apart by their values."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from leadrrg.config import DataConfig
from leadrrg.data.label_files import join_labels, read_label_table
from leadrrg.data.records import ReadResult


def apply_label_file(result: ReadResult, data: DataConfig, path: Path, key_column: str) -> None:
    """Join the label file at `path` to `result.records` and say how it went (a note; a warning when studies
    stay unlabelled or no row matches)."""
    table = read_label_table(path, data.label_key or key_column, data.label_join, data.label_codes)
    summary = join_labels(result.records, table)
    result.notes.append(summary.describe())
    if summary.rows and not summary.matched_records:
        how = "report text" if summary.join == "report" else repr(summary.column)
        result.warnings.append(
            f"label file {path}: none of its {summary.rows} rows matches a study by {how}; "
            "check data.label_file and data.label_join (key | report | row)"
        )
    elif summary.unlabelled_records:
        result.warnings.append(
            f"label file {path}: {summary.unlabelled_records} of {len(result.records)} studies have no row "
            "(they keep their own labels or get the rule-based labeler's)"
        )


def raw_values(value: Any) -> Iterable[Any]:
    """The stored values of a JSON `labels` field (a list, or an object observation -> value)."""
    if isinstance(value, dict):
        return value.values()
    return value if isinstance(value, (list, tuple)) else ()


def ambiguous_coding_warning(values: set, where: str, codes: str) -> str | None:
    """A warning when every label value seen is 0 or 1: CheXpert codes read 0 as negative, CheXbert codes as
    not mentioned, and nothing in the values tells which is meant."""
    numbers = {float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if numbers and numbers <= {0.0, 1.0} and len(values) == len(numbers):
        meaning = "negative" if codes == "chexpert" else "not mentioned"
        return (
            f"labels in {where} use only the values 0 and 1, which CheXpert codes read as negative / positive and "
            f"CheXbert codes as not mentioned / positive; they are read as data.label_codes={codes} (0 = {meaning})"
        )
    return None
