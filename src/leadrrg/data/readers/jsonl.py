"""The `jsonl` / `synth` layout: `ROOT/manifest.jsonl`, one JSON study per line: `id`, `split`, `images` (paths
relative to ROOT), `report` (or string `findings` / `impression`), optional `labels` (14 numbers in
`constants.OBSERVATIONS` order, null for not mentioned, or an object observation -> value, in
`DataConfig.label_codes`); optionally a label file joined by `id`."""

from __future__ import annotations

from pathlib import Path

from leadrrg.config import DataConfig
from leadrrg.data.label_files import parse_labels
from leadrrg.data.readers._labels import ambiguous_coding_warning, apply_label_file, raw_values
from leadrrg.data.records import ReadResult, Record, bad_entry, data_file, resolve_image_path
from leadrrg.data.splits import name_splits
from leadrrg.io import json_objects, read_text

MANIFEST_NAME = "manifest.jsonl"
EXPECTED = 'an object with "id", "split", "images" (list of paths), "report" (or "findings"/"impression")'


def read_manifest(data: DataConfig) -> ReadResult:
    from leadrrg.data.text import split_findings_impression

    root = Path(data.root)
    path = root / MANIFEST_NAME
    content = read_text(
        path, "manifest", f"{MANIFEST_NAME} (one JSON study per line) in a {data.format} data root"
    )
    records: list[Record] = []
    label_values: set = set()
    for line, entry in json_objects(path, content, EXPECTED):
        where = f"line {line}"
        for key in ("id", "split", "images"):
            if key not in entry:
                raise bad_entry(path, where, f"key {key!r} is missing", EXPECTED)
        if not isinstance(entry["id"], (str, int)) or not isinstance(entry["split"], str):
            raise bad_entry(path, where, "id or split has the wrong type", "a string id and split")
        images = entry["images"]
        if isinstance(images, str):
            images = [images]
        if not isinstance(images, list) or not images or not all(isinstance(p, str) for p in images):
            raise bad_entry(path, where, f"images is {images!r}", "a non-empty list of image paths")
        # String `findings` / `impression` keys give the sections; otherwise `report` is split at its headers
        # (no headers: all findings). Non-string values (SynthCXR's structured `findings`) are metadata.
        sections = {k: entry[k] for k in ("findings", "impression") if isinstance(entry.get(k), str)}
        if "report" in entry and not isinstance(entry["report"], str):
            raise bad_entry(path, where, f"report is {type(entry['report']).__name__}", "a string")
        if sections:
            findings, impression = sections.get("findings", ""), sections.get("impression", "")
        elif "report" in entry:
            findings, impression = split_findings_impression(entry["report"])
        else:
            raise bad_entry(path, where, "key 'report' is missing", EXPECTED)
        label_values.update(raw_values(entry.get("labels")))
        labels = parse_labels(entry.get("labels"), f"{path} {where}", data.label_codes)
        resolved = [resolve_image_path(root, p, data, f"{path} {where}") for p in images]
        record = Record(str(entry["id"]), entry["split"], resolved, findings or "", impression or "", labels)
        if isinstance(entry.get("findings"), dict):  # SynthCXR: the image's findings with side and severity
            record.attributes = entry["findings"]
        records.append(record)
    names, notes, warnings = name_splits(sorted({r.split for r in records}), str(path))
    for record in records:
        record.split, record.stored_split = names[record.split], record.split
    result = ReadResult(records, notes, warnings)
    warning = ambiguous_coding_warning(label_values, str(path), data.label_codes)
    if warning and data.format != "synth":  # SynthCXR writes its own labels in CheXpert codes
        result.warnings.append(warning)
    if data.label_file:
        apply_label_file(result, data, data_file(root, data.label_file), "id")
    return result
