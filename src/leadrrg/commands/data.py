"""`leadrrg data check`: validate a data root before training on it.

Prints how the data was read (split names mapped, the image folder and label file used, MIMIC entries vs
studies), per split the studies kept, those skipped for an empty report section, the images, the missing
and unreadable ones, and label coverage; lists the first few bad images and the totals, then every
warning (blank or aliased split names, duplicate studies, a missing test split, label rows that match no
study, label values whose coding is ambiguous). Exits 1 when any
image is missing or unreadable or no study is usable, 0 otherwise (a malformed root or annotation, an image path
outside the root or a repeated study id exits 2 through the CLI).
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import TYPE_CHECKING

from leadrrg.config import (
    CLEAN_MODES,
    DATA_FORMATS,
    GROUPINGS,
    LABEL_CODES,
    LABEL_JOINS,
    SECTIONS,
    DataConfig,
)

if TYPE_CHECKING:
    from leadrrg.data.check import DataCheck

SHOW_DEFAULT = 5

# The DataConfig fields `data check` takes as flags (--label-file for label_file), with their defaults; every
# other field keeps its default.
DATA_FLAGS = ("format", "root", "section", "clean", "label_file", "label_join", "label_codes", "grouping")
DATA_FLAGS += ("annotation_file", "allow_outside_root", "split_file", "label_key")
DEFAULTS = {f.name: f.default for f in dataclasses.fields(DataConfig)}


def add_data_flag(parser: argparse.ArgumentParser, name: str, **kwargs) -> None:
    """`--NAME` for the DataConfig field `name`, defaulting to the field's default unless required."""
    if not kwargs.get("required"):
        kwargs["default"] = DEFAULTS[name]
    parser.add_argument("--" + name.replace("_", "-"), dest=name, **kwargs)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    check = actions.add_parser(
        "check", help="validate a data root: counts, missing/unreadable images, labels"
    )
    add_data_flag(check, "format", required=True, choices=DATA_FORMATS, help="data layout")
    add_data_flag(check, "root", required=True, metavar="DIR", help="data root directory")
    add_data_flag(check, "section", choices=SECTIONS, help="report section used as target")
    add_data_flag(check, "clean", choices=CLEAN_MODES, help="report text cleaning")
    add_data_flag(check, "label_file", metavar="FILE", help="CheXpert-format label file to join")
    add_data_flag(
        check,
        "label_join",
        choices=LABEL_JOINS,
        help="how label-file rows meet studies: auto | key | report (text) | row (file order)",
    )
    add_data_flag(
        check,
        "label_codes",
        choices=LABEL_CODES,
        help="label values: chexpert (1/0/-1/blank) | chexbert (0 blank, 1 pos, 2 neg, 3 uncertain)",
    )
    add_data_flag(
        check,
        "grouping",
        choices=GROUPINGS,
        help="mimic_cxr: entry (per image, as R2Gen evaluates) | study (entries grouped by study_id)",
    )
    add_data_flag(
        check,
        "annotation_file",
        metavar="FILE",
        help="iu_xray / mimic_cxr / chexpert_plus JSON in ROOT: R2Gen's, ReXrank's study-keyed or LLaVA's "
        "(several, one per split: train.json,test.json)",
    )
    add_data_flag(
        check,
        "split_file",
        metavar="FILE",
        help="splits from a file (mimic-cxr-2.0.0-split.csv.gz, a CSV with id and split, R2Gen's annotation.json)",
    )
    add_data_flag(
        check, "label_key", metavar="COLUMN", help="the label file's key column (e.g. study_id, Path)"
    )
    check.add_argument(
        "--decode", action="store_true", help="decode every image fully (slow; default: headers)"
    )
    check.add_argument(
        "--show", type=int, default=SHOW_DEFAULT, metavar="N", help="bad images listed per kind"
    )
    check.add_argument("--workers", type=int, default=8, metavar="N", help="threads checking images")
    add_data_flag(
        check,
        "allow_outside_root",
        action="store_true",
        help="accept image paths that resolve outside the root (data.allow_outside_root)",
    )


def print_report(check: DataCheck, show: int) -> None:
    """The counts table, the first `show` bad images of each kind, label coverage and the warnings."""
    data = check.data
    splits = ", ".join(check.counts) or "(none)"
    kept, skipped = check.totals[0], check.totals[1]
    print(
        f"{data.format} data at {data.root}: {check.records} {check.unit} in splits {splits}; {kept} with a "
        f"non-empty {data.section} section" + (f" ({skipped} skipped)" if skipped else "")
    )
    for note in check.notes:
        print(f"  {note}")
    header = f"{'split':<12}{'studies':>9}{'empty ' + data.section:>20}{'images':>9}{'missing':>9}{'unreadable':>12}{'labelled':>10}"
    print(header)
    rows = list(check.counts.items()) + ([("total", check.totals)] if len(check.counts) > 1 else [])
    for name, row in rows:
        print(f"{name:<12}{row[0]:>9}{row[1]:>20}{row[2]:>9}{row[3]:>9}{row[4]:>12}{row[5]:>10}")
    if check.missing:
        print(f"\nmissing images: {len(check.missing)} (first {min(show, len(check.missing))})")
        for path in check.missing[:show]:
            print(f"  {path}")
    if check.unreadable:
        print(f"\nunreadable images: {len(check.unreadable)} (first {min(show, len(check.unreadable))})")
        for _, reason in check.unreadable[:show]:
            print(f"  {reason}")
    if check.labels is not None:
        print(f"\nlabels: {len(check.labels)}/{check.studies} studies; per observation positive / mentioned:")
        for name, positive, mentioned in check.label_coverage():
            print(f"  {name:<28}{positive:>8} /{mentioned:>8}")
    else:
        print(
            f"\nlabels: none of {check.studies} studies carry labels (the rule-based labeler can fill them)"
        )
    if check.warnings:
        print(f"\nwarnings: {len(check.warnings)}")
        for warning in check.warnings:
            print(f"  - {warning}")


def run(args: argparse.Namespace) -> int:
    # Imported here: reading images pulls in the image decoders, which `leadrrg --help` should not load.
    from leadrrg.data.check import check_data

    check = check_data(
        DataConfig(**{name: getattr(args, name) for name in DATA_FLAGS}),
        decode=args.decode,
        workers=args.workers,
    )
    print_report(check, args.show)
    if check.missing or check.unreadable:
        print(f"\nFAILED: {len(check.missing)} missing and {len(check.unreadable)} unreadable images")
        return 1
    if not check.studies:
        print(
            f"\nFAILED: no usable study (every {check.data.section} section is empty, or the data set has none)"
        )
        return 1
    print("\nOK")
    return 0
