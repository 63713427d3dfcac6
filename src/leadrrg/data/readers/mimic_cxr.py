"""The `mimic_cxr` layout: R2Gen's MIMIC-CXR `annotation.json` (see `r2gen`), one entry per image with `study_id`
and `subject_id`, images under ROOT/images (R2Gen) or ROOT/files (PhysioNet's MIMIC-CXR-JPG, `p1X/p<subject>/
s<study>/<dicom_id>.jpg`).

`DataConfig.grouping` says what a study is: `entry` (default) keeps R2Gen's per-image entries, as R2Gen and the
papers that follow it evaluate; `study` groups the entries of one `study_id` into one study whose views are
their images (in file order; the model reads the first `model.max_views`).

Labels: `DataConfig.label_file`, else MIMIC-CXR-JPG's `mimic-cxr-2.0.0-chexpert.csv` or `.csv.gz` in ROOT,
joined by `study_id`.
"""

from __future__ import annotations

import re
from pathlib import Path

from leadrrg.config import DataConfig
from leadrrg.data.label_files import normalise_key
from leadrrg.data.readers._labels import apply_label_file
from leadrrg.data.readers.mimic_physionet import is_physionet_root, read_physionet_entries
from leadrrg.data.readers.r2gen import Entry, annotation_path, entry_record, finish, read_annotation
from leadrrg.data.records import ReadResult, Record, data_file
from leadrrg.errors import LeadrrgError

LABEL_NAMES = ("mimic-cxr-2.0.0-chexpert.csv", "mimic-cxr-2.0.0-chexpert.csv.gz")


def study_id(entry: Entry) -> str:
    """The entry's study_id without the `s` prefix: its `study_id` field, else the `s<digits>` folder of its path."""
    value = entry.raw.get("study_id")
    if value is None:
        match = re.search(r"(?:^|/)s(\d+)(?:/|$)", entry.images[0])
        value = match.group(1) if match else None
    if value is None or isinstance(value, (bool, dict, list)):
        raise LeadrrgError(
            f"{entry.where}: no study_id and none in the image path; expected a MIMIC-CXR entry with study_id"
        )
    return normalise_key(str(value).strip().lstrip("s"))


def read_mimic_cxr(data: DataConfig) -> ReadResult:
    root = Path(data.root)
    if not data.annotation_file and not annotation_path(data).exists() and is_physionet_root(root):
        records, result, path = read_physionet_entries(data)
    else:
        annotation = read_annotation(data)
        result, path = annotation.result, annotation.path
        records = []
        for entry in annotation.entries:
            record = entry_record(entry, annotation.image_base, data)
            record.label_key = record.group = study_id(entry)
            records.append(record)
        finish(annotation, data)
    entries = len(records)
    kind = "annotation entries" if path.suffix.lower() == ".json" else "images"
    studies = len({r.group for r in records})
    _warn_split_leaks(records, result, path)
    if data.grouping == "study":
        records = _group_by_study(records, result, path)
        result.notes.append(
            f"{entries} {kind} grouped into {studies} studies by study_id (data.grouping=study)"
        )
    else:
        result.notes.append(
            f"{len(records)} entries (one per image, as R2Gen evaluates) of {studies} studies; "
            "data.grouping=study groups them by study_id"
        )
    result.records = records
    label_path = data_file(root, data.label_file) if data.label_file else _default_labels(root)
    if label_path is not None:
        apply_label_file(result, data, label_path, "study_id")
    return result


def _default_labels(root: Path) -> Path | None:
    return next((root / name for name in LABEL_NAMES if (root / name).is_file()), None)


def _warn_split_leaks(records: list[Record], result: ReadResult, path: Path) -> None:
    splits: dict[str, set[str]] = {}
    for record in records:
        splits.setdefault(record.group, set()).add(record.split)
    leaks = sorted(study for study, names in splits.items() if len(names) > 1)
    if leaks:
        result.warnings.append(
            f"{len(leaks)} studies of {path.name} have entries in more than one split (first: s{leaks[0]} in "
            f"{', '.join(sorted(splits[leaks[0]]))}); a study should lie in one split"
        )


def _group_by_study(records: list[Record], result: ReadResult, path: Path) -> list[Record]:
    """One record per (split, study_id): the images of its entries in file order, the first entry's report."""
    grouped: dict[tuple[str, str], Record] = {}
    differing = 0
    for record in records:
        key = (record.split, record.group)
        study = grouped.get(key)
        if study is None:
            grouped[key] = Record(
                record.group,
                record.split,
                list(record.images),
                record.findings,
                record.impression,
                record.labels,
                label_key=record.label_key,
                stored_split=record.stored_split,
                group=record.group,
            )
            continue
        study.images += [image for image in record.images if image not in study.images]
        differing += (record.findings, record.impression) != (study.findings, study.impression)
    if differing:
        result.warnings.append(
            f"{differing} entries of {path.name} carry another report than the first entry of their study; "
            "the first entry's report is used"
        )
    return list(grouped.values())
