"""`leadrrg evaluate --preds preds.jsonl --out metrics.json [--data ROOT --format FMT --split S] [--bootstrap N]
[--chexbert PATH --bert-dir DIR] [--metrics-dir DIR | --no-model-metrics]`: score generated reports (NLG, clinical
efficacy, hallucination; bootstrap intervals; CheXbert's CE beside ours; BERTScore, RadGraph-F1 and RaTEScore from
the local metrics directory, docs/METRICS.md), write metrics.json atomically and print a table. With --data the references
(and labels) come from the data set's split, joined by study id (predictions CSVs without a reference column)."""

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
from leadrrg.evaluation.evaluate import evaluate_predictions, format_table
from leadrrg.evaluation.predictions import read_predictions
from leadrrg.io import atomic_write_text, check_not_input, check_output_file


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--preds",
        required=True,
        help="predictions, one JSON object a line: id, reference, generated, optional labels (14 x 0/1); or a "
        "CSV with id (or study_id), generated (or findings[, impression]) and reference (or --data)",
    )
    parser.add_argument("--out", required=True, help="metrics.json to write")
    add_reference_arguments(
        parser,
        split_help="name of the split the predictions come from (recorded; with --data the split whose studies "
        "give the references, default test)",
    )
    parser.add_argument(
        "--section",
        choices=("findings", "impression", "both"),
        default="findings",
        help="report section that was generated (recorded in metrics.json; default: findings)",
    )
    parser.add_argument(
        "--no-meteor",
        action="store_true",
        help="skip METEOR (it starts a Java VM); it is then reported as missing",
    )
    add_chexbert_arguments(parser)
    add_model_metrics_arguments(parser)
    add_bootstrap_arguments(
        parser, default=0, what="add <metric>_ci = [low, high], the 95%% interval, beside each metric"
    )


def run(args: argparse.Namespace) -> int:

    check_output_file(args.out, "--out")
    check_bootstrap(args, minimum=0)
    chexbert_fn = chexbert_labeler(args)
    field_fn = None
    if not args.no_model_metrics:
        chexbert_fn, field_fn = model_metrics(args, chexbert_fn)
    check_not_input(args.out, [args.preds])
    data = reference_data(args, args.section)
    if data is not None and args.split is None:
        args.split = "test"
    records = read_predictions(args.preds, data, args.split)
    try:
        metrics = evaluate_predictions(
            records,
            split=args.split,
            section=args.section,
            meteor=not args.no_meteor,
            bootstrap=args.bootstrap,
            seed=args.seed,
            chexbert_fn=chexbert_fn,
            field_fn=field_fn,
        )
    except LeadrrgError as exc:
        raise LeadrrgError(f"{args.preds}: {exc}") from None
    atomic_write_text(args.out, json.dumps(metrics, indent=2, allow_nan=False) + "\n")
    print(format_table(metrics))
    print(f"wrote {args.out}")
    return 0
