"""`leadrrg compare A.jsonl B.jsonl [--bootstrap N] [--out C.json] [--names A,B] [--all] [--data ROOT --format FMT
--split S] [--chexbert PATH --bert-dir DIR]`: paired
bootstrap comparison of two systems' predictions on the same studies: per metric the difference B - A, its 95%
interval and a paired-bootstrap p-value (`leadrrg.evaluation.compare.compare_predictions`), CheXbert's CE beside ours.
With --data both files take their references (and labels) from the data set's split, joined by study id.

The columns are named by the files' names, or, when both are called the same (`RUN/preds_test.jsonl`), by the
path part that tells them apart (the run folder), or by `--names A,B`. The table shows the headline metrics
(BLEU-4, ROUGE-L, CIDEr, CE-14 / CE-5 F1, hallucination, and their ground-truth and CheXbert variants);
`--all` shows every metric, and --out always holds every one."""

from __future__ import annotations

import argparse
import json

from leadrrg.commands import (
    add_bootstrap_arguments,
    add_chexbert_arguments,
    add_model_metrics_arguments,
    add_reference_arguments,
    check_bootstrap,
    chexbert_labeler,
    model_metrics,
    reference_data,
)
from leadrrg.errors import LeadrrgError
from leadrrg.evaluation.compare import compare_predictions, format_comparison, system_names
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
    parser.add_argument(
        "--names",
        metavar="A,B",
        help="column names of the two systems (default: the file names, or the run folders when those match)",
    )
    parser.add_argument("--all", action="store_true", help="print every metric (default: the headline ones)")
    add_bootstrap_arguments(parser, default=1000, what="paired replicates of the difference B - A")
    add_chexbert_arguments(parser)
    add_model_metrics_arguments(parser)
    add_reference_arguments(
        parser,
        split_help="with --data: the split whose studies give both files their references (default: test)",
    )


def run(args: argparse.Namespace) -> int:
    chexbert_fn, field_fn = chexbert_labeler(args), None
    if not args.no_model_metrics:
        chexbert_fn, field_fn = model_metrics(args, chexbert_fn)

    if args.out is not None:
        check_output_file(args.out, "--out")
    check_bootstrap(args, minimum=1)
    names = parse_names(args.names) if args.names else system_names(args.a, args.b)
    data = reference_data(args)
    records_a, records_b = (read_predictions(path, data, args.split) for path in (args.a, args.b))
    result = compare_predictions(
        records_a,
        records_b,
        bootstrap=args.bootstrap,
        seed=args.seed,
        chexbert_fn=chexbert_fn,
        field_fn=field_fn,
        names=names,
    )
    print(f"{names[1]} - {names[0]}: {args.bootstrap} paired bootstrap replicates, seed {args.seed}")
    print(format_comparison(result, names, everything=args.all))
    if args.out is not None:
        atomic_write_text(args.out, json.dumps(result, indent=2, allow_nan=False) + "\n")
        print(f"wrote {args.out}")
    return 0


def parse_names(text: str) -> tuple[str, str]:
    """`--names A,B` -> ("A", "B"); LeadrrgError unless two different, non-empty names."""
    names = [name.strip() for name in text.split(",")]
    if len(names) != 2 or not all(names) or names[0] == names[1]:
        raise LeadrrgError(
            f"--names {text!r}: expected two different names separated by a comma, e.g. --names LVLM,LEAD"
        )
    return names[0], names[1]
