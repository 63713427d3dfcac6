"""Filling missing labels with the rule-based labeler (cached by report hash). Label values and label files
live in `leadrrg.data.label_files`."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from leadrrg.constants import NUM_OBSERVATIONS, OBSERVATIONS
from leadrrg.data.label_files import read_label_file

if TYPE_CHECKING:
    from leadrrg.data.records import Study

LABEL_VALUES = (1.0, 0.0, -1.0)
LABEL_CHUNK = 2_000  # reports labelled between two progress reports

__all__ = ["LABEL_VALUES", "labels_from_labeler", "read_label_cache", "report_hash"]


def report_hash(report: str) -> str:
    return hashlib.sha256(report.encode("utf-8")).hexdigest()


def read_label_cache(path: Path) -> dict[str, np.ndarray]:
    """The labeler cache as `labels_from_labeler` writes it, {report_sha256: (14,) labels}, read in one pass (a
    MIMIC-CXR cache has a quarter of a million rows); a file of any other shape goes through the strict label-file
    reader, which names what is wrong with it."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    width = 1 + NUM_OBSERVATIONS
    if not rows or rows[0] != ["report_sha256", *OBSERVATIONS] or any(len(row) != width for row in rows):
        return read_label_file(path, "report_sha256")
    text = np.array([row[1:] for row in rows[1:]], dtype=str).reshape(len(rows) - 1, NUM_OBSERVATIONS)
    values = np.full(text.shape, np.nan, dtype=np.float32)  # (N, 14); empty = not mentioned
    given = text != ""
    try:
        values[given] = text[given].astype(np.float32)
    except ValueError:
        return read_label_file(path, "report_sha256")
    if not np.isin(values[given], LABEL_VALUES).all():
        return read_label_file(path, "report_sha256")
    return {row[0]: labels for row, labels in zip(rows[1:], values)}


def labels_from_labeler(
    studies: Sequence[Study], cache_path: str | Path, progress: Callable[[int, int], None] | None = None
) -> list[Study]:
    """Fill missing labels with the rule-based labeler, cached in a CSV keyed by the report's SHA-256.

    Studies that already have labels keep them; `progress(done, total)` is told how many of the reports not in
    the cache are labelled so far. The cache (`report_sha256` + 14 observation columns,
    empty = not mentioned) grows with each call and is rewritten atomically.
    """
    from leadrrg.io import atomic_open
    from leadrrg.labeler import label_reports

    cache_path = Path(cache_path)
    cache = read_label_cache(cache_path) if cache_path.exists() else {}
    hashes = {s.report: report_hash(s.report) for s in studies if s.labels is None}  # each report hashed once
    missing = sorted(report for report, key in hashes.items() if key not in cache)
    if missing:
        for start in range(0, len(missing), LABEL_CHUNK):
            chunk = missing[start : start + LABEL_CHUNK]
            new_labels = np.asarray(label_reports(chunk), dtype=np.float32).reshape(
                len(chunk), NUM_OBSERVATIONS
            )
            for report, labels in zip(chunk, new_labels):
                cache[hashes[report]] = labels
            if progress is not None:
                progress(start + len(chunk), len(missing))
        with atomic_open(cache_path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["report_sha256", *OBSERVATIONS])
            for key in sorted(cache):
                writer.writerow([key, *("" if np.isnan(v) else f"{v:.1f}" for v in cache[key])])
    return [
        s if s.labels is not None else dataclasses.replace(s, labels=cache[hashes[s.report]].copy())
        for s in studies
    ]
