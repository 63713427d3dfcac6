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
from leadrrg.io import atomic_open, json_lines, read_text
from leadrrg.runs.provenance import versions

EXPECTED = "the JSON lines that leadrrg generate writes"


def read_predictions(path: str | Path) -> list[dict[str, Any]]:
    """The records of a preds.jsonl; LeadrrgError naming the file and line for anything malformed."""
    path = Path(path)
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
