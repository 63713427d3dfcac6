"""The `chexpert_plus` layout (Stanford AIMI / Redivis release).

`ROOT/df_chexpert_plus_*.csv`: one row per image (`path_to_image`, `split`, `section_findings`,
`section_impression`, optional `frontal_lateral`); images are grouped into studies by their folder
(`train/patient00001/study1`), frontal views first. The CSV names `.jpg` files; the PNG release holds them as
`.png` under `PNG/` (or `PNG/PNG/` as the archive unpacks); the first layout that holds the CSV's images is
used. The release has `train` and `valid` splits only (`valid` is read as `val`; there is no `test`).

Labels: `DataConfig.label_file`, else `{chexbert_labels,labels}/{findings,impression,report}_fixed.json` (JSON
lines keyed by `path_to_image`; the file matching `DataConfig.section`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from leadrrg.config import DataConfig
from leadrrg.data.readers._labels import apply_label_file
from leadrrg.data.records import ReadResult, Record, bad_entry, check_inside_root, data_file
from leadrrg.data.splits import name_splits
from leadrrg.errors import LeadrrgError
from leadrrg.io import read_csv_table, read_text

CSV_GLOB = "df_chexpert_plus_*.csv"
COLUMNS = ("path_to_image", "split", "section_findings", "section_impression")
LABEL_DIRS = ("chexbert_labels", "labels", "labels/chexbert_labels")
SECTION_LABELS = {"findings": "findings", "impression": "impression", "both": "report"}
# (folder under ROOT, suffix replacing the CSV's .jpg or None): where the images of each release lie.
IMAGE_LAYOUTS: tuple[tuple[str, str | None], ...] = (
    ("", None),
    ("PNG", ".png"),
    ("PNG/PNG", ".png"),
    ("", ".png"),
)
PROBE_IMAGES = 20


def image_resolver(root: Path, named: list[str]) -> tuple[Callable[[str], str], str | None]:
    """A function CSV name -> absolute image path, for the first layout holding one of the first images; and a
    note naming the layout when it is not the CSV's own."""
    for folder, suffix in IMAGE_LAYOUTS:
        base = root / folder if folder else root
        if any(_path(base, name, suffix).is_file() for name in named[:PROBE_IMAGES]):
            note = None
            if folder or suffix:
                note = f"images read from {base}" + (" with the CSV's .jpg names as .png" if suffix else "")
            return _resolver(base, suffix), note
    return _resolver(root, None), None


def _resolver(base: Path, suffix: str | None) -> Callable[[str], str]:
    return lambda name: str(_path(base, name, suffix).resolve())


def _path(base: Path, name: str, suffix: str | None) -> Path:
    return base / (Path(name).with_suffix(suffix) if suffix else Path(name))


def read_chexpert_plus(data: DataConfig) -> ReadResult:
    root = Path(data.root)
    candidates = sorted(root.glob(CSV_GLOB))
    if not candidates:
        raise LeadrrgError(
            f"{root} has no {CSV_GLOB}; a chexpert_plus data root holds CheXpert Plus's report CSV"
        )
    path = candidates[-1]  # the newest release (names end in a yymmdd date)
    columns, rows = read_csv_table(path, read_text(path, "CheXpert Plus CSV", "CheXpert Plus's report CSV"))
    missing = [c for c in COLUMNS if c not in columns]
    if missing:
        raise LeadrrgError(f"{path} lacks columns {missing}; expected CheXpert Plus columns {list(COLUMNS)}")
    for line, row in rows:
        if not (row["path_to_image"] or "").strip() or not (row["split"] or "").strip():
            raise bad_entry(path, f"line {line}", "empty path_to_image or split", "both set")
    names, notes, warnings = name_splits(sorted({row["split"] for _, row in rows}), str(path))
    result = ReadResult([], notes, warnings)
    resolve, note = image_resolver(root, [row["path_to_image"].strip() for _, row in rows])
    if note:
        result.notes.append(note)
    studies: dict[str, dict[str, Any]] = {}
    for line, row in rows:
        image = row["path_to_image"].strip()
        study = studies.setdefault(
            str(Path(image).parent),
            {"split": row["split"], "images": [], "findings": "", "impression": ""},
        )
        if row["split"] != study["split"]:
            raise bad_entry(
                path,
                f"line {line}",
                f"split {row['split']!r} for an image of a {study['split']!r} study",
                "one split per study",
            )
        frontal = (row.get("frontal_lateral") or "").strip().lower() != "lateral"
        resolved = resolve(image)
        check_inside_root(Path(resolved), data, f"{path}: line {line}", image)
        study["images"].append((not frontal, image, resolved))
        study["findings"] = study["findings"] or (row["section_findings"] or "").strip()
        study["impression"] = study["impression"] or (row["section_impression"] or "").strip()
    for study_id, study in studies.items():
        views = sorted(study["images"])  # frontal views first, then by name
        result.records.append(
            Record(
                study_id,
                names[study["split"]],
                [view[2] for view in views],
                study["findings"],
                study["impression"],
                label_key=views[0][1],
                stored_split=study["split"],
            )
        )
    label_path = data_file(root, data.label_file) if data.label_file else _default_labels(root, data.section)
    if label_path is not None:
        apply_label_file(result, data, label_path, "path_to_image")
    return result


def _default_labels(root: Path, section: str) -> Path | None:
    name = f"{SECTION_LABELS[section]}_fixed.json"
    return next((root / d / name for d in LABEL_DIRS if (root / d / name).is_file()), None)
