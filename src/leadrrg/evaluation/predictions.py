"""preds.jsonl, the predictions file: one JSON object a line (`id`, `reference`, `generated`, optional `labels`,
`expert_probs` and `evidence`; see `leadrrg.inference.predict`), as `leadrrg generate` writes it and `leadrrg
evaluate`, `leadrrg compare` and the experiments read it, plus the `meta` that metrics.json records about them.

Predictions without references (other systems' published CSVs) take them from a data set's split
(`attach_references`: `reference`, `labels` and `findings` attributes of the study with the same id).

`leadrrg generate` appends these lines itself while it decodes (resumable, `leadrrg.inference.batch`); a whole
file is written here, atomically.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from leadrrg.config import DataConfig
from leadrrg.data.manifests import load_studies
from leadrrg.data.records import Study
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
SHOWN_IDS = 5  # ids an error names

logger = logging.getLogger(__name__)


def read_predictions_csv(path: Path, needs_reference: bool = True) -> list[dict[str, Any]]:
    """The records of a predictions CSV: `id`, `generated` (`findings` and `impression` joined when the file has no
    `generated` column) and `reference` by the column names above (`needs_reference=False`: a file without a
    reference column gives records without `reference`)."""
    columns, rows = read_csv_table(path, read_text_maybe_gzip(path, "predictions file", EXPECTED))
    found = {
        name: next((c for c in options if c in columns), None)
        for name, options in (("id", CSV_ID_COLUMNS), ("generated", CSV_GENERATED_COLUMNS))
    }
    reference = next((c for c in CSV_REFERENCE_COLUMNS if c in columns), None)
    sections = [c for c in ("findings", "impression") if c in columns]
    if not found["generated"] and not sections or not found["id"] or not (reference or not needs_reference):
        raise LeadrrgError(
            f"predictions file {path} has columns {columns[:12]}; expected {EXPECTED}"
            + (
                ""
                if reference or not needs_reference
                else " (this file has no reference column: add the reference reports as 'reference', or take them"
                " from the data set with --data ROOT --format FORMAT --split SPLIT)"
            )
        )
    records = []
    for _, row in rows:
        if found["generated"]:
            generated = row[found["generated"]]
        else:
            generated = " ".join(row[c].strip() for c in sections if row[c].strip())
        record = {"id": row[found["id"]].strip(), "generated": generated}
        if reference:
            record["reference"] = row[reference]
        records.append(record)
    if not records:
        raise LeadrrgError(f"{path}: no predictions (the file has a header only)")
    return records


def read_predictions(
    path: str | Path, data: DataConfig | None = None, split: str | None = None
) -> list[dict[str, Any]]:
    """The records of a preds.jsonl (or of a predictions CSV, `read_predictions_csv`); LeadrrgError naming the file
    and line for anything malformed. With `data` (and `split`, default test) each record's `reference`, `labels` and
    `findings` attributes come from the study of that split with the same id (`attach_references`); the file then
    needs no `reference`. MIMIC-CXR read per image (`data.grouping=entry`) whose dicom ids match none of the
    predictions is read per study instead (predictions keyed by study_id)."""
    path = Path(path)
    records = _read_records(path, needs_reference=data is None)
    if data is None:
        return records
    split = split or "test"
    where = f"{data.format} data at {data.root}, split {split!r}"
    studies = load_studies(data, split)
    if data.format == "mimic_cxr" and data.grouping == "entry":
        # per-image entries (dicom ids); predictions keyed by study_id (cxrmate-2's) join the studies instead
        entry_keys = {id_key(study.id) for study in studies}
        if not any(id_key(record.get("id", "")) in entry_keys for record in records):
            data = dataclasses.replace(data, grouping="study")
            where = f"{where} (grouped by study_id)"
            studies = load_studies(data, split)
    try:
        return attach_references(records, studies, where)
    except LeadrrgError as exc:
        raise LeadrrgError(f"{path}: {exc}") from None


def _read_records(path: Path, needs_reference: bool) -> list[dict[str, Any]]:
    if path.suffix.lower() == ".csv" or path.name.lower().endswith(".csv.gz"):
        return read_predictions_csv(path, needs_reference)
    records = []
    for line_number, record in json_lines(path, read_text(path, "predictions file", EXPECTED), EXPECTED):
        if not isinstance(record, dict):
            raise LeadrrgError(
                f"{path}, line {line_number}: expected a JSON object, got {type(record).__name__}"
            )
        for key in ("reference", "generated") if needs_reference else ("generated",):
            if key not in record:
                raise LeadrrgError(f"{path}, line {line_number}: missing '{key}' (a report string)")
            if not isinstance(record[key], str):
                raise LeadrrgError(f"{path}, line {line_number}: '{key}' must be a string")
        if not needs_reference and not isinstance(record.get("id"), (str, int)):
            raise LeadrrgError(
                f"{path}, line {line_number}: missing 'id' (the study id that joins the data set's reference)"
            )
        records.append(record)
    if not records:
        raise LeadrrgError(f"{path}: no predictions (the file is empty)")
    return records


def id_key(value: Any) -> str:
    """A study id as the join compares it: stripped, MIMIC's `s50414267` and `50414267` alike."""
    text = str(value).strip()
    return text[1:] if text[:1] in ("s", "S") and text[1:].isdigit() else text


def attach_references(
    records: Sequence[dict[str, Any]], studies: Sequence[Study], where: str = "the data set"
) -> list[dict[str, Any]]:
    """`records` with `id` (as the data spells it), `reference` (the study's report), `labels` (when the data has them) and `findings` (the
    study's finding attributes, when it has them) of the study in `studies` with the same id (`id_key`).
    LeadrrgError when a prediction's id is not among the studies; a warning counts studies without a prediction
    (the scores cover the predictions given)."""
    by_key: dict[str, Study] = {}
    for study in studies:
        by_key.setdefault(id_key(study.id), study)
    unknown = [str(record.get("id")) for record in records if id_key(record.get("id", "")) not in by_key]
    if unknown:
        shown = ", ".join(repr(i) for i in unknown[:SHOWN_IDS]) + (
            ", ..." if len(unknown) > SHOWN_IDS else ""
        )
        examples = ", ".join(repr(study.id) for study in studies[:3]) or "none: the split is empty"
        raise LeadrrgError(
            f"{len(unknown)} of {len(records)} predictions have an id that is not a study of {where}: {shown}; "
            f"expected that split's study ids (e.g. {examples}; MIMIC study ids with or without the 's')"
        )
    attached, used = [], set()
    for record in records:
        study = by_key[id_key(record["id"])]
        used.add(id(study))
        filled = {**record, "id": study.id, "reference": study.report}  # the data's spelling of the id
        if study.labels is not None:
            filled["labels"] = [
                None if math.isnan(value) else float(value) for value in study.labels.tolist()
            ]
        if study.attributes is not None:
            filled["findings"] = study.attributes
        attached.append(filled)
    if len(used) < len(studies):
        logger.warning(
            "%d of the %d studies of %s have no prediction; scored on the %d predictions given",
            len(studies) - len(used),
            len(studies),
            where,
            len(records),
        )
    return attached


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
