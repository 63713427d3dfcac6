"""Studies from every supported data layout, through one format registry.

A format reader turns a data root into `Record`s (all splits, both report sections, optional labels);
`load_split` then picks the split, the report section (`DataConfig.section`) and cleans the text
(`DataConfig.clean`), skipping and counting studies whose chosen section is empty. Layouts:

- `synth`, `jsonl`: `ROOT/manifest.jsonl`, one JSON object per line: `id`, `split`, `images` (paths
  relative to ROOT), `report` (or string `findings` / `impression`), optional `labels` (14 numbers in
  `constants.OBSERVATIONS` order, null for not mentioned, or an object observation -> value).
- `iu_xray`, `mimic_cxr`: R2Gen's `ROOT/annotation.json` = {split: [{`id`, `report`, `image_path`:
  [paths relative to ROOT/images], ...}]}; MIMIC entries also carry `study_id`, `subject_id`. MIMIC
  labels come from the MIMIC-CXR-JPG CheXpert CSV (`DataConfig.label_file`, default
  `ROOT/mimic-cxr-2.0.0-chexpert.csv` when present), joined by `study_id`.
- `chexpert_plus`: `ROOT/df_chexpert_plus_*.csv` (one row per image: `path_to_image`, `split`,
  `section_findings`, `section_impression`, optional `frontal_lateral`), images grouped into studies
  by their folder (`train/patient00001/study1`); labels from `DataConfig.label_file` or
  `ROOT/chexbert_labels/{findings,impression,report}_fixed.json` (JSON lines keyed by `path_to_image`).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from leadrrg.config import DataConfig
from leadrrg.data.labels import normalise_key, parse_labels, read_label_file
from leadrrg.errors import LeadrrgError
from leadrrg.io import path_problem, read_csv_table, read_text, text_lines
from leadrrg.registry import Registry

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.jsonl"
ANNOTATION_NAME = "annotation.json"
IMAGES_DIR = "images"
MIMIC_LABEL_NAME = "mimic-cxr-2.0.0-chexpert.csv"
CHEXPERT_PLUS_GLOB = "df_chexpert_plus_*.csv"
CHEXPERT_PLUS_LABEL_DIR = "chexbert_labels"

# Split names that mean the same thing across data sets (CheXpert Plus says "valid", R2Gen "val").
SPLIT_ALIASES: dict[str, tuple[str, ...]] = {
    "val": ("valid", "validation", "dev"),
    "valid": ("val", "validation", "dev"),
    "validation": ("val", "valid", "dev"),
}


@dataclass
class Study:
    """One study: its views (absolute paths), its target report (section chosen, cleaned) and its
    labels ((14,) float32 with 1/0/-1/NaN in `constants.OBSERVATIONS` order, or None if unknown)."""

    id: str
    split: str
    images: list[str]
    report: str
    labels: np.ndarray | None = None


@dataclass
class Record:
    """A study as a format reader found it: both sections raw, before section choice and cleaning."""

    id: str
    split: str
    images: list[str]
    findings: str
    impression: str
    labels: np.ndarray | None = None
    label_key: str = ""  # joins an external label file: MIMIC study_id, CheXpert Plus first image; else id


@dataclass
class LoadResult:
    studies: list[Study]
    split: str  # the split name as found in the data (after aliasing, e.g. "val" -> "valid")
    skipped_empty: int  # studies skipped because their chosen report section is empty
    available_splits: list[str]


# A reader: DataConfig -> every record of the data root (all splits).
FORMATS: Registry[Callable[[DataConfig], list[Record]]] = Registry("data format")


# --------------------------------------------------------------------------------------------------
# Public API


def read_records(data: DataConfig) -> list[Record]:
    """Every record of `data.root` in `data.format`, all splits."""
    reader = FORMATS.get(data.format)
    if not data.root:
        raise LeadrrgError("data.root is empty; expected the data root directory (--data DIR)")
    root = Path(data.root)
    problem = path_problem(root, "directory")
    if problem:
        raise LeadrrgError(f"data root {root} {problem}; expected the directory of a {data.format} data set")
    records = reader(data)
    _check_unique_ids(records, root)
    return records


def _check_unique_ids(records: Sequence[Record], root: Path) -> None:
    seen: dict[str, str] = {}
    for record in records:
        if record.id in seen:
            raise LeadrrgError(
                f"study id {record.id!r} appears twice in {root} (splits {seen[record.id]!r} and {record.split!r}); "
                "expected unique study ids"
            )
        seen[record.id] = record.split


def available_splits(records: Iterable[Record]) -> list[str]:
    return sorted({record.split for record in records})


def resolve_split(split: str, available: Sequence[str], where: str) -> str:
    """The split name as stored: `split` itself or an alias of it; else a LeadrrgError listing splits."""
    if split in available:
        return split
    for alias in SPLIT_ALIASES.get(split, ()):
        if alias in available:
            return alias
    raise LeadrrgError(
        f"split {split!r} is not in {where}; available splits: {', '.join(available) or '(none)'}"
    )


def load_split(data: DataConfig, split: str, records: list[Record] | None = None) -> LoadResult:
    """The studies of one split with the chosen section, cleaned; empty sections skipped and counted."""
    from leadrrg.data.text import clean_report, select_section

    records = read_records(data) if records is None else records
    splits = available_splits(records)
    stored = resolve_split(split, splits, f"{data.format} data at {data.root}")
    studies, skipped = [], 0
    for record in records:
        if record.split != stored:
            continue
        report = clean_report(select_section(record.findings, record.impression, data.section), data.clean)
        if not report:
            skipped += 1
            continue
        studies.append(Study(record.id, record.split, list(record.images), report, record.labels))
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


# --------------------------------------------------------------------------------------------------
# Readers


def _resolve_path(base: Path, relative: str, data: DataConfig, where: str) -> str:
    """The absolute path of an image named in a data file (relative to `base`), symlinks followed; refused when it
    lies outside the data root unless `data.allow_outside_root`."""
    path = Path(relative)
    resolved = (path if path.is_absolute() else base / path).resolve()
    check_inside_root(resolved, data, where, relative)
    return str(resolved)


def check_inside_root(resolved: Path, data: DataConfig, where: str, named: str) -> None:
    root = Path(data.root).resolve()
    if not data.allow_outside_root and not resolved.is_relative_to(root):
        raise LeadrrgError(
            f"{where}: image path {named!r} resolves to {resolved}, outside the data root {root}; expected images "
            "inside the data root (set data.allow_outside_root=true to accept it)"
        )


def _bad(path: Path, where: str, problem: str, expected: str) -> LeadrrgError:
    return LeadrrgError(f"{path}: {where}: {problem}; expected {expected}")


def _read_manifest(data: DataConfig) -> list[Record]:
    root = Path(data.root)
    path = root / MANIFEST_NAME
    content = read_text(
        path, "manifest", f"{MANIFEST_NAME} (one JSON study per line) in a {data.format} data root"
    )
    expected = 'an object with "id", "split", "images" (list of paths), "report" (or "findings"/"impression")'
    records = []
    for line, text in enumerate(text_lines(content), start=1):
        if not text.strip():
            continue
        where = f"line {line}"
        try:
            entry = json.loads(text)
        except json.JSONDecodeError as exc:
            raise _bad(path, where, f"not valid JSON ({exc.msg})", expected) from None
        if not isinstance(entry, dict):
            raise _bad(path, where, f"a {type(entry).__name__}", expected)
        for key in ("id", "split", "images"):
            if key not in entry:
                raise _bad(path, where, f"key {key!r} is missing", expected)
        if not isinstance(entry["id"], (str, int)) or not isinstance(entry["split"], str):
            raise _bad(path, where, "id or split has the wrong type", "a string id and split")
        images = entry["images"]
        if isinstance(images, str):
            images = [images]
        if not isinstance(images, list) or not images or not all(isinstance(p, str) for p in images):
            raise _bad(path, where, f"images is {images!r}", "a non-empty list of image paths")
        # String `findings` / `impression` keys give the sections; otherwise `report` is split at its
        # headers (no headers: all findings). Non-string values (SynthCXR's structured `findings`) are
        # metadata and ignored.
        sections = {k: entry[k] for k in ("findings", "impression") if isinstance(entry.get(k), str)}
        if "report" in entry and not isinstance(entry["report"], str):
            raise _bad(path, where, f"report is {type(entry['report']).__name__}", "a string")
        if sections:
            findings, impression = sections.get("findings", ""), sections.get("impression", "")
        elif "report" in entry:
            from leadrrg.data.text import split_findings_impression

            findings, impression = split_findings_impression(entry["report"])
        else:
            raise _bad(path, where, "key 'report' is missing", expected)
        labels = parse_labels(entry.get("labels"), f"{path} {where}")
        records.append(
            Record(
                str(entry["id"]),
                entry["split"],
                [_resolve_path(root, p, data, f"{path} {where}") for p in images],
                findings or "",
                impression or "",
                labels,
            )
        )
    if data.label_file:
        _join_labels(records, _label_path(root, data.label_file), "id")
    return records


FORMATS.add("jsonl", _read_manifest)
FORMATS.add("synth", _read_manifest)


def _label_path(root: Path, label_file: str) -> Path:
    path = Path(label_file)
    return path if path.is_absolute() or path.exists() else root / path


def _join_labels(records: list[Record], path: Path, key_column: str) -> None:
    """Set `record.labels` from a label table by `record.label_key` (or id); absent records keep theirs."""
    table = read_label_file(path, key_column)
    for record in records:
        labels = table.get(record.label_key or record.id)
        if labels is not None:
            record.labels = labels.copy()


def _read_annotation(data: DataConfig) -> list[Record]:
    from leadrrg.data.text import split_findings_impression

    root = Path(data.root)
    path = root / ANNOTATION_NAME
    text = read_text(
        path,
        "annotation file",
        f"R2Gen's {ANNOTATION_NAME} beside an {IMAGES_DIR}/ folder in a {data.format} data root",
    )
    try:
        annotation = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LeadrrgError(f"{path} is not valid JSON ({exc}); expected R2Gen's annotation.json") from None
    expected = 'an object {"id": str, "report": str, "image_path": [paths relative to images/]}'
    if not isinstance(annotation, dict) or not all(isinstance(v, list) for v in annotation.values()):
        raise LeadrrgError(
            f"{path} is not an object of split name -> list of entries; expected R2Gen's annotation.json"
        )
    image_root = root / IMAGES_DIR
    base: Path | None = None
    records = []
    for split, entries in annotation.items():
        for index, entry in enumerate(entries):
            where = f"entry {index} of split {split!r}"
            if not isinstance(entry, dict):
                raise _bad(path, where, f"a {type(entry).__name__}", expected)
            if isinstance(entry.get("id"), (str, int)):
                where += f" (id {entry['id']!r})"
            for key in ("id", "report", "image_path"):
                if key not in entry:
                    raise _bad(path, where, f"key {key!r} is missing", expected)
            if not isinstance(entry["report"], str):
                raise _bad(path, where, f"report is {type(entry['report']).__name__}", "a string")
            images = entry["image_path"]
            if isinstance(images, str):
                images = [images]
            if not isinstance(images, list) or not images or not all(isinstance(p, str) for p in images):
                raise _bad(
                    path, where, f"image_path is {images!r}", "a non-empty list of paths relative to images/"
                )
            findings, impression = split_findings_impression(entry["report"])
            if base is None:
                # R2Gen's paths are relative to images/; accept paths relative to the root ("images/x/0.png")
                # when that is where the first entry's image is.
                base = (
                    root
                    if not (image_root / images[0]).exists() and (root / images[0]).exists()
                    else image_root
                )
            record = Record(
                str(entry["id"]),
                split,
                [_resolve_path(base, p, data, f"{path} {where}") for p in images],
                findings,
                impression,
            )
            if data.format == "mimic_cxr":
                study_id = entry.get("study_id") or _mimic_study_from_path(images[0])
                if study_id is None:
                    raise _bad(
                        path,
                        where,
                        "no study_id and none in the image path",
                        "a MIMIC-CXR entry with study_id",
                    )
                record.label_key = normalise_key(str(study_id).lstrip("s"))
            records.append(record)
    if data.format == "mimic_cxr":
        label_path = _label_path(root, data.label_file) if data.label_file else root / MIMIC_LABEL_NAME
        if data.label_file or label_path.is_file():
            _join_labels(records, label_path, "study_id")
    elif data.label_file:
        _join_labels(records, _label_path(root, data.label_file), "id")
    return records


def _mimic_study_from_path(image_path: str) -> str | None:
    match = re.search(r"(?:^|/)s(\d+)(?:/|$)", image_path)
    return match.group(1) if match else None


FORMATS.add("iu_xray", _read_annotation)
FORMATS.add("mimic_cxr", _read_annotation)


CHEXPERT_PLUS_COLUMNS = ("path_to_image", "split", "section_findings", "section_impression")


def _chexpert_plus_image_resolver(root: Path, first: str) -> Callable[[str], str]:
    """The released CSV names JPGs (`train/patient1/study1/view1_frontal.jpg`); the PNG release puts
    them under `PNG/` with a .png suffix. Pick the layout that holds the first image; default as named."""
    candidates: list[tuple[Path, str | None]] = [(root, None), (root / "PNG", ".png"), (root, ".png")]
    for base, suffix in candidates:
        probe = base / (str(Path(first).with_suffix(suffix)) if suffix else first)
        if probe.exists():
            break
    else:
        base, suffix = root, None

    def resolve(relative: str) -> str:
        return str((base / (str(Path(relative).with_suffix(suffix)) if suffix else relative)).resolve())

    return resolve


def _read_chexpert_plus(data: DataConfig) -> list[Record]:
    root = Path(data.root)
    candidates = sorted(root.glob(CHEXPERT_PLUS_GLOB))
    if not candidates:
        raise LeadrrgError(
            f"{root} has no {CHEXPERT_PLUS_GLOB}; a chexpert_plus data root holds CheXpert Plus's report CSV"
        )
    path = candidates[-1]  # the newest release (names end in a yymmdd date)
    studies: dict[str, dict[str, Any]] = {}
    columns, rows = read_csv_table(path, read_text(path, "CheXpert Plus CSV", "CheXpert Plus's report CSV"))
    missing = [c for c in CHEXPERT_PLUS_COLUMNS if c not in columns]
    if missing:
        raise LeadrrgError(
            f"{path} lacks columns {missing}; expected CheXpert Plus columns {list(CHEXPERT_PLUS_COLUMNS)}"
        )
    resolve = None
    for line, row in rows:
        image = (row["path_to_image"] or "").strip()
        if not image or not row["split"]:
            raise _bad(path, f"line {line}", "empty path_to_image or split", "both set")
        resolve = resolve or _chexpert_plus_image_resolver(root, image)
        study_id = str(Path(image).parent)
        study = studies.setdefault(
            study_id, {"split": row["split"].strip(), "images": [], "findings": "", "impression": ""}
        )
        frontal = (row.get("frontal_lateral") or "").strip().lower() != "lateral"
        resolved = resolve(image)
        check_inside_root(Path(resolved), data, f"{path}: line {line}", image)
        study["images"].append((not frontal, image, resolved))
        study["findings"] = study["findings"] or (row["section_findings"] or "").strip()
        study["impression"] = study["impression"] or (row["section_impression"] or "").strip()
    records = []
    for study_id, study in studies.items():
        views = sorted(study["images"])  # frontal views first, then by name
        records.append(
            Record(
                study_id,
                study["split"],
                [v[2] for v in views],
                study["findings"],
                study["impression"],
                label_key=views[0][1],
            )
        )
    if data.label_file:
        label_path = _label_path(root, data.label_file)
    else:
        name = {"findings": "findings", "impression": "impression", "both": "report"}[data.section]
        label_path = root / CHEXPERT_PLUS_LABEL_DIR / f"{name}_fixed.json"
    if data.label_file or label_path.is_file():
        _join_labels(records, label_path, "path_to_image")
    return records


FORMATS.add("chexpert_plus", _read_chexpert_plus)
