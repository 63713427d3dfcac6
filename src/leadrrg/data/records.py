"""The types every data-set reader shares (a leaf module: readers and the dispatcher import it, it imports
neither), and the path checks they all apply to the image paths a data file names."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from leadrrg.config import DataConfig
from leadrrg.errors import LeadrrgError


@dataclass
class Study:
    """One study: its views (absolute paths), its target report (section chosen, cleaned) and its
    labels ((14,) float32 with 1/0/-1/NaN in `constants.OBSERVATIONS` order, or None if unknown)."""

    id: str
    split: str
    images: list[str]
    report: str
    labels: np.ndarray | None = None
    # The image's findings with their attributes when the data set knows them (SynthCXR's manifest `findings`:
    # {observation: {"side", "severity", ...}}), the truth attribute metrics score reports against.
    attributes: dict | None = None


@dataclass
class Record:
    """A study as a format reader found it: both sections raw, before section choice and cleaning."""

    id: str
    split: str  # canonical split name (`splits.canonical_split`): train, val, test, or the name as stored
    images: list[str]
    findings: str
    impression: str
    labels: np.ndarray | None = None
    label_key: str = ""  # joins an external label file: MIMIC study_id, CheXpert Plus first image; else id
    stored_split: str | None = None  # the split name as the data file spells it (None: same as `split`)
    attributes: dict | None = None  # the image's findings with their attributes (`Study.attributes`)
    group: str = ""  # the study this record belongs to when records are per image (MIMIC study_id); else id


@dataclass
class ReadResult:
    """Every record of a data root and what a user should know about how it was read (`data check` prints
    `notes` as information and `warnings` as things to look at)."""

    records: list[Record]
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class LoadResult:
    studies: list[Study]
    split: str  # the canonical split name (e.g. "val" for CheXpert Plus's "valid")
    skipped_empty: int  # studies skipped because their chosen report section is empty
    available_splits: list[str]


def bad_entry(path: Path, where: str, problem: str, expected: str) -> LeadrrgError:
    return LeadrrgError(f"{path}: {where}: {problem}; expected {expected}")


def resolve_image_path(base: Path, relative: str, data: DataConfig, where: str) -> str:
    """The absolute path of an image named in a data file (relative to `base`), symlinks followed; refused when it
    lies outside the data root unless `data.allow_outside_root`. (Strings, not `Path`s: a root names hundreds of
    thousands of images.)"""
    resolved = real_path(relative if os.path.isabs(relative) else os.path.join(base, relative))
    if not data.allow_outside_root:
        root = _real_root(data.root)
        if resolved != root and not resolved.startswith(root.rstrip(os.sep) + os.sep):
            check_inside_root(Path(resolved), data, where, relative)
    return resolved


def real_path(path: str) -> str:
    """`str(Path(path).resolve())`, with the folders' resolution cached (`_real_folder`): a data root names
    hundreds of thousands of images in a few thousand folders, and resolving each path anew costs one `lstat` per
    path component. Any symlink met is resolved by `Path.resolve` itself (same result, same loop error)."""
    if not os.path.isabs(path):
        path = os.path.join(os.getcwd(), path)
    folder, name = os.path.split(path)
    if name in ("", ".", "..") or folder == path:
        return str(Path(path).resolve())
    joined = os.path.join(_real_folder(folder), name)
    return str(Path(joined).resolve()) if os.path.islink(joined) else joined


@functools.lru_cache(maxsize=1 << 16)
def _real_folder(folder: str) -> str:
    parent, name = os.path.split(folder)
    if name in ("", ".", "..") or parent == folder:
        return str(Path(folder).resolve())
    joined = os.path.join(_real_folder(parent), name)
    return str(Path(joined).resolve()) if os.path.islink(joined) else joined


def check_inside_root(resolved: Path, data: DataConfig, where: str, named: str) -> None:
    root = _resolved_root(data.root)
    if not data.allow_outside_root and not resolved.is_relative_to(root):
        raise LeadrrgError(
            f"{where}: image path {named!r} resolves to {resolved}, outside the data root {root}; expected images "
            "inside the data root (set data.allow_outside_root=true to accept it)"
        )


def _resolved_root(root: str) -> Path:
    return Path(_real_root(root))


@functools.lru_cache(maxsize=16)
def _real_root(root: str) -> str:
    return real_path(root)


def forget_resolved_paths() -> None:
    """Drop the cached folder resolutions (a reader calls it before reading a root: symlinks may have changed)."""
    _real_folder.cache_clear()
    _real_root.cache_clear()


def data_file(root: Path, name: str) -> Path:
    """A file the user named (absolute, relative to the working directory, or relative to the data root)."""
    path = Path(name)
    return path if path.is_absolute() or path.exists() else root / path
