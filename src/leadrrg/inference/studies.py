"""Studies to report on, from a folder, a glob pattern or a CSV file (`leadrrg generate --inputs`); no reports.

- A folder: every image file below it (PNG / JPEG / DICOM by suffix, or a suffix-less file with the DICOM
  magic), grouped by the folder that holds it: the images of `DIR/p10/s5/` are one study with id `p10/s5`. Images
  directly in DIR are one study each, with the file's name (without suffix) as id.
- A glob pattern (`"scans/*/*.png"`, quoted so the shell leaves it): the matching files, grouped the same way
  below the pattern's fixed leading folder.
- A CSV file: one row per image, with a study column (`study_id`, `study` or `id`) and a path column (`path`,
  `image`, `image_path` or `path_to_image`), relative paths resolved against the CSV's folder; or name them with
  `study_column` / `path_column`.

A study's images are in name order (CSV: row order), so name the frontal view first (e.g. `1_frontal.png`).
"""

from __future__ import annotations

import glob
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from leadrrg.data.images import DICOM_SUFFIXES, PIL_SUFFIXES
from leadrrg.errors import LeadrrgError
from leadrrg.io import read_csv_table, read_text

STUDY_COLUMNS = ("study_id", "study", "id")
PATH_COLUMNS = ("path", "image", "image_path", "path_to_image")


@dataclass
class InputStudy:
    id: str
    images: list[str]


def find_studies(
    spec: str, study_column: str | None = None, path_column: str | None = None
) -> list[InputStudy]:
    """A folder, glob pattern or CSV file -> studies in a stable order (see the module docstring)."""
    path = Path(spec).expanduser()
    if path.is_dir():
        studies = group_by_folder(_image_files(sorted(p for p in path.rglob("*") if p.is_file())), path)
        where = f"folder {path}"
    elif path.is_file() and path.suffix.lower() == ".csv":
        studies = read_csv_studies(path, study_column, path_column)
        where = f"CSV file {path}"
    elif glob.has_magic(spec):
        matches = [Path(p) for p in sorted(glob.glob(str(path), recursive=True)) if Path(p).is_file()]
        studies = group_by_folder(_image_files(matches), _fixed_prefix(path))
        where = f"pattern {spec!r}"
    elif path.is_file():
        raise LeadrrgError(
            f"--inputs {spec} is a file but not a .csv; expected a folder, a glob pattern or a CSV file"
        )
    else:
        raise LeadrrgError(f"--inputs {spec} does not exist; expected a folder, a glob pattern or a CSV file")
    if not studies:
        raise LeadrrgError(f"{where} holds no PNG, JPEG or DICOM images")
    return studies


def group_by_folder(files: list[Path], root: Path) -> list[InputStudy]:
    """Studies by folder; a file directly in `root` is a study of its own, its id the name without suffix, or
    with it when that id is taken (`x.png` beside a folder `x/`, or `y.png` beside `y.jpg`): never merged."""
    groups: dict[str, list[str]] = {}
    loose: list[tuple[Path, Path]] = []
    for file in files:
        try:
            relative = file.relative_to(root)
        except ValueError:
            relative = file
        if relative.parent == Path("."):
            loose.append((relative, file))
        else:
            groups.setdefault(relative.parent.as_posix(), []).append(str(file))
    stems = [relative.with_suffix("").as_posix() for relative, _ in loose]
    counts = Counter(stems)
    for (relative, file), stem in zip(loose, stems):
        key = stem if stem not in groups and counts[stem] == 1 else relative.as_posix()
        groups.setdefault(key, []).append(str(file))
    return [InputStudy(key, sorted(paths)) for key, paths in sorted(groups.items())]


def read_csv_studies(path: Path, study_column: str | None, path_column: str | None) -> list[InputStudy]:
    """Strictly: UTF-8 (else the byte and line are named), and an unterminated quote or a row whose field count
    differs from the header's is refused with its line (`io.read_csv_table`), never merged or cut silently."""
    text = read_text(path, "--inputs", "a CSV file with a study and an image path column")
    columns, rows = read_csv_table(path, text)
    study_key = _column(path, columns, study_column, STUDY_COLUMNS, "study")
    path_key = _column(path, columns, path_column, PATH_COLUMNS, "image path")
    groups: dict[str, list[str]] = {}
    for line, row in rows:
        study, image = (row.get(study_key) or "").strip(), (row.get(path_key) or "").strip()
        if not study or not image:
            raise LeadrrgError(f"{path} line {line}: empty {study_key!r} or {path_key!r}; expected both")
        image_path = Path(image).expanduser()
        if not image_path.is_absolute():
            image_path = path.parent / image_path
        groups.setdefault(study, []).append(str(image_path))
    return [InputStudy(study, images) for study, images in groups.items()]


def _column(path: Path, columns: list[str], given: str | None, candidates: tuple[str, ...], what: str) -> str:
    if given:
        if given not in columns:
            raise LeadrrgError(f"{path} has no column {given!r}; its columns are {columns}")
        return given
    for name in candidates:
        if name in columns:
            return name
    raise LeadrrgError(
        f"{path} has no {what} column; expected one of {list(candidates)} (its columns: {columns})"
    )


def _image_files(paths: list[Path]) -> list[Path]:
    keep = []
    for path in paths:
        suffix = path.suffix.lower()
        if suffix in PIL_SUFFIXES or suffix in DICOM_SUFFIXES or not suffix and _has_dicom_magic(path):
            keep.append(path)
    return keep


def _has_dicom_magic(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _fixed_prefix(pattern: Path) -> Path:
    """The leading folders of a glob pattern that hold no wildcard."""
    parts = []
    for part in pattern.parts:
        if glob.has_magic(part):
            break
        parts.append(part)
    return Path(*parts) if parts else Path(".")
