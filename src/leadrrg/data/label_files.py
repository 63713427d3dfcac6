"""CheXpert-format labels: the values (two codings), label tables (CSV, CSV.GZ or JSON lines) and joining a
table to the records of a data set by key, by report text or by row order.

Codings (`DataConfig.label_codes`), one per file, never guessed from the values:
- `chexpert`: 1 positive, 0 negative, -1 uncertain, empty / null / NaN not mentioned (the CheXpert labeler's
  CSV, MIMIC-CXR-JPG's `mimic-cxr-2.0.0-chexpert.csv.gz`, CheXbert's `label.py` output, CheXpert Plus).
- `chexbert`: the class ids of CheXbert's heads, as PromptMRG stores them per entry: 0 not mentioned,
  1 positive, 2 negative, 3 uncertain; a list of 14 is in CheXbert's head order (`CHEXBERT_ORDER`: the
  CheXpert order with No Finding last).
A 2 or 3 read as `chexpert` (or a -1 read as `chexbert`) is an error that names the other coding.

Tables a join understands (`DataConfig.label_join`):
- `key`: a key column (`study_id`, `path_to_image`, `id`) matched to the record's label key;
- `report`: the report text the labeler was given (`Reports` in the CheXpert labeler's output,
  `Report Impression` in CheXbert's), matched to the record's findings, impression or both, after case and
  whitespace are normalised;
- `row`: row i labels record i, in the data file's order (the file must have one row per record);
- `auto`: `key` when the key column is there, else `report` when a report column is.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from leadrrg.constants import NUM_OBSERVATIONS, OBSERVATIONS
from leadrrg.errors import LeadrrgError
from leadrrg.io import json_objects, read_csv_table, read_text_maybe_gzip, strip_gzip_suffix

if TYPE_CHECKING:
    from leadrrg.data.records import Record

CODES: dict[str, dict[float, float]] = {
    "chexpert": {1.0: 1.0, 0.0: 0.0, -1.0: -1.0},
    "chexbert": {0.0: math.nan, 1.0: 1.0, 2.0: 0.0, 3.0: -1.0},
}
EXPECTED_VALUES = {
    "chexpert": "1, 0, -1 or empty (CheXpert codes; for 0 blank / 1 positive / 2 negative / 3 uncertain set "
    "data.label_codes=chexbert)",
    "chexbert": "0, 1, 2, 3 or empty (CheXbert codes; for 1 / 0 / -1 / blank set data.label_codes=chexpert)",
}
# CheXbert's (and PromptMRG's) order of the 14 heads: CheXpert's with No Finding moved to the end.
CHEXBERT_ORDER: tuple[str, ...] = (*OBSERVATIONS[1:], OBSERVATIONS[0])
REPORT_COLUMNS = ("Reports", "Report Impression", "report")
CSV_SUFFIXES = (".csv", ".tsv")
CHEXPERT_V1_PREFIX = re.compile(r"^CheXpert-v1\.0(-small)?/")  # CheXpert v1's `Path` column


def parse_labels(value: Any, where: str, codes: str = "chexpert") -> np.ndarray | None:
    """JSON labels -> (14,) float32 in CheXpert values (1/0/-1/NaN), `constants.OBSERVATIONS` order: a list of 14
    numbers (null: not mentioned; in CheXbert's head order under `codes="chexbert"`) or an object
    {observation: value}; None stays None. `codes` names the coding of the values."""
    if value is None:
        return None
    labels = np.full(NUM_OBSERVATIONS, np.nan, np.float32)
    if isinstance(value, dict):
        for name, item in value.items():
            if name not in OBSERVATIONS:
                raise LeadrrgError(
                    f"{where}: unknown label {name!r}; expected CheXpert observations: {', '.join(OBSERVATIONS)}"
                )
            labels[OBSERVATIONS.index(name)] = label_value(item, f"{where}, label {name!r}", codes)
        return labels
    if isinstance(value, (list, tuple)):
        if len(value) != NUM_OBSERVATIONS:
            raise LeadrrgError(
                f"{where}: labels has {len(value)} values; expected {NUM_OBSERVATIONS} (CheXpert order)"
            )
        order = CHEXBERT_ORDER if codes == "chexbert" else OBSERVATIONS
        for name, item in zip(order, value):
            labels[OBSERVATIONS.index(name)] = label_value(item, f"{where}, label {name!r}", codes)
        return labels
    raise LeadrrgError(
        f"{where}: labels is {type(value).__name__}; expected a list of 14 numbers or an object"
    )


def label_value(item: Any, where: str, codes: str = "chexpert") -> float:
    """One stored label value -> 1.0 / 0.0 / -1.0 / NaN (not mentioned)."""
    bad = LeadrrgError(f"{where} is {item!r}; expected {EXPECTED_VALUES[codes]}")
    if item is None:
        return math.nan
    if isinstance(item, str):
        text = item.strip()
        if not text or text.lower() == "nan":
            return math.nan
        try:
            number = float(text)
        except ValueError:
            raise bad from None
    elif isinstance(item, (int, float)) and not isinstance(item, bool):
        number = float(item)
    else:
        raise bad
    if math.isnan(number):
        return math.nan
    if number not in CODES[codes]:
        raise bad
    return CODES[codes][number]


def normalise_key(value: Any) -> str:
    """A key as different files write it: `50414267.0` and `s50414267` (MIMIC study folders) are `50414267`;
    CheXpert v1's `CheXpert-v1.0-small/train/...` is CheXpert Plus's `train/...`."""
    text = str(value).strip()
    text = CHEXPERT_V1_PREFIX.sub("", text)
    if text[:1] == "s" and text[1:].isdigit():
        text = text[1:]
    return text[:-2] if text.endswith(".0") and text[:-2].isdigit() else text


def normalise_report(text: str) -> str:
    """Report text as a join key: lower case, whitespace collapsed."""
    return " ".join(str(text).lower().split())


@dataclass
class LabelTable:
    """A label file's rows: (key, labels) in file order; `join` says what the key is (see the module doc)."""

    path: Path
    join: str  # key | report | row
    column: str  # the key or report column ("" for row)
    rows: list[tuple[str, np.ndarray]]


def read_label_table(
    path: str | Path, key_column: str, join: str = "auto", codes: str = "chexpert"
) -> LabelTable:
    """A CheXpert-format label table: CSV / TSV (gzip allowed: `*.csv.gz`) with observation columns (empty = not
    mentioned; missing columns are NaN), or JSON lines (one object per line)."""
    path = Path(path)
    content = read_text_maybe_gzip(
        path, "label file", "a CheXpert-format CSV (or .csv.gz) or JSON-lines file"
    )
    suffix = strip_gzip_suffix(path).suffix.lower()
    if suffix in CSV_SUFFIXES:
        columns, raw_rows = read_csv_table(path, content, "\t" if suffix == ".tsv" else ",")
        rows = [(line, row) for line, row in raw_rows]
    else:
        expected = "one JSON object of observation -> value per line"
        rows = list(json_objects(path, content, expected))
        columns = list(dict.fromkeys(name for _, row in rows for name in row))
    if not set(columns) & set(OBSERVATIONS):
        raise LeadrrgError(
            f"label file {path} has columns {columns[:20]}; expected CheXpert observation columns "
            f"({', '.join(OBSERVATIONS[:3])}, ...)"
        )
    join, column = _join_kind(path, columns, key_column, join)
    table = LabelTable(path, join, column, [])
    for line, row in rows:
        where = f"label file {path} line {line}"
        if column and column not in row:
            raise LeadrrgError(f"{where} has no {column!r} key; expected an object with it")
        values = {name: row[name] for name in OBSERVATIONS if name in row}
        key = _row_key(row, column, join)
        table.rows.append((key, parse_labels(values, where, codes)))
    return table


def _row_key(row: dict, column: str, join: str) -> str:
    if not column:
        return ""
    return normalise_report(row[column]) if join == "report" else normalise_key(row[column])


def _join_kind(path: Path, columns: Sequence[str], key_column: str, join: str) -> tuple[str, str]:
    report_column = next((c for c in REPORT_COLUMNS if c in columns), None)
    if join == "row":
        return "row", ""
    if join in ("key", "auto") and key_column in columns:
        return "key", key_column
    if join in ("report", "auto") and report_column:
        return "report", report_column
    wanted = {
        "key": f"a {key_column!r} column",
        "report": f"a report-text column ({' or '.join(REPORT_COLUMNS)})",
        "auto": f"a {key_column!r} column or a report-text column ({' or '.join(REPORT_COLUMNS)})",
    }[join]
    raise LeadrrgError(
        f"label file {path} has columns {list(columns)[:20]}; expected {wanted} beside the CheXpert observations "
        "(or name the key column with data.label_key=COLUMN, or set data.label_join=row for a file with one row "
        "per study in data-file order)"
    )


def read_label_file(path: str | Path, key_column: str, codes: str = "chexpert") -> dict[str, np.ndarray]:
    """A label table keyed by `key_column` as {key: labels} (later rows win)."""
    return dict(read_label_table(path, key_column, "key", codes).rows)


@dataclass
class JoinSummary:
    path: Path
    join: str
    column: str
    rows: int  # rows in the file
    matched_records: int  # records that got labels
    unused_rows: int  # rows that labelled no record
    unlabelled_records: int  # records the file has no row for

    def describe(self) -> str:
        how = {
            "key": f"by {self.column!r}",
            "report": f"by report text ({self.column!r})",
            "row": "by row order",
        }
        return (
            f"labels from {self.path} joined {how[self.join]}: {self.matched_records} records labelled, "
            f"{self.unlabelled_records} without a row, {self.unused_rows} of {self.rows} rows unused"
        )


def join_labels(records: list[Record], table: LabelTable) -> JoinSummary:
    """Set `record.labels` from `table` (see the module doc for the join kinds); records without a row keep theirs."""
    used: set[int] = set()
    matched = 0
    if table.join == "row":
        if len(table.rows) != len(records):
            raise LeadrrgError(
                f"label file {table.path} has {len(table.rows)} rows but the data has {len(records)} studies; "
                "data.label_join=row needs one row per study, in the data file's order"
            )
        for index, (record, (_, labels)) in enumerate(zip(records, table.rows)):
            record.labels = labels.copy()
            used.add(index)
        matched = len(records)
    else:
        index_of = {key: index for index, (key, _) in enumerate(table.rows)}  # later rows win
        for record in records:
            keys = (
                [normalise_key(record.label_key or record.id)]
                if table.join == "key"
                else _report_keys(record)
            )
            index = next((index_of[k] for k in keys if k in index_of), None)
            if index is not None:
                record.labels = table.rows[index][1].copy()
                used.add(index)
                matched += 1
    return JoinSummary(
        table.path,
        table.join,
        table.column,
        len(table.rows),
        matched,
        len(table.rows) - len(used),
        len(records) - matched,
    )


def _report_keys(record: Record) -> list[str]:
    texts = (record.findings, record.impression, f"{record.findings} {record.impression}")
    return [key for key in (normalise_report(t) for t in texts) if key]
