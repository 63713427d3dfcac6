"""Split names as real data sets spell them, mapped to the three that training and evaluation ask for.

MIMIC-CXR-JPG's split file says `validate`, CheXpert Plus `valid`, R2Gen `val`; a widely copied IU X-Ray
annotation.json names its test split `"    "` (blank). Readers store the canonical name (`train`, `val`,
`test`; any other name as written, stripped) and keep the spelling they found, so `data check` can say what
was mapped.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path

from leadrrg.errors import LeadrrgError
from leadrrg.io import json_value, read_csv_table, read_text_maybe_gzip, strip_gzip_suffix

CANONICAL_SPLITS = ("train", "val", "test")
SPLIT_ALIASES: dict[str, str] = {
    "training": "train",
    "valid": "val",
    "validate": "val",
    "validation": "val",
    "dev": "val",
    "testing": "test",
}


def canonical_split(name: str) -> str:
    """`name` as stored -> the canonical split: train / val / test for those and their aliases (any case,
    surrounding spaces ignored), else the stripped name. A blank name stays "" (see `name_blank_splits`)."""
    key = name.strip()
    return SPLIT_ALIASES.get(key.lower(), key.lower() if key.lower() in CANONICAL_SPLITS else key)


def name_splits(stored: Sequence[str], where: str) -> tuple[dict[str, str], list[str], list[str]]:
    """Canonical names for the split names of one data file; a note per alias mapped (`validate` -> `val`) and a
    warning per blank name read as `test`.

    One blank name is read as `test` when the file has no other test split (the IU X-Ray annotation that
    names it `"    "`); two blank names, or a blank one beside a test split, are refused. Two names that
    map to the same split (`val` and `valid`) are refused too: which is which cannot be guessed."""
    names = {name: canonical_split(name) for name in stored}
    blank = [name for name, canonical in names.items() if not canonical]
    if blank:
        if len(blank) > 1 or "test" in names.values():
            raise LeadrrgError(
                f"{where} has {len(blank)} blank split name(s) {blank!r} beside splits "
                f"{sorted(n for n in names.values() if n)}; expected named splits (train, val, test)"
            )
        names[blank[0]] = "test"
    seen: dict[str, str] = {}
    for name, canonical in names.items():
        if canonical in seen:
            raise LeadrrgError(
                f"{where} has splits {seen[canonical]!r} and {name!r}, which both mean {canonical!r}; "
                "expected one name per split"
            )
        seen[canonical] = name
    notes, warnings = [], []
    for name, canonical in names.items():
        if not name.strip():
            warnings.append(f"split name {name!r} (blank) in {where} is read as {canonical!r}")
        elif name != canonical:
            notes.append(f"split {name!r} in {where} is read as {canonical!r}")
    return names, notes, warnings


def resolve_split(split: str, available: Sequence[str], where: str) -> str:
    """The canonical name of the requested `split` when the data has it; else a LeadrrgError that lists the
    splits there are and, for a missing test split, suggests one."""
    canonical = canonical_split(split)
    if canonical in available:
        return canonical
    message = f"split {split!r} is not in {where}; available splits: {', '.join(available) or '(none)'}"
    if canonical == "test" and "val" in available:
        message += (
            "; this data set has no test split (CheXpert Plus ships train and valid only): give --split val "
            "to evaluate on the validation split (training validates on it too; for an unbiased figure hold "
            "part of train out as a test split)"
        )
    raise LeadrrgError(message)


# --------------------------------------------------------------------------------------------------
# Splits a release does not ship (Open-i, Kaggle IU), and a split file applied to any root

HASH_SPLIT = (("train", 0.7), ("val", 0.1), ("test", 0.2))  # R2Gen's proportions for IU X-Ray
SPLIT_KEY_COLUMNS = ("id", "study_id", "dicom_id", "uid", "study", "image_id")
SPLIT_FILE_EXPECTED = (
    "a split file: CSV / CSV.GZ with a 'split' column beside an id column "
    f"({', '.join(SPLIT_KEY_COLUMNS)}), or JSON {{split: [ids or entries with 'id']}} or {{id: split}}"
)


def no_split_warning(release: str, key: str, published: str = "") -> str:
    """What a reader of a release without a split says when no data.split_file is given (see `hash_split`)."""
    return (
        f"{release} ships no split: studies are split 70 / 10 / 20 % (train / val / test) by a hash of their {key}; "
        f"give data.split_file=FILE{published} for a published split"
    )


def hash_split(key: str) -> str:
    """A fixed split for a study of a release without one: 70 / 10 / 20 % by a hash of its id (the same id always
    lands in the same split, whatever else is in the data)."""
    fraction = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 16**8
    for name, share in HASH_SPLIT:
        if fraction < share:
            return name
        fraction -= share
    return HASH_SPLIT[-1][0]


def read_split_file(path: Path) -> tuple[str, dict[str, str]]:
    """(what the keys are, {key: split name as stored}) of a split file (see SPLIT_FILE_EXPECTED)."""
    text = read_text_maybe_gzip(path, "split file", SPLIT_FILE_EXPECTED)
    if strip_gzip_suffix(path).suffix.lower() in (".csv", ".tsv"):
        delimiter = "\t" if strip_gzip_suffix(path).suffix.lower() == ".tsv" else ","
        columns, rows = read_csv_table(path, text, delimiter)
        key = next((c for c in SPLIT_KEY_COLUMNS if c in columns), None)
        if "split" not in columns or key is None:
            raise LeadrrgError(
                f"split file {path} has columns {columns[:20]}; expected {SPLIT_FILE_EXPECTED}"
            )
        return key, {_key(row[key]): row["split"] for _, row in rows}
    value = json_value(text, f"split file {path}", SPLIT_FILE_EXPECTED)
    if isinstance(value, dict) and value and all(isinstance(v, list) for v in value.values()):
        table = {}
        for split, items in value.items():
            for item in items:
                item = item.get("id") if isinstance(item, dict) else item
                if isinstance(item, (str, int)) and not isinstance(item, bool):
                    table[_key(item)] = split
        return "id", table
    if isinstance(value, dict) and all(isinstance(v, (str, dict)) for v in value.values()):
        table = {_key(k): v if isinstance(v, str) else v.get("split") for k, v in value.items()}
        if all(isinstance(v, str) for v in table.values()):
            return "key", table
    raise LeadrrgError(f"split file {path} is not a split table; expected {SPLIT_FILE_EXPECTED}")


def _key(value) -> str:
    """A study or image key as written in different files: `s50414267` / `50414267` / `50414267.0` alike."""
    text = str(value).strip()
    if text.endswith(".0") and text[:-2].isdigit():
        text = text[:-2]
    return text[1:] if text[:1] == "s" and text[1:].isdigit() else text


def record_keys(record) -> list[str]:
    """The keys a split file may name a record by: its id, study (group), label key, and its images' names (with
    and without the view number: Open-i's `CXR1_1_IM-0001-3001` is R2Gen's `CXR1_1_IM-0001`)."""
    keys = [record.id, record.group, record.label_key]
    for image in record.images:
        stem = Path(image).name.split(".")[0]
        keys += [stem, re.sub(r"-\d+$", "", stem)]
    return [_key(k) for k in dict.fromkeys(keys) if k]


def apply_split_file(records: list, path: Path) -> tuple[list, list[str], list[str]]:
    """`records` with the splits a split file gives them (canonical names), those it does not name left out; notes
    and warnings on what was matched."""
    column, table = read_split_file(path)
    names, notes, warnings = name_splits(sorted(set(table.values())), str(path))
    kept, left_out = [], []
    for record in records:
        stored = next((table[k] for k in record_keys(record) if k in table), None)
        if stored is None:
            left_out.append(record.id)
            continue
        record.split, record.stored_split = names[stored], stored
        kept.append(record)
    notes.append(f"splits from {path} (by {column!r}): {len(kept)} of {len(records)} studies named there")
    if left_out:
        warnings.append(
            f"{len(left_out)} studies are not in the split file {path.name} and are left out (first: {left_out[0]!r})"
        )
    if records and not kept:
        raise LeadrrgError(
            f"split file {path} names none of the {len(records)} studies (first id {records[0].id!r}); expected "
            "the data's study ids, study_id or image names in its key column"
        )
    return kept, notes, warnings
