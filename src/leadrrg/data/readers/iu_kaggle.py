"""Kaggle's "Chest X-rays (Indiana University)" (raddar), read by `--format iu_xray` when the root has no annotation
file but its two CSVs:

    ROOT/indiana_reports.csv       uid,MeSH,Problems,image,indication,comparison,findings,impression
    ROOT/indiana_projections.csv   uid,filename,projection          (projection: Frontal | Lateral)
    ROOT/images/images_normalized/1_IM-0001-4001.dcm.png ...    (also ROOT/images_normalized/ or ROOT/images/)

A study is one `uid` (id `CXR<uid>`, Open-i's), its views the projection rows of that uid, frontal first. Studies
without a projection row are left out and counted. No split ships: `data.split_file`, else 70 / 10 / 20 % by a
hash of the id (as Open-i's, so the same study lands in the same split in both releases).
"""

from __future__ import annotations

from pathlib import Path

from leadrrg.config import DataConfig
from leadrrg.data.readers._labels import apply_label_file
from leadrrg.data.records import ReadResult, Record, bad_entry, data_file, resolve_image_path
from leadrrg.data.splits import hash_split, no_split_warning
from leadrrg.errors import LeadrrgError
from leadrrg.io import read_csv_table, read_text

REPORTS = "indiana_reports.csv"
PROJECTIONS = "indiana_projections.csv"
REPORT_COLUMNS = ("uid", "findings", "impression")
PROJECTION_COLUMNS = ("uid", "filename", "projection")
IMAGE_DIRS = ("images/images_normalized", "images_normalized", "images", "")
PROBE = 50


def is_kaggle_root(root: Path) -> bool:
    return (root / REPORTS).is_file()


def _table(path: Path, columns: tuple[str, ...]) -> list[tuple[int, dict]]:
    expected = f"Kaggle IU X-Ray's {path.name} with columns {', '.join(columns)}"
    header, rows = read_csv_table(path, read_text(path, "CSV", expected))
    missing = [c for c in columns if c not in header]
    if missing:
        raise LeadrrgError(f"{path} lacks columns {missing} (has {header[:10]}); expected {expected}")
    return rows


def _image_dir(root: Path, names: list[str]) -> Path:
    for name in IMAGE_DIRS:
        base = root / name if name else root
        if any((base / n).is_file() for n in names[:PROBE]):
            return base
    return root / IMAGE_DIRS[0]


def read_iu_kaggle(data: DataConfig) -> ReadResult:
    root = Path(data.root)
    reports = _table(root / REPORTS, REPORT_COLUMNS)
    projections_path = root / PROJECTIONS
    views: dict[str, list[tuple[bool, str]]] = {}
    for line, row in _table(projections_path, PROJECTION_COLUMNS):
        if not row["filename"].strip():
            raise bad_entry(projections_path, f"line {line}", "empty filename", "an image file name")
        frontal = row["projection"].strip().lower() != "lateral"
        views.setdefault(row["uid"].strip(), []).append((not frontal, row["filename"].strip()))
    base = _image_dir(root, [name for items in views.values() for _, name in items])
    result = ReadResult([])
    without = 0
    for _, row in reports:
        uid = row["uid"].strip()
        if uid not in views:
            without += 1
            continue
        where = f"{projections_path} uid {uid}"
        images = [resolve_image_path(base, name, data, where) for _, name in sorted(views[uid])]
        study = f"CXR{uid}"
        record = Record(study, hash_split(study), images, row["findings"].strip(), row["impression"].strip())
        record.label_key = uid
        result.records.append(record)
    result.notes.append(
        f"recognised Kaggle's IU X-Ray CSV pair: {len(reports)} rows of {REPORTS} joined by uid to {PROJECTIONS}, "
        f"images in {base}; study id CXR<uid>, findings / impression columns, frontal views first"
    )
    if without:
        result.notes.append(f"{without} reports have no row in {PROJECTIONS} (no image) and are left out")
    if not data.split_file:
        result.warnings.append(no_split_warning("this release", "id"))
    if data.label_file:
        apply_label_file(result, data, data_file(root, data.label_file), "uid")
    return result
