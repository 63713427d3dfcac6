"""MIMIC-CXR as PhysioNet ships it (no R2Gen file), read by `--format mimic_cxr` when the root has no annotation
file but MIMIC-CXR-JPG's split file:

    ROOT/mimic-cxr-2.0.0-split.csv.gz        dicom_id,study_id,subject_id,split  (train | validate | test)
    ROOT/mimic-cxr-2.0.0-metadata.csv.gz     dicom_id,subject_id,study_id,...,ViewPosition,...  (optional)
    ROOT/mimic-cxr-2.0.0-chexpert.csv.gz     labels by study_id (optional, `readers.mimic_cxr`)
    ROOT/files/p10/p10000032/s50414267/<dicom_id>.jpg     MIMIC-CXR-JPG's images
    ROOT/files/p10/p10000032/s50414267.txt                MIMIC-CXR's free-text reports (mimic-cxr-reports.zip), or
    ROOT/mimic_cxr_sectioned.csv                          MIT-LCP's create_section_files.py output
                                                          (study,impression,findings,last_paragraph,comparison)

The `.csv` files are read gzipped or not. An entry is one image of the split file; `data.grouping` groups them
by study_id as for R2Gen's file. A free-text report is split at its FINDINGS / IMPRESSION headers (the sectioned
CSV, when present, is used instead). ViewPosition puts the frontal views (PA, AP) of a study first. Studies with
no report are left out and counted.
"""

from __future__ import annotations

from pathlib import Path

from leadrrg.config import DataConfig
from leadrrg.data.label_files import normalise_key
from leadrrg.data.records import ReadResult, Record, resolve_image_path
from leadrrg.data.splits import name_splits
from leadrrg.data.text import split_findings_impression
from leadrrg.errors import LeadrrgError
from leadrrg.io import read_csv_table, read_text_maybe_gzip

SPLIT_NAMES = ("mimic-cxr-2.0.0-split.csv.gz", "mimic-cxr-2.0.0-split.csv")
METADATA_NAMES = ("mimic-cxr-2.0.0-metadata.csv.gz", "mimic-cxr-2.0.0-metadata.csv")
SECTIONED = "mimic_cxr_sectioned.csv"
SPLIT_COLUMNS = ("dicom_id", "study_id", "subject_id", "split")
REPORT_DIRS = ("files", "mimic-cxr-reports/files", "")
IMAGE_DIRS = ("files", "images", "")
FRONTAL = ("PA", "AP", "AP AXIAL", "PA LLD", "AP LLD", "PA RLD", "AP RLD")


def first_file(root: Path, names: tuple[str, ...]) -> Path | None:
    return next((root / name for name in names if (root / name).is_file()), None)


def is_physionet_root(root: Path) -> bool:
    return first_file(root, SPLIT_NAMES) is not None


def _csv(path: Path, columns: tuple[str, ...], expected: str) -> list[dict]:
    header, rows = read_csv_table(path, read_text_maybe_gzip(path, "CSV", expected))
    missing = [c for c in columns if c not in header]
    if missing:
        raise LeadrrgError(f"{path} lacks columns {missing} (has {header[:12]}); expected {expected}")
    return [row for _, row in rows]


def _relative(subject: str, study: str) -> str:
    return f"p{subject[:2]}/p{subject}/s{study}"


def _reports(root: Path, studies: dict[str, str]) -> tuple[dict[str, tuple[str, str]], str]:
    """{study_id: (findings, impression)} and where they came from, for the `studies` {study_id: subject_id}."""
    sectioned = root / SECTIONED
    if sectioned.is_file():
        rows = _csv(sectioned, ("study", "findings", "impression"), f"MIT-LCP's {SECTIONED}")
        table = {normalise_key(r["study"]): (r["findings"].strip(), r["impression"].strip()) for r in rows}
        return table, f"{sectioned} (findings, impression columns)"
    probes = [f"{_relative(subject, study)}.txt" for study, subject in list(studies.items())[:50]]
    folder = next((root / d for d in REPORT_DIRS if any((root / d / p).is_file() for p in probes)), None)
    if folder is None:
        raise LeadrrgError(
            f"{root} has neither {SECTIONED} nor the free-text reports files/p1X/p<subject>/s<study>.txt of the split "
            "file's studies; expected MIMIC-CXR's reports (mimic-cxr-reports.zip unpacked into ROOT) or MIT-LCP's "
            f"{SECTIONED}"
        )
    table = {}
    for study, subject in studies.items():
        path = folder / f"{_relative(subject, study)}.txt"
        if path.is_file():
            table[study] = split_findings_impression(
                read_text_maybe_gzip(path, "report", "a MIMIC-CXR report")
            )
    return table, f"{folder}/p1X/p<subject>/s<study>.txt (split at FINDINGS / IMPRESSION)"


def _view_ranks(root: Path) -> tuple[dict[str, int], Path | None]:
    path = first_file(root, METADATA_NAMES)
    if path is None:
        return {}, None
    rows = _csv(path, ("dicom_id", "ViewPosition"), "MIMIC-CXR-JPG's metadata CSV")
    return {r["dicom_id"].strip(): int(r["ViewPosition"].strip().upper() not in FRONTAL) for r in rows}, path


def read_physionet_entries(data: DataConfig) -> tuple[list[Record], ReadResult, Path]:
    """One record per image of the split file (id dicom_id, group and label_key study_id), frontal views of a
    study first; the notes say which files were read."""
    root = Path(data.root)
    split_path = first_file(root, SPLIT_NAMES)
    assert split_path is not None
    rows = _csv(split_path, SPLIT_COLUMNS, "MIMIC-CXR-JPG's split file (dicom_id,study_id,subject_id,split)")
    names, notes, warnings = name_splits(sorted({r["split"] for r in rows}), str(split_path))
    result = ReadResult([], notes, warnings)
    studies = {normalise_key(r["study_id"]): normalise_key(r["subject_id"]) for r in rows}
    reports, source = _reports(root, studies)
    ranks, metadata = _view_ranks(root)
    probes = [_relative(*_ids(row)[::-1]) for row in rows[:50]]
    base = next(
        (root / d for d in IMAGE_DIRS if any((root / d / p).is_dir() for p in probes)), root / "files"
    )
    order = {study: index for index, study in enumerate(studies)}
    records, missing = [], set()
    for row in sorted(
        rows, key=lambda r: (order[normalise_key(r["study_id"])], ranks.get(r["dicom_id"].strip(), 0))
    ):
        study, subject = _ids(row)
        if study not in reports:
            missing.add(study)
            continue
        dicom = row["dicom_id"].strip()
        image = resolve_image_path(
            base, f"{_relative(subject, study)}/{dicom}.jpg", data, f"{split_path} {dicom}"
        )
        record = Record(dicom, names[row["split"]], [image], *reports[study], stored_split=row["split"])
        record.group = record.label_key = study
        records.append(record)
    result.notes.append(
        f"recognised MIMIC-CXR as PhysioNet ships it: splits from {split_path.name}, reports from {source}, images "
        f"{base}/p1X/p<subject>/s<study>/<dicom_id>.jpg"
        + (f", frontal views first by ViewPosition ({metadata.name})" if metadata else "")
    )
    if missing:
        result.notes.append(f"{len(missing)} studies of the split file have no report and are left out")
    return records, result, split_path


def _ids(row: dict) -> tuple[str, str]:
    return normalise_key(row["study_id"]), normalise_key(row["subject_id"])
