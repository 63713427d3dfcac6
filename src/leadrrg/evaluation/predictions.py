"""preds.jsonl, the predictions file: one JSON object a line (`id`, `reference`, `generated`, optional `labels`,
`expert_probs` and `evidence`; see `leadrrg.inference.predict`), as `leadrrg generate` writes it and `leadrrg
evaluate`, `leadrrg compare` and the experiments read it, plus the `meta` that metrics.json records about them.

`leadrrg generate` appends these lines itself while it decodes (resumable, `leadrrg.inference.batch`); a whole
file is written here, atomically.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from leadrrg.errors import LeadrrgError
from leadrrg.io import atomic_open, json_lines, read_csv_table, read_text, read_text_maybe_gzip
from leadrrg.runs.provenance import versions

EXPECTED = (
    'the JSON lines that leadrrg generate writes ({"id", "reference", "generated"} a line), or a CSV with columns '
    "id (or study_id), generated (or findings[, impression]) and reference"
)
# A predictions CSV (other systems' published outputs, e.g. cxrmate-2's `findings,impression,study_id`): the first
# column present of each tuple gives the field.
CSV_ID_COLUMNS = ("id", "study_id", "dicom_id")
CSV_GENERATED_COLUMNS = ("generated", "report", "prediction")
CSV_REFERENCE_COLUMNS = ("reference", "ground_truth", "target")


def read_predictions_csv(path: Path) -> list[dict[str, Any]]:
    """The records of a predictions CSV: `id`, `generated` (`findings` and `impression` joined when the file has no
    `generated` column) and `reference` by the column names above."""
    columns, rows = read_csv_table(path, read_text_maybe_gzip(path, "predictions file", EXPECTED))
    found = {
        name: next((c for c in options if c in columns), None)
        for name, options in (("id", CSV_ID_COLUMNS), ("generated", CSV_GENERATED_COLUMNS))
    }
    reference = next((c for c in CSV_REFERENCE_COLUMNS if c in columns), None)
    sections = [c for c in ("findings", "impression") if c in columns]
    if not found["generated"] and not sections or not found["id"] or not reference:
        raise LeadrrgError(
            f"predictions file {path} has columns {columns[:12]}; expected {EXPECTED}"
            + (
                ""
                if reference
                else " (this file has no reference column: add the reference reports as 'reference')"
            )
        )
    records = []
    for _, row in rows:
        if found["generated"]:
            generated = row[found["generated"]]
        else:
            generated = " ".join(row[c].strip() for c in sections if row[c].strip())
        records.append({"id": row[found["id"]].strip(), "reference": row[reference], "generated": generated})
    if not records:
        raise LeadrrgError(f"{path}: no predictions (the file has a header only)")
    return records


def read_predictions(path: str | Path) -> list[dict[str, Any]]:
    """The records of a preds.jsonl (or of a predictions CSV, `read_predictions_csv`); LeadrrgError naming the file
    and line for anything malformed."""
    path = Path(path)
    if path.suffix.lower() == ".csv" or path.name.lower().endswith(".csv.gz"):
        return read_predictions_csv(path)
    records = []
    for line_number, record in json_lines(path, read_text(path, "predictions file", EXPECTED), EXPECTED):
        if not isinstance(record, dict):
            raise LeadrrgError(
                f"{path}, line {line_number}: expected a JSON object, got {type(record).__name__}"
            )
        for key in ("reference", "generated"):
            if key not in record:
                raise LeadrrgError(f"{path}, line {line_number}: missing '{key}' (a report string)")
            if not isinstance(record[key], str):
                raise LeadrrgError(f"{path}, line {line_number}: '{key}' must be a string")
        records.append(record)
    if not records:
        raise LeadrrgError(f"{path}: no predictions (the file is empty)")
    return records


def write_predictions(path: str | Path, records: Sequence[dict[str, Any]]) -> None:
    """Write `records` as a preds.jsonl, atomically (the file is complete or absent)."""
    with atomic_open(path, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, allow_nan=False) + "\n")


def predictions_meta(run_dir: str | Path, decode, records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """What metrics.json's `meta` records about the predictions it scores: torch and transformers versions, the
    checkpoint step, the decoding settings and a SHA-256 over the predictions as JSON lines."""
    # runs.files imports torch, which reading and scoring predictions (`leadrrg evaluate`) does not need.
    from leadrrg.runs.files import trained_steps

    digest = hashlib.sha256()
    for record in records:
        digest.update((json.dumps(record, sort_keys=True) + "\n").encode())
    found = versions()
    return {
        "checkpoint_step": trained_steps(run_dir),
        "decode": dataclasses.asdict(decode),
        "predictions_sha256": digest.hexdigest(),
        "torch": found["torch"],
        "transformers": found["transformers"],
    }
