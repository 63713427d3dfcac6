"""`leadrrg compare A.jsonl B.jsonl [--bootstrap N] [--out C.json]`: paired bootstrap comparison of two
systems' predictions on the same studies: per metric the difference B - A, its 95% interval and a
paired-bootstrap p-value (`leadrrg.evaluate.compare_predictions`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from leadrrg.commands.evaluate import add_bootstrap_arguments, check_bootstrap, read_predictions
from leadrrg.io import check_output_file


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


def run(args: argparse.Namespace) -> int:
    from leadrrg.evaluate import compare_predictions, format_comparison
    from leadrrg.io import atomic_write_text

    if args.out is not None:
        check_output_file(args.out, "--out")
    check_bootstrap(args, minimum=1)
    names = (Path(args.a).name, Path(args.b).name)
    result = compare_predictions(
        read_predictions(args.a),
        read_predictions(args.b),
        bootstrap=args.bootstrap,
        seed=args.seed,
        names=names,
    )
    print(f"{names[1]} - {names[0]}: {args.bootstrap} paired bootstrap replicates, seed {args.seed}")
    print(format_comparison(result, names))
    if args.out is not None:
        atomic_write_text(args.out, json.dumps(result, indent=2, allow_nan=False) + "\n")
        print(f"wrote {args.out}")
    return 0
