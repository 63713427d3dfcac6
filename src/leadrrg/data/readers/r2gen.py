"""R2Gen's `annotation.json` (IU X-Ray and MIMIC-CXR as R2Gen and its successors ship them), and the `iu_xray`
reader.

The file is {split: [entry, ...]} with entries {`id`, `report`, `image_path`: [paths relative to ROOT/images],
...}; also read: a list of entries that each carry `split`; ids that are numbers; a `labels` field per entry
(PromptMRG; coded as `DataConfig.label_codes` says); another file name (`DataConfig.annotation_file`, or the one
`*annotation*.json` in ROOT, e.g. PromptMRG's `iu_annotation_promptmrg.json`). Image paths are taken relative to
the first of ROOT/images, ROOT/files (PhysioNet's MIMIC-CXR-JPG) and ROOT that holds the first entries' images.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leadrrg.config import DataConfig
from leadrrg.data.label_files import parse_labels
from leadrrg.data.readers._labels import ambiguous_coding_warning, apply_label_file, raw_values
from leadrrg.data.readers.study_json import (
    SECTIONS_KEY,
    conversation_splits,
    is_conversations,
    is_study_keyed,
    split_of_name,
    study_keyed_splits,
)
from leadrrg.data.records import ReadResult, Record, bad_entry, data_file, resolve_image_path
from leadrrg.data.splits import name_splits
from leadrrg.errors import LeadrrgError
from leadrrg.io import json_value, read_text

ANNOTATION_NAME = "annotation.json"
IMAGE_DIRS = ("images", "files", "")  # R2Gen's folder, PhysioNet's, the root itself
PROBE_ENTRIES = 20  # entries whose first image decides the image folder
# What else `--format X` reads when ROOT has no annotation file (readers.releases), named in the error.
OTHER_LAYOUTS = {
    "iu_xray": "; Open-i's ecgen-radiology/*.xml and Kaggle's indiana_reports.csv are recognised as well",
    "mimic_cxr": "; PhysioNet's mimic-cxr-2.0.0-split.csv(.gz) with files/ is recognised as well",
}
ENTRY = 'an object {"id": str, "report": str, "image_path": [paths relative to images/]}'


@dataclass
class Entry:
    """One annotation entry, checked: where it is (for messages), its fields and its raw JSON object."""

    where: str
    split: str  # canonical
    stored_split: str
    id: str
    report: str
    images: list[str]  # as named in the file
    raw: dict[str, Any]
    sections: tuple[str, str] | None = None  # (findings, impression) when the file gives them apart (ReXrank)


@dataclass
class Annotation:
    path: Path
    entries: list[Entry]
    image_base: Path
    result: ReadResult  # notes and warnings so far (records are filled by the reader)
    label_values: set


def annotation_paths(data: DataConfig) -> list[Path]:
    """The annotation file, or the files `data.annotation_file` names separated by commas (`train.json,test.json`)."""
    if data.annotation_file and "," in data.annotation_file:
        root = Path(data.root)
        return [data_file(root, name.strip()) for name in data.annotation_file.split(",") if name.strip()]
    return [annotation_path(data)]


def annotation_path(data: DataConfig) -> Path:
    root = Path(data.root)
    if data.annotation_file:
        return data_file(root, data.annotation_file)
    default = root / ANNOTATION_NAME
    if not default.exists():
        others = sorted(root.glob("*annotation*.json"))
        if len(others) == 1:
            return others[0]
    return default


def read_annotation(data: DataConfig) -> Annotation:
    """Parse and check an R2Gen annotation file (or several, one per split); pick the image folder."""
    root = Path(data.root)
    paths = annotation_paths(data)
    splits: dict[str, list] = {}
    layouts = []
    for path in paths:
        text = read_text(
            path,
            "annotation file",
            f"R2Gen's {ANNOTATION_NAME} beside an images/ folder in a {data.format} data root "
            f"(or name another file with data.annotation_file){OTHER_LAYOUTS.get(data.format, '')}",
        )
        annotation = json_value(text, str(path), "R2Gen's annotation.json")
        layout, found = _entries_by_split(path, annotation)
        layouts.append(f"{path.name}: {layout}")
        for stored, items in found.items():
            splits.setdefault(stored, []).extend(items)
    path = paths[0]
    where = ", ".join(str(p) for p in paths)
    names, notes, warnings = name_splits(list(splits), where)
    result = ReadResult([], [f"read {'; '.join(layouts)}"] + notes, warnings)
    entries: list[Entry] = []
    label_values: set = set()
    for stored, items in splits.items():
        for index, item in enumerate(items):
            entry = _check_entry(path if len(paths) == 1 else Path(where), stored, index, item)
            entry.split = names[stored]
            entry.sections = item.get(SECTIONS_KEY)
            label_values.update(raw_values(item.get("labels")))
            entries.append(entry)
    base = _image_base(root, entries)
    if base != root / IMAGE_DIRS[0]:
        result.notes.append(f"image paths in {path.name} are read relative to {base}")
    return Annotation(path, entries, base, result, label_values)


def _entries_by_split(path: Path, annotation: Any) -> tuple[str, dict[str, list]]:
    """(the layout recognised, {split name as stored: [entry]}) of one annotation file."""
    if isinstance(annotation, dict) and all(isinstance(v, list) for v in annotation.values()):
        return "R2Gen {split: [entries]}", annotation
    if is_study_keyed(annotation):
        return "study-keyed JSON (ReXrank: section_findings / section_impression)", study_keyed_splits(
            path, annotation
        )
    if is_conversations(annotation):
        return "LLaVA conversations (the gpt turn is the report)", conversation_splits(path, annotation)
    if isinstance(annotation, list):
        without = sum(1 for e in annotation if not (isinstance(e, dict) and isinstance(e.get("split"), str)))
        if without and split_of_name(path.stem):
            return f"a list of entries, split {path.stem!r} from the file name", {path.stem: annotation}
        if without:
            raise LeadrrgError(
                f"{path} is a list of {len(annotation)} entries and {without} of them name no split (as PromptMRG's "
                'IU X-Ray test file); expected R2Gen\'s {"train": [...], "val": [...], "test": [...]} or a "split" '
                'key in every entry (for a test-only list, write it as {"test": [...]})'
            )
        splits: dict[str, list] = {}
        for entry in annotation:
            splits.setdefault(entry["split"], []).append(entry)
        return "a list of entries with 'split'", splits
    raise LeadrrgError(
        f"{path} is not an object of split name -> list of entries; expected R2Gen's annotation.json or a "
        "study-keyed JSON ({study_id: {image_path, section_findings, ...}}, ReXrank's layout)"
    )


def _check_entry(path: Path, split: str, index: int, entry: Any) -> Entry:
    where = f"entry {index} of split {split!r}"
    if not isinstance(entry, dict):
        raise bad_entry(path, where, f"a {type(entry).__name__}", ENTRY)
    if isinstance(entry.get("id"), (str, int)) and not isinstance(entry.get("id"), bool):
        where += f" (id {entry['id']!r})"
    for key in ("id", "report", "image_path"):
        if key not in entry:
            raise bad_entry(path, where, f"key {key!r} is missing", ENTRY)
    if not isinstance(entry["id"], (str, int)) or isinstance(entry["id"], bool):
        raise bad_entry(path, where, f"id is {entry['id']!r}", "a string or integer id")
    if not isinstance(entry["report"], str):
        raise bad_entry(path, where, f"report is {type(entry['report']).__name__}", "a string")
    images = entry["image_path"]
    if isinstance(images, str):
        images = [images]
    if not isinstance(images, list) or not images or not all(isinstance(p, str) for p in images):
        raise bad_entry(
            path, where, f"image_path is {images!r}", "a non-empty list of paths relative to images/"
        )
    return Entry(f"{path} {where}", split, split, str(entry["id"]), entry["report"], images, entry)


def _image_base(root: Path, entries: list[Entry]) -> Path:
    """The first folder of `IMAGE_DIRS` under which one of the first entries' images exists (default images/)."""
    for entry in entries[:PROBE_ENTRIES]:
        for name in IMAGE_DIRS:
            if (root / name / entry.images[0]).is_file():
                return root / name if name else root
    return root / IMAGE_DIRS[0]


def entry_record(entry: Entry, base: Path, data: DataConfig) -> Record:
    """A record for one entry: sections split at their headers (R2Gen's reports have none: all findings)."""
    findings, impression = entry.sections or _sections(entry.report)
    labels = parse_labels(entry.raw.get("labels"), entry.where, data.label_codes)
    images = [resolve_image_path(base, p, data, entry.where) for p in entry.images]
    return Record(
        entry.id, entry.split, images, findings, impression, labels, stored_split=entry.stored_split
    )


@functools.lru_cache(maxsize=256)
def _sections(report: str) -> tuple[str, str]:
    """`split_findings_impression`, remembered for the last reports: MIMIC entries of one study follow each other
    and share their report, which is then split once and held once."""
    from leadrrg.data.text import split_findings_impression

    return split_findings_impression(report)


def finish(annotation: Annotation, data: DataConfig) -> None:
    """The warnings every R2Gen reader adds once its records are made."""
    warning = ambiguous_coding_warning(annotation.label_values, str(annotation.path), data.label_codes)
    if warning:
        annotation.result.warnings.append(warning)


def read_iu_xray(data: DataConfig) -> ReadResult:
    annotation = read_annotation(data)
    result = annotation.result
    result.records = [entry_record(entry, annotation.image_base, data) for entry in annotation.entries]
    finish(annotation, data)
    if data.label_file:
        apply_label_file(result, data, data_file(Path(data.root), data.label_file), "id")
    return result
