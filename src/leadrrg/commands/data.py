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

SHOW_DEFAULT = 5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from leadrrg.config import DATA_FORMATS, GROUPINGS, LABEL_CODES, LABEL_JOINS, SECTIONS

    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    check = actions.add_parser(
        "check", help="validate a data root: counts, missing/unreadable images, labels"
    )
    check.add_argument("--format", required=True, choices=DATA_FORMATS, help="data layout")
    check.add_argument("--root", required=True, metavar="DIR", help="data root directory")
    check.add_argument(
        "--section", default="findings", choices=SECTIONS, help="report section used as target"
    )
    check.add_argument("--clean", default="r2gen", choices=("r2gen", "none"), help="report text cleaning")
    check.add_argument(
        "--label-file", default=None, metavar="FILE", help="CheXpert-format label file to join"
    )
    check.add_argument(
        "--label-join",
        default="auto",
        choices=LABEL_JOINS,
        help="how label-file rows meet studies: auto | key | report (text) | row (file order)",
    )
    check.add_argument(
        "--label-codes",
        default="chexpert",
        choices=LABEL_CODES,
        help="label values: chexpert (1/0/-1/blank) | chexbert (0 blank, 1 pos, 2 neg, 3 uncertain)",
    )
    check.add_argument(
        "--grouping",
        default="entry",
        choices=GROUPINGS,
        help="mimic_cxr: entry (per image, as R2Gen evaluates) | study (entries grouped by study_id)",
    )
    check.add_argument(
        "--annotation-file", default=None, metavar="FILE", help="iu_xray / mimic_cxr annotation JSON in ROOT"
    )
    check.add_argument(
        "--decode", action="store_true", help="decode every image fully (slow; default: headers)"
    )
    check.add_argument(
        "--show", type=int, default=SHOW_DEFAULT, metavar="N", help="bad images listed per kind"
    )
    check.add_argument("--workers", type=int, default=8, metavar="N", help="threads checking images")
    check.add_argument(
        "--allow-outside-root",
        action="store_true",
        help="accept image paths that resolve outside the root (data.allow_outside_root)",
    )


def run(args: argparse.Namespace) -> int:
    from concurrent.futures import ThreadPoolExecutor
    from pathlib import Path

    import numpy as np

    from leadrrg.config import DataConfig
    from leadrrg.constants import OBSERVATIONS
    from leadrrg.data.images import check_image
    from leadrrg.data.manifests import available_splits, load_split, read_data

    data = DataConfig(
        format=args.format,
        root=args.root,
        section=args.section,
        clean=args.clean,
        label_file=args.label_file,
        label_join=args.label_join,
        label_codes=args.label_codes,
        grouping=args.grouping,
        annotation_file=args.annotation_file,
        allow_outside_root=args.allow_outside_root,
    )
    read = read_data(data)
    records = read.records
    splits = available_splits(records)
    unit = "entries" if data.format == "mimic_cxr" and data.grouping == "entry" else "studies"
    print(
        f"{data.format} data at {data.root}: {len(records)} {unit} in splits {', '.join(splits) or '(none)'}"
    )
    for note in read.notes:
        print(f"  {note}")

    header = f"{'split':<12}{'studies':>9}{'empty ' + data.section:>20}{'images':>9}{'missing':>9}{'unreadable':>12}{'labelled':>10}"
    print(header)
    missing: list[str] = []
    unreadable: list[tuple[str, str]] = []
    all_labels = []
    totals = np.zeros(6, dtype=np.int64)
    with ThreadPoolExecutor(max_workers=max(1, args.workers)) as pool:
        for split in splits:
            result = load_split(data, split, records)
            paths = sorted({path for study in result.studies for path in study.images})
            exists = list(pool.map(lambda p: Path(p).is_file(), paths))
            split_missing = [p for p, ok in zip(paths, exists) if not ok]
            present = [p for p, ok in zip(paths, exists) if ok]
            reasons = pool.map(lambda p: check_image(p, decode=args.decode), present)
            split_unreadable = [(p, reason) for p, reason in zip(present, reasons) if reason is not None]
            labelled = [s.labels for s in result.studies if s.labels is not None]
            all_labels += labelled
            row = [
                len(result.studies),
                result.skipped_empty,
                len(paths),
                len(split_missing),
                len(split_unreadable),
                len(labelled),
            ]
            totals += row
            print(f"{split:<12}{row[0]:>9}{row[1]:>20}{row[2]:>9}{row[3]:>9}{row[4]:>12}{row[5]:>10}")
            missing += split_missing
            unreadable += split_unreadable
    if len(splits) > 1:
        print(
            f"{'total':<12}{totals[0]:>9}{totals[1]:>20}{totals[2]:>9}{totals[3]:>9}{totals[4]:>12}{totals[5]:>10}"
        )

    if missing:
        print(f"\nmissing images: {len(missing)} (first {min(args.show, len(missing))})")
        for path in missing[: args.show]:
            print(f"  {path}")
    if unreadable:
        print(f"\nunreadable images: {len(unreadable)} (first {min(args.show, len(unreadable))})")
        for _, reason in unreadable[: args.show]:
            print(f"  {reason}")

    studies = int(totals[0])
    if all_labels:
        labels = np.stack(all_labels)  # (N, 14)
        print(f"\nlabels: {len(all_labels)}/{studies} studies; per observation positive / mentioned:")
        for i, name in enumerate(OBSERVATIONS):
            column = labels[:, i]
            print(f"  {name:<28}{int((column == 1).sum()):>8} /{int((~np.isnan(column)).sum()):>8}")
    else:
        print(f"\nlabels: none of {studies} studies carry labels (the rule-based labeler can fill them)")

    warnings = list(read.warnings)
    if totals[1]:
        warnings.append(f"{totals[1]} studies have an empty {data.section} section and are skipped")
    if warnings:
        print(f"\nwarnings: {len(warnings)}")
        for warning in warnings:
            print(f"  - {warning}")

    if missing or unreadable:
        print(f"\nFAILED: {len(missing)} missing and {len(unreadable)} unreadable images")
        return 1
    if not studies:
        print(f"\nFAILED: no usable study (every {data.section} section is empty, or the data set has none)")
        return 1
    print("\nOK")
    return 0
