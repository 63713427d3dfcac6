"""Split names as real data sets spell them, mapped to the three that training and evaluation ask for.

MIMIC-CXR-JPG's split file says `validate`, CheXpert Plus `valid`, R2Gen `val`; a widely copied IU X-Ray
annotation.json names its test split `"    "` (blank). Readers store the canonical name (`train`, `val`,
`test`; any other name as written, stripped) and keep the spelling they found, so `data check` can say what
was mapped.
"""

from __future__ import annotations

from collections.abc import Sequence

from leadrrg.errors import LeadrrgError

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
