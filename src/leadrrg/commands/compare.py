"""`leadrrg compare A.jsonl B.jsonl [--bootstrap N] [--out C.json] [--data ROOT --format FMT --split S]
[--chexbert PATH --bert-dir DIR]`: paired
bootstrap comparison of two systems' predictions on the same studies: per metric the difference B - A, its 95%
interval and a paired-bootstrap p-value (`leadrrg.evaluation.compare.compare_predictions`), CheXbert's CE beside ours.
With --data both files take their references (and labels) from the data set's split, joined by study id."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from leadrrg.commands import (
    add_bootstrap_arguments,
    add_chexbert_arguments,
    add_reference_arguments,
    check_bootstrap,
    chexbert_labeler,
    reference_data,
)
from leadrrg.evaluation.compare import compare_predictions, format_comparison
from leadrrg.evaluation.predictions import read_predictions
from leadrrg.io import atomic_write_text, check_output_file


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "a", metavar="A.jsonl", help="predictions of system A (the baseline), as leadrrg generate writes them"
    )
    parser.add_argument(
        "b", metavar="B.jsonl", help="predictions of system B on the same studies (matched by id)"
    )
    parser.add_argument(
        "--out", default=None, help="JSON to write: metric -> {difference, ci, p_value, a, b}"
    )
    add_bootstrap_arguments(parser, default=1000, what="paired replicates of the difference B - A")
    add_chexbert_arguments(parser)
    add_reference_arguments(
        parser,
        split_help="with --data: the split whose studies give both files their references (default: test)",
    )


def run(args: argparse.Namespace) -> int:

    if args.out is not None:
        check_output_file(args.out, "--out")
    check_bootstrap(args, minimum=1)
    names = (Path(args.a).name, Path(args.b).name)
    data = reference_data(args)
    records_a, records_b = (read_predictions(path, data, args.split) for path in (args.a, args.b))
    result = compare_predictions(
        records_a,
        records_b,
        bootstrap=args.bootstrap,
        seed=args.seed,
        chexbert_fn=chexbert_labeler(args),
        names=names,
    )
    print(f"{names[1]} - {names[0]}: {args.bootstrap} paired bootstrap replicates, seed {args.seed}")
    print(format_comparison(result, names))
    if args.out is not None:
        atomic_write_text(args.out, json.dumps(result, indent=2, allow_nan=False) + "\n")
        print(f"wrote {args.out}")
    return 0
