"""`leadrrg diagnose --run RUN [--data DIR] [--split S] [--limit N] [--oracle] [--flip N] [--flip-side N] [--json OUT.json]
[--set decode.K=V]`: does the report follow the experts, and do the experts read the image? On any split of any data
set (default test); without ground-truth labels the truth-based measures use the labeler's reading of the reference
report, marked as such. See `leadrrg.evaluation.diagnose` for every measure."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from leadrrg.commands import add_overrides_argument, add_run_argument, check_run_dir, resolve_device
from leadrrg.data.manifests import load_studies
from leadrrg.errors import LeadrrgError
from leadrrg.io import atomic_write_text, check_output_file


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_argument(parser, "a run directory (leadrrg train --out)")
    parser.add_argument(
        "--data",
        help="data root in the run's format (default: the run's data.root), e.g. a selection set synthesised "
        "apart from the evaluation splits",
    )
    parser.add_argument(
        "--split",
        default="test",
        help="the split to diagnose (default test; e.g. shift_test, SynthCXR's shifted split). Without "
        "ground-truth labels, report F1, AUROC and oracle score against the labeler's reading of the reference "
        "report (truth_source 'reference (labeler)')",
    )
    parser.add_argument("--limit", type=int, default=200, help="first N studies of the split (default 200)")
    parser.add_argument(
        "--oracle",
        action="store_true",
        help="also generate with the experts' probabilities replaced by the truth (p = 1 present, 0 absent; the "
        "labels, else the labeler's reading of the reference report)",
    )
    parser.add_argument(
        "--flip",
        type=int,
        default=0,
        metavar="N",
        help="flip one finding's probability in each of the first N studies and regenerate (0: off)",
    )
    parser.add_argument(
        "--flip-side",
        type=int,
        default=0,
        metavar="N",
        help="swap one finding's side (left <-> right) in the oracle evidence of the first N studies with a "
        "one-sided finding (the image's side, else the side the reference report states) and regenerate: does "
        "the report's side follow? (attribute experts; 0: off)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the order in which findings are flipped")
    parser.add_argument("--json", dest="json_out", metavar="OUT.json", help="also write the measures as JSON")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available) | cpu | cuda | cuda:N")
    add_overrides_argument(
        parser, "decoding setting of the run to change, repeatable (e.g. decode.expert_threshold=0)"
    )


def run(args: argparse.Namespace) -> int:
    # torch: imported here, not by `leadrrg --help`
    from leadrrg.evaluation.diagnose import diagnose, format_diagnosis
    from leadrrg.inference.api import load
    from leadrrg.runs.files import check_trained_overrides

    if args.limit < 1:
        raise LeadrrgError(f"--limit is {args.limit}; expected a positive number of studies")
    for flag, value in (("--flip", args.flip), ("--flip-side", args.flip_side)):
        if value < 0:
            raise LeadrrgError(f"{flag} is {value}; expected 0 (off) or a positive number of studies")
    if args.json_out:
        check_output_file(args.json_out, "--json")
    check_run_dir(Path(args.run))
    check_trained_overrides(args.overrides, ("decode.",), "in diagnose")
    generator = load(args.run, device=resolve_device(args.device), overrides=args.overrides)
    data = generator.config.data
    if args.data:
        data.root = args.data
    studies = load_studies(data, args.split)[: args.limit]
    if args.flip > len(studies):
        raise LeadrrgError(f"--flip {args.flip} exceeds the {len(studies)} studies diagnosed (--limit)")
    result = diagnose(
        generator, studies, oracle=args.oracle, flip=args.flip, flip_side=args.flip_side, seed=args.seed
    )
    result = {"run": str(args.run), "split": args.split, **result}
    print(f"{args.run} on {args.split}: " + format_diagnosis(result))
    if args.json_out:
        atomic_write_text(args.json_out, json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json_out}")
    return 0
