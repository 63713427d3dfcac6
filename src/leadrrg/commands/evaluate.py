"""`leadrrg evaluate --preds preds.jsonl --out metrics.json [--bootstrap N] [--chexbert PATH --bert-dir DIR]`:
score generated reports (NLG, clinical efficacy, hallucination; bootstrap intervals; CheXbert's CE beside
ours), write metrics.json atomically and print a table."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from leadrrg.errors import LeadrrgError
from leadrrg.io import check_output_file, read_text, text_lines


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--preds",
        required=True,
        help="predictions, one JSON object a line: id, reference, generated, optional labels (14 x 0/1)",
    )
    parser.add_argument("--out", required=True, help="metrics.json to write")
    parser.add_argument(
        "--split", default=None, help="name of the split the predictions come from (recorded)"
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
    add_bootstrap_arguments(
        parser, default=0, what="add <metric>_ci = [low, high], the 95%% interval, beside each metric"
    )


def add_chexbert_arguments(parser: argparse.ArgumentParser) -> None:
    """--chexbert PATH, --bert-dir DIR and --device, shared with `leadrrg compare`."""
    parser.add_argument(
        "--chexbert",
        default=None,
        metavar="PATH",
        help="also label with CheXbert from this local checkpoint (chexbert.pth): chexbert14_* metrics beside ours",
    )
    parser.add_argument(
        "--bert-dir",
        default=None,
        metavar="DIR",
        help="local bert-base-uncased directory (config.json, vocab.txt) for --chexbert; nothing is downloaded",
    )
    parser.add_argument("--device", default="cpu", help="torch device for --chexbert (default: cpu)")


def chexbert_labeler(args: argparse.Namespace):
    """The CheXbertLabeler that --chexbert / --bert-dir name, or None when neither is given."""
    if args.chexbert is None and args.bert_dir is None:
        return None
    if args.chexbert is None or args.bert_dir is None:
        raise LeadrrgError("--chexbert needs --bert-dir (and --bert-dir needs --chexbert)")
    from leadrrg.labeler.chexbert import CheXbertLabeler

    return CheXbertLabeler(args.chexbert, args.bert_dir, device=args.device)


def add_bootstrap_arguments(parser: argparse.ArgumentParser, *, default: int, what: str) -> None:
    """--bootstrap N and --seed S, shared with `leadrrg compare`."""
    parser.add_argument(
        "--bootstrap",
        type=int,
        default=default,
        metavar="N",
        help=f"study-level bootstrap replicates: {what} (default: {default})",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap's resampling (default: 0)")


def check_bootstrap(args: argparse.Namespace, minimum: int) -> None:
    if args.bootstrap < minimum:
        raise LeadrrgError(f"--bootstrap {args.bootstrap}: expected a number of replicates >= {minimum}")


def read_predictions(path: str | Path) -> list[dict]:
    """The records of a preds.jsonl; LeadrrgError naming the file and line for anything malformed."""
    path = Path(path)
    text = read_text(path, "predictions file", "the JSON lines that leadrrg generate writes")
    records = []
    for line_number, line in enumerate(text_lines(text), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise LeadrrgError(f"{path}, line {line_number}: not valid JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise LeadrrgError(
                f"{path}, line {line_number}: expected a JSON object, got {type(record).__name__}"
            )
        for key in ("reference", "generated"):
            if key not in record:
                raise LeadrrgError(f"{path}, line {line_number}: missing '{key}' (a report string)")
            if not isinstance(record[key], str):
                raise LeadrrgError(f"{path}, line {line_number}: '{key}' must be a string")
        records.append(record)
    if not records:
        raise LeadrrgError(f"{path}: no predictions (the file is empty)")
    return records


def run(args: argparse.Namespace) -> int:
    from leadrrg.evaluation.evaluate import evaluate_predictions, format_table
    from leadrrg.io import atomic_write_text

    check_output_file(args.out, "--out")
    check_bootstrap(args, minimum=0)
    chexbert_fn = chexbert_labeler(args)
    records = read_predictions(args.preds)
    try:
        metrics = evaluate_predictions(
            records,
            split=args.split,
            section=args.section,
            meteor=not args.no_meteor,
            bootstrap=args.bootstrap,
            seed=args.seed,
            chexbert_fn=chexbert_fn,
        )
    except LeadrrgError as exc:
        raise LeadrrgError(f"{args.preds}: {exc}") from None
    atomic_write_text(args.out, json.dumps(metrics, indent=2, allow_nan=False) + "\n")
    print(format_table(metrics))
    print(f"wrote {args.out}")
    return 0
