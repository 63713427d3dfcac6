"""`leadrrg label INPUT --out OUT.csv`: label reports with the rule-based labeler.

INPUT is a CSV (the `--text-columns` joined with a space; by default `Reports`, `report`, `text` or
`findings` + `impression`), a JSONL file with a `report` field, or a text file with one report per
line; `--no-header` reads a CSV whose every row is a report (the CheXpert labeler's `sample_reports.csv`).
OUT.csv is the CheXpert labeler's format, after the input's id column when it has one (kept under its name, so
the labels join back to the input: a CSV's `id`, `study_id`, a column named like an id such as `uid`, or a
first column of unique ids; a JSONL's `id`; `--id-column` names another): `Reports`, then the 14 observations with `1.0`, `0.0`, `-1.0`,
or empty when not mentioned, one row per input report in input order. `--attributes` adds, per finding,
`<Observation>_side` (right / left / bilateral), `_severity` (mild / moderate / large) and `_zone`, as the
report states them for the findings it asserts (empty when unstated).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np

from leadrrg import labeler
from leadrrg.constants import OBSERVATIONS
from leadrrg.errors import LeadrrgError
from leadrrg.io import check_not_input
from leadrrg.labeler.reports_io import read_reports_and_ids


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "input", metavar="INPUT", help="reports: .csv, .jsonl, or a text file with one report per line"
    )
    parser.add_argument("--out", required=True, metavar="OUT.csv", help="CheXpert-format label CSV to write")
    parser.add_argument(
        "--text-columns",
        default=None,
        metavar="COLS",
        help="comma-separated CSV columns (or JSONL fields) joined into the report, e.g. findings,impression "
        "(with --no-header: column numbers from 1)",
    )
    parser.add_argument(
        "--no-header",
        action="store_true",
        help="the CSV has no header row: every row is a report (the CheXpert labeler's sample_reports.csv)",
    )
    parser.add_argument(
        "--id-column",
        metavar="COL",
        help="CSV column (or JSONL field) of the report ids, written first in OUT.csv (default: id, study_id, "
        "a column named like an id such as uid, or a first column of unique ids)",
    )
    parser.add_argument(
        "--attributes",
        action="store_true",
        help="also write each asserted finding's side, severity and zone (<Observation>_side, _severity, _zone)",
    )


def run(args: argparse.Namespace) -> int:
    _log_warnings_to_stderr(logging.getLogger("leadrrg.labeler"))
    out = Path(args.out)
    if out.exists() and out.is_dir():
        raise LeadrrgError(f"--out {out} is a directory; expected a CSV file path")
    check_not_input(out, [args.input])
    reports, ids = read_reports_and_ids(args.input, args.text_columns, not args.no_header, args.id_column)

    start = time.perf_counter()
    labels = labeler.label_reports(reports)
    attributes = labeler.label_attributes(reports) if args.attributes else None
    seconds = time.perf_counter() - start
    try:
        labeler.write_chexpert_csv(out, reports, labels, attributes, ids)
    except OSError as exc:
        raise LeadrrgError(f"cannot write {out} ({exc.strerror or exc})") from None

    empty = sum(1 for r in reports if not r.strip())
    speed = f"{len(reports) / seconds:,.0f} reports/s" if seconds > 0 and reports else "-"
    kept = f", ids in column {ids[0]!r}" if ids else ""
    print(f"labelled {len(reports)} reports ({empty} empty) in {seconds:.2f} s ({speed}{kept}) -> {out}")
    print(f"{'observation':28s} {'positive':>8s} {'uncertain':>9s} {'negative':>8s}")
    for i, name in enumerate(OBSERVATIONS):
        column = labels[:, i]
        counts = (int(np.sum(column == 1.0)), int(np.sum(column == -1.0)), int(np.sum(column == 0.0)))
        print(f"{name:28s} {counts[0]:8d} {counts[1]:9d} {counts[2]:8d}")
    return 0


def _log_warnings_to_stderr(logger: logging.Logger) -> None:
    """Show the labeler's warnings (e.g. non-UTF-8 input) as one plain line each, once."""
    if not any(getattr(h, "_leadrrg_label", False) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("leadrrg label: %(message)s"))
        handler._leadrrg_label = True
        logger.addHandler(handler)
        logger.propagate = False
