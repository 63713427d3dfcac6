"""`leadrrg rexrank --run RUN --input ReXRank_X.json --image-root DIR --out DIR [--format F] [--limit N]
[--set decode.K=V]`: ReXrank's `inference.py <input_json_file> <output_json_file> <img_root_dir>` convention. Writes
DIR/prediction.json (the input entries plus `model_prediction`), DIR/prediction.csv (`study_id,report`) and
DIR/preds.jsonl (for `leadrrg evaluate`); see `leadrrg.evaluation.rexrank` for the exact layout."""

from __future__ import annotations

import argparse
from pathlib import Path

from leadrrg.commands import add_overrides_argument, add_run_argument, check_run_dir, resolve_device
from leadrrg.errors import LeadrrgError
from leadrrg.io import path_problem

FORMATS = ("auto", "iu_xray", "mimic_cxr", "chexpert_plus")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_argument(parser, "a run directory (leadrrg train --out)")
    parser.add_argument(
        "--input",
        required=True,
        metavar="ReXRank_X.json",
        help="a ReXrank test file: ReXRank_IUXray_test.json, ReXRank_MIMICCXR_test.json, ReXRank_CheXpertPlus.json",
    )
    parser.add_argument(
        "--image-root",
        required=True,
        metavar="DIR",
        help="ReXrank's img_root_dir: the folder its image_path values are relative to (also read: DIR/images, "
        "DIR/files), e.g. MIMIC-CXR-JPG/files",
    )
    parser.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="output folder (made if missing): prediction.json, prediction.csv and preds.jsonl",
    )
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="auto",
        help="the reader for the file (default auto: from its name, CheXpert / MIMIC / else IU X-Ray)",
    )
    parser.add_argument("--limit", type=int, default=None, help="only the first N studies of the file")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available) | cpu | cuda | cuda:N")
    add_overrides_argument(
        parser, "decoding setting of the run to change, repeatable (e.g. decode.beam_size=3)"
    )


def run(args: argparse.Namespace) -> int:
    # torch: imported here, not by `leadrrg --help`
    from leadrrg.evaluation.rexrank import write_rexrank
    from leadrrg.inference.api import load
    from leadrrg.runs.files import check_trained_overrides

    if args.limit is not None and args.limit < 1:
        raise LeadrrgError(f"--limit is {args.limit}; expected a positive number of studies")
    for flag, value, kind in (
        ("--input", args.input, "file"),
        ("--image-root", args.image_root, "directory"),
    ):
        problem = path_problem(value, kind)
        if problem:
            raise LeadrrgError(
                f"{flag} {value} {problem}; expected ReXrank's "
                + ("study-keyed test JSON" if kind == "file" else "image folder (img_root_dir)")
            )
    check_run_dir(Path(args.run))
    check_trained_overrides(args.overrides, ("decode.",), "in rexrank")
    generator = load(args.run, device=resolve_device(args.device), overrides=args.overrides)
    result = write_rexrank(
        generator, args.run, args.input, args.image_root, args.out, args.format, args.limit
    )
    print(f"wrote {result.studies} ReXrank predictions: {result.submission} and {result.csv}")
    if result.preds is None:
        print("no study has a reference section, so there is no preds.jsonl to score")
    else:
        print(
            f"wrote {result.preds} ({result.scored} studies with a reference); score it with: "
            f"leadrrg evaluate --preds {result.preds} --out {Path(args.out) / 'metrics.json'}"
        )
    return 0
