"""Reading reports (CSV, JSONL, plain text) and writing labels in the CheXpert labeler's CSV format."""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from leadrrg.constants import NUM_OBSERVATIONS, OBSERVATIONS
from leadrrg.errors import LeadrrgError
from leadrrg.io import atomic_open, json_objects, read_csv_rows, read_csv_table
from leadrrg.labeler.attributes import ATTRIBUTE_COLUMNS, flatten_attributes

logger = logging.getLogger("leadrrg.labeler")

# Columns tried, in order, when a CSV is read without `text_columns`.
DEFAULT_TEXT_COLUMNS: tuple[tuple[str, ...], ...] = (
    ("Reports",),
    ("report",),
    ("Report",),
    ("reports",),
    ("text",),
    ("report_text",),
    ("findings", "impression"),
    ("findings",),
    ("impression",),
    ("FINDINGS", "IMPRESSION"),
)
ID_COLUMNS = ("id", "study_id")  # tried first, then a column named like an id (`uid`, `dicom_id`)
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
CSV_SUFFIXES = (".csv", ".tsv")


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise LeadrrgError(f"{path}: no such file; expected a CSV, JSONL or text file of reports") from None
    except IsADirectoryError:
        raise LeadrrgError(f"{path} is a directory; expected a CSV, JSONL or text file of reports") from None
    except OSError as exc:
        raise LeadrrgError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        logger.warning(
            "warning: %s is not valid UTF-8 (first bad byte at offset %d); undecodable bytes were replaced",
            path,
            exc.start,
        )
        return data.decode("utf-8", errors="replace")


def _split_columns(text_columns: str | Sequence[str] | None) -> tuple[str, ...] | None:
    if text_columns is None:
        return None
    if isinstance(text_columns, str):
        text_columns = text_columns.split(",")
    columns = tuple(c.strip() for c in text_columns if c.strip())
    if not columns:
        raise LeadrrgError("--text-columns is empty; expected column names separated by commas")
    return columns


def _join(values: list[object]) -> str:
    parts = []
    for value in values:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        text = str(value).strip()
        if text:
            parts.append(text)
    return " ".join(parts)


def _id_column(header: Sequence[str], rows: list[dict], text_columns: Sequence[str]) -> str | None:
    """The id column of a CSV: `id`, `study_id`, then the first column named like an id (`uid`, `*_id`), then
    the first column when its values look like ids (non-empty, unique, no spaces); never a text column."""
    candidates = [name for name in header if name not in text_columns]
    for name in (*ID_COLUMNS, *(c for c in candidates if c.lower() == "uid" or c.lower().endswith("_id"))):
        if name in candidates:
            return name
    if candidates and candidates[0] == header[0] and rows:
        values = [str(row.get(header[0]) or "").strip() for row in rows]
        if all(values) and len(set(values)) == len(values) and not any(" " in v for v in values):
            return header[0]
    return None


def _read_csv(
    path: Path, text: str, columns: tuple[str, ...] | None, id_column: str | None = None
) -> tuple[list[str], tuple[str, list[str]] | None]:
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    header, rows = read_csv_table(path, text, delimiter)  # refuses an unterminated quote or ragged rows
    if columns is None:
        columns = next((c for c in DEFAULT_TEXT_COLUMNS if all(name in header for name in c)), None)
        if columns is None:
            raise LeadrrgError(
                f"{path}: no report column found; columns present: {', '.join(header) or '(none)'}; "
                "name the text columns with --text-columns, or pass --no-header when the first row is a report"
            )
    missing = [name for name in columns if name not in header]
    if missing:
        raise LeadrrgError(
            f"{path}: column(s) {', '.join(missing)} not found; columns present: {', '.join(header) or '(none)'}"
        )
    reports = [_join([row.get(name) for name in columns]) for _, row in rows]
    if id_column is not None and id_column not in header:
        raise LeadrrgError(
            f"{path}: --id-column {id_column} not found; columns present: {', '.join(header) or '(none)'}"
        )
    id_column = id_column or _id_column(header, [row for _, row in rows], columns)
    ids = None if id_column is None else (id_column, [str(row.get(id_column) or "") for _, row in rows])
    return reports, ids


def _read_jsonl(
    path: Path, text: str, columns: tuple[str, ...] | None, id_column: str | None = None
) -> tuple[list[str], tuple[str, list[str]] | None]:
    columns = columns or ("report",)
    reports, ids = [], []
    for number, record in json_objects(path, text, f"one JSON object per line with a {columns[0]!r} field"):
        missing = [name for name in columns if name not in record]
        if missing:
            raise LeadrrgError(
                f"{path}, line {number}: field(s) {', '.join(missing)} not found; "
                f"fields present: {', '.join(map(str, record)) or '(none)'}"
            )
        reports.append(_join([record[name] for name in columns]))
        ids.append(record.get(id_column or "id"))
    if id_column is not None and all(value is None for value in ids) and ids:
        raise LeadrrgError(f"{path}: no record has the field {id_column!r} given by --id-column")
    if not any(value is not None for value in ids):
        return reports, None
    return reports, (id_column or "id", ["" if value is None else str(value) for value in ids])


def _read_headerless_csv(path: Path, text: str, columns: tuple[str, ...] | None) -> list[str]:
    """A CSV without a header row (the CheXpert labeler's `sample_reports.csv`): every row is a report; its
    first field, or the fields numbered (from 1) in `columns`, joined."""
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    rows = [fields for _, fields in read_csv_rows(path, text, delimiter)]
    numbers = [1] if columns is None else []
    for name in columns or ():
        if not name.isdigit() or int(name) < 1:
            raise LeadrrgError(
                f"--text-columns {name!r} with --no-header; expected column numbers counted from 1, e.g. 1 or 2,3"
            )
        numbers.append(int(name))
    reports = []
    for line, fields in enumerate(rows, start=1):
        if max(numbers) > len(fields):
            raise LeadrrgError(
                f"{path}: row {line} has {len(fields)} fields; expected at least {max(numbers)}"
            )
        reports.append(_join([fields[n - 1] for n in numbers]))
    return reports


def read_reports(
    path: str | Path, text_columns: str | Sequence[str] | None = None, header: bool = True
) -> list[str]:
    """The reports of `path` (`read_reports_and_ids`), without their ids."""
    return read_reports_and_ids(path, text_columns, header)[0]


def read_reports_and_ids(
    path: str | Path,
    text_columns: str | Sequence[str] | None = None,
    header: bool = True,
    id_column: str | None = None,
) -> tuple[list[str], tuple[str, list[str]] | None]:
    """Reports from a CSV (the `text_columns` joined with a space; by default the first of
    `Reports`, `report`, `text`, `findings` + `impression`, ... that exists; with `header=False` every row is a
    report and `text_columns` are column numbers), a JSONL file (the `report` field, or `text_columns`) or a
    text file (one report per line; a blank line is an empty report). Non-UTF-8 bytes are replaced, with a
    warning. Also (id column name, one id per report) when the input has ids (`id_column`, else a CSV's `id`,
    `study_id` or id-like column: `_id_column`; a JSONL's `id`), else None. Raises `LeadrrgError` on bad input."""
    path = Path(path)
    text = _read_text(path)
    columns = _split_columns(text_columns)
    suffix = path.suffix.lower()
    if id_column is not None and (suffix not in CSV_SUFFIXES + JSONL_SUFFIXES or not header):
        raise LeadrrgError(f"{path}: --id-column applies to a CSV with a header or a JSONL file")
    if suffix in CSV_SUFFIXES:
        if header:
            return _read_csv(path, text, columns, id_column)
        return _read_headerless_csv(path, text, columns), None
    if not header:
        raise LeadrrgError(f"{path}: --no-header applies to CSV input, not to a {suffix or 'text'} file")
    if suffix in JSONL_SUFFIXES:
        return _read_jsonl(path, text, columns, id_column)
    if columns is not None:
        raise LeadrrgError(f"{path}: --text-columns applies to CSV and JSONL input, not to a text file")
    return text.splitlines(), None


def _format(value: float) -> str:
    return "" if math.isnan(value) else f"{float(value):.1f}"


def write_chexpert_csv(
    path: str | Path,
    reports: Sequence[str],
    labels: np.ndarray,
    attributes: Sequence[Mapping[str, Mapping[str, Any]]] | None = None,
    ids: tuple[str, Sequence[str]] | None = None,
) -> None:
    """Write labels in the CheXpert labeler's format: a `Reports` column, then the 14 observations
    in CheXpert order with values `1.0`, `0.0`, `-1.0`, or empty when not mentioned. With `attributes`
    (`labeler.attributes.label_attributes`), the `attributes.ATTRIBUTE_COLUMNS` follow
    (`<Observation>_side`, `_severity`, `_zone`; empty when unstated). With `ids` ((column name, one id per
    report), from `read_reports_and_ids`), that column comes first. Atomic."""
    labels = np.asarray(labels, dtype=np.float32)
    if labels.shape != (len(reports), NUM_OBSERVATIONS):
        raise ValueError(f"labels have shape {labels.shape}; expected ({len(reports)}, {NUM_OBSERVATIONS})")
    if attributes is not None and len(attributes) != len(reports):
        raise ValueError(
            f"{len(attributes)} attribute records for {len(reports)} reports; expected one per report"
        )
    extra_header = ATTRIBUTE_COLUMNS if attributes is not None else ()
    extra_rows = flatten_attributes(attributes) if attributes is not None else [[]] * len(reports)
    id_header, id_values = ((), [()] * len(reports))
    if ids is not None:
        id_header, id_values = (ids[0],), [(value,) for value in ids[1]]
    if len(id_values) != len(reports):
        raise ValueError(f"{len(id_values)} ids for {len(reports)} reports; expected one per report")
    with atomic_open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow((*id_header, "Reports", *OBSERVATIONS, *extra_header))
        for key, report, row, extra in zip(id_values, reports, labels.tolist(), extra_rows):
            writer.writerow((*key, report, *(_format(v) for v in row), *extra))
