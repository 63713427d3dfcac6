"""Studies from every supported data layout: the format registry and what all layouts share.

A format reader (one module per layout in `leadrrg.data.readers`) turns a data root into `Record`s (all
splits, both report sections, optional labels) with notes and warnings on how it read them; `load_split` then
picks the split, the report section (`DataConfig.section`) and cleans the text (`DataConfig.clean`), skipping
and counting studies whose chosen section is empty. Layouts:

- `synth`, `jsonl`: `ROOT/manifest.jsonl` (`readers.jsonl`).
- `iu_xray`: R2Gen's `ROOT/annotation.json` + `ROOT/images/` (`readers.r2gen`; ReXrank's study-keyed JSON and
  LLaVA conversations through `readers.study_json`), or Open-i's XML release (`readers.openi`), or Kaggle's CSV
  pair (`readers.iu_kaggle`), whichever the root holds (`readers.releases`).
- `mimic_cxr`: R2Gen's MIMIC-CXR annotation (or ReXrank's JSON), images under `images/` or PhysioNet's `files/`,
  or PhysioNet's own split CSV + free-text reports (`readers.mimic_physionet`); per-image entries or studies
  (`DataConfig.grouping`), labels from MIMIC-CXR-JPG's CheXpert CSV (`readers.mimic_cxr`).
- `chexpert_plus`: `ROOT/df_chexpert_plus_*.csv`, JPG or PNG release, CheXbert labels (`readers.chexpert_plus`), or
  ReXrank's `ReXRank_CheXpertPlus.json`.

`DataConfig.split_file` then gives every study its split, for any layout (`splits.apply_split_file`).

Split names are canonical (`train`, `val`, `test`; `leadrrg.data.splits`); labels and label files are described
in `leadrrg.data.label_files`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from leadrrg.config import DataConfig
from leadrrg.data.readers.jsonl import read_manifest
from leadrrg.data.readers.mimic_cxr import read_mimic_cxr
from leadrrg.data.readers.releases import read_chexpert_release, read_iu_release
from leadrrg.data.records import (
    LoadResult,
    ReadResult,
    Record,
    Study,
    check_inside_root,
    data_file,
    forget_resolved_paths,
)
from leadrrg.data.splits import SPLIT_ALIASES, apply_split_file, resolve_split
from leadrrg.errors import LeadrrgError
from leadrrg.io import path_problem
from leadrrg.registry import Registry

__all__ = [
    "FORMATS",
    "SPLIT_ALIASES",
    "LoadResult",
    "ReadResult",
    "Record",
    "Study",
    "available_splits",
    "check_inside_root",
    "load_split",
    "load_studies",
    "read_data",
    "read_records",
    "resolve_split",
]

logger = logging.getLogger(__name__)

SHOW = 3  # examples named in a warning

# A reader: DataConfig -> every record of the data root (all splits), with notes and warnings.
FORMATS: Registry[Callable[[DataConfig], ReadResult]] = Registry("data format")
FORMATS.add("jsonl", read_manifest)
FORMATS.add("synth", read_manifest)
FORMATS.add("iu_xray", read_iu_release)  # R2Gen / ReXrank / LLaVA JSON, Open-i XML, Kaggle CSV pair
FORMATS.add("mimic_cxr", read_mimic_cxr)  # R2Gen / ReXrank JSON, PhysioNet's split CSV + reports
FORMATS.add("chexpert_plus", read_chexpert_release)  # the release's CSV, ReXrank's JSON


def read_data(data: DataConfig) -> ReadResult:
    """Every record of `data.root` in `data.format`, all splits, with what `data check` reports about them."""
    reader = FORMATS.get(data.format)
    if not data.root:
        raise LeadrrgError("data.root is empty; expected the data root directory (--data DIR)")
    root = Path(data.root)
    problem = path_problem(root, "directory")
    if problem:
        raise LeadrrgError(f"data root {root} {problem}; expected the directory of a {data.format} data set")
    forget_resolved_paths()
    try:
        result = reader(data)
    finally:
        forget_resolved_paths()  # the folder cache is for one read; it would hold every study folder's path
    if data.split_file:
        result.records, notes, warnings = apply_split_file(result.records, data_file(root, data.split_file))
        result.notes += notes
        result.warnings += warnings
    _check_unique_ids(result.records, root)
    result.warnings += _shared_warnings(result.records)
    return result


def read_records(data: DataConfig) -> list[Record]:
    """Every record of `data.root` in `data.format`, all splits."""
    return read_data(data).records


def _check_unique_ids(records: Sequence[Record], root: Path) -> None:
    seen: dict[str, str] = {}
    for record in records:
        if record.id in seen:
            raise LeadrrgError(
                f"study id {record.id!r} appears twice in {root} (splits {seen[record.id]!r} and {record.split!r}); "
                "expected unique study ids"
            )
        seen[record.id] = record.split


def _shared_warnings(records: Sequence[Record]) -> list[str]:
    """Duplicate images across studies; a missing test split."""
    warnings = []
    owners: dict[str, list[str]] = {}
    for record in records:
        for image in dict.fromkeys(record.images):
            owners.setdefault(image, []).append(record.id)
    shared = [(image, ids) for image, ids in owners.items() if len(ids) > 1]
    if shared:
        image, ids = shared[0]
        warnings.append(
            f"{len(shared)} images belong to more than one study (duplicate studies?), e.g. {image} in "
            f"{', '.join(map(repr, ids[:SHOW]))}"
        )
    splits = available_splits(records)
    if records and "test" not in splits:
        suggestion = "'val' (--split val)" if "val" in splits else "a split of your own"
        warnings.append(
            f"no test split (splits: {', '.join(splits)}): `generate` and `evaluate` default to test; use {suggestion}"
        )
    return warnings


def available_splits(records: Iterable[Record]) -> list[str]:
    return sorted({record.split for record in records})


def load_split(data: DataConfig, split: str, records: list[Record] | None = None) -> LoadResult:
    """The studies of one split with the chosen section, cleaned; empty sections skipped and counted."""
    from leadrrg.data.text import clean_report, select_section

    records = read_records(data) if records is None else records
    splits = available_splits(records)
    stored = resolve_split(split, splits, f"{data.format} data at {data.root}")
    studies, skipped = [], 0
    cleaned: dict[
        tuple[str, str], str
    ] = {}  # MIMIC entries of one study share a report: clean it once, keep one copy
    for record in records:
        if record.split != stored:
            continue
        sections = (record.findings, record.impression)
        report = cleaned.get(sections)
        if report is None:
            report = cleaned[sections] = clean_report(
                select_section(record.findings, record.impression, data.section), data.clean
            )
        if not report:
            skipped += 1
            continue
        studies.append(
            Study(record.id, record.split, list(record.images), report, record.labels, record.attributes)
        )
    if skipped:
        logger.info(
            "%s split %r: skipped %d studies with an empty %s section",
            data.root,
            stored,
            skipped,
            data.section,
        )
    return LoadResult(studies, stored, skipped, splits)


def load_studies(data: DataConfig, split: str) -> list[Study]:
    """The studies of `split` (see `load_split` for the skipped count)."""
    return load_split(data, split).studies
