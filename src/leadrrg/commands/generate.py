"""`leadrrg generate`: reports from a trained run, for a data split, a folder of studies, or one study's images.

    leadrrg generate --run RUN --data DIR --split test --out preds.jsonl [--limit N] [--evidence]
                     [--set decode.strategy=beam --set decode.num_beams=4 ...]
    leadrrg generate --run RUN --inputs DIR | "GLOB" | FILE.csv --out preds.jsonl [--evidence]
    leadrrg generate --run RUN --images frontal.png [lateral.png] [--json] [--evidence]

Data mode (`--data` / the run's data.root) writes one JSON object a line (`id`, `reference`, `generated`,
ground-truth `labels` when the data has them, and `expert_probs` + `evidence` with --evidence; see
`leadrrg.inference.predict`) and `made_by` (below). It resumes as inputs mode does: the studies already in --out
are skipped, the rest are decoded into a part file beside it (`<out>.part0of1`, flushed batch by batch) and merged
into --out in split order at the end, so --out is complete or as it was; an interrupted run keeps its part file
and the same command finishes it (`--restart` starts over). The data layout and report section come from
the run's config (data.format, data.section, data.clean); --data replaces data.root and --format data.format.

Inputs mode needs no reports: studies come from a folder, a glob or a CSV (`leadrrg.inference.studies`); each
line is `{"id", "images", "report", "findings", "expert_probs"[, "evidence"][, "bad_images"]}`, or `{"id",
"images", "error"}` for a study none of whose images could be read. Lines are appended batch by batch, so an
interrupted run resumes where it stopped (finished studies are skipped; `--restart` starts over). Bad images
are listed in their study's line and counted at the end; they never stop the batch. A study's images beyond
model.max_views are not read: `images` lists those read (frontal first), `ignored_images` the rest, with a
warning. Each line's `made_by` records the run's weights checksum and the decode settings; a resume into a file
written by another run or other settings is refused. `<out>.lock` is held for the run: a second run into the
same --out is refused.

Under torchrun (`torchrun --nproc_per_node N -m leadrrg.cli generate --run-dir RUN --split test --out
preds.jsonl`; torchrun itself takes `--run` for its own `--run-path`, hence `--run-dir`) data and inputs mode
are sharded: each rank decodes every N-th study into a part file beside --out, and rank 0 merges the parts into
one file in input order, checked for duplicates and gaps (`leadrrg.inference.shards`). A killed sharded run
resumes from its part files, with any number of processes; `--restart` discards them. Greedy and beam output
is the single-process output; sampling draws from seed + rank.

An --out that is a file the command reads (the run's config, weights or tokenizer, the data root's manifest,
annotation, report CSV or label files, an --inputs CSV, an image) is refused before any decoding
(`leadrrg.inference.batch.check_out_not_input`).

Image mode prints the report, the labeler's findings and the experts' probabilities with their thresholds, most
probable first, marking the experts the report contradicts (or one JSON object with --json, the API's
`ReportResult.to_dict()`, with `thresholds` and `contradictions`).

Data and inputs mode are `leadrrg.inference.batch` (`write_split`, `write_inputs`), callable from Python.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from leadrrg.commands import add_overrides_argument, add_run_argument, check_run_dir, resolve_device
from leadrrg.config import DATA_FORMATS
from leadrrg.errors import LeadrrgError
from leadrrg.inference.studies import find_studies
from leadrrg.io import check_output_file, check_writable, path_problem
from leadrrg.runs.provenance import BASE_PATH_OVERRIDES
from leadrrg.serve.render import evidence_table, expert_table

# --set may change decoding, data reading and where the base model lies, never the trained model.
OVERRIDABLE = ("decode.", "data.", *BASE_PATH_OVERRIDES)
EVIDENCE = {None: False, "compact": True, "full": "full"}  # --evidence -> the API's evidence argument

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_argument(parser, "trained run directory (written by leadrrg train)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--data", help="data root (default: the run's data.root)")
    source.add_argument(
        "--inputs",
        metavar="DIR|GLOB|CSV",
        help="studies without reports: a folder (one study per sub-folder), a quoted glob, or a CSV with "
        "study_id,path columns",
    )
    source.add_argument(
        "--images", nargs="+", metavar="IMAGE", help="one study's image files (PNG/JPEG/DICOM), frontal first"
    )
    parser.add_argument("--split", default="test", help="split to generate for (default: test)")
    parser.add_argument("--out", help="predictions JSONL to write (data and inputs mode)")
    parser.add_argument("--format", choices=DATA_FORMATS, help="data layout (default: the run's data.format)")
    parser.add_argument("--limit", type=int, help="generate for the first N studies only")
    parser.add_argument(
        "--evidence",
        nargs="?",
        const="compact",
        choices=("compact", "full"),
        help="also write the expert probabilities and per-token evidence (text, gates, top experts); "
        "--evidence full adds the full gate and expert-weight tensors",
    )
    add_overrides_argument(
        parser, "typed override of a decode.* or data.* config field (repeatable), e.g. decode.strategy=beam"
    )
    parser.add_argument("--batch-size", type=int, help="studies per batch (default: decode.batch_size)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available) | cpu | cuda | cuda:N")
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the sampling generator (decode.strategy=sample)"
    )
    parser.add_argument("--json", action="store_true", help="image mode: print one JSON object")
    parser.add_argument(
        "--restart",
        action="store_true",
        help="overwrite --out (and its part files) instead of resuming (skipping the studies already in it)",
    )
    parser.add_argument(
        "--study-column", help="inputs CSV: the study id column (default: study_id, study or id)"
    )
    parser.add_argument("--path-column", help="inputs CSV: the image path column (default: path, image, ...)")


def run(args: argparse.Namespace) -> int:
    # torch: imported here, not by `leadrrg --help`
    from leadrrg.inference import batch, shards
    from leadrrg.inference.api import load
    from leadrrg.runs.files import check_trained_overrides

    check_run_dir(Path(args.run))
    check_trained_overrides(args.overrides, OVERRIDABLE, "at generation time")
    if args.limit is not None and args.limit < 1:
        raise LeadrrgError(f"--limit is {args.limit}; expected a positive number of studies")
    if args.images is None and not args.out:
        raise LeadrrgError(
            "--out is required when generating for a data split or --inputs (or give --images for one study)"
        )
    if args.images is not None and shards.launched_world_size() > 1:
        raise LeadrrgError(
            "--images decodes one study; run it without torchrun (torchrun shards --split or --inputs)"
        )
    if args.out:
        check_output_file(args.out, "--out")
        check_writable(args.out, "--out")  # read-only or forbidden: said before loading the model
    studies = None
    if args.inputs is not None:  # find the studies before paying for the model
        studies = find_studies(args.inputs, args.study_column, args.path_column)[: args.limit]
        batch.check_out_not_input(args.out, args.run, studies, inputs=args.inputs)
    overrides = list(args.overrides)
    if args.batch_size is not None:  # checked with the other decode settings (DecodeConfig)
        overrides.append(f"decode.batch_size={args.batch_size}")
    evidence = EVIDENCE[args.evidence]
    with shards.joined(args.device, resolve_device) as shard:
        started = time.perf_counter()
        generator = load(args.run, device=shard.device, seed=args.seed + shard.rank, overrides=overrides)
        log_loaded(generator, args.run, time.perf_counter() - started)
        if args.images is not None:
            return print_report(generator, args.images, evidence, args.json)
        if studies is not None:
            made_by = batch.made_by(generator, args.run, evidence)
            counts = batch.write_inputs(generator, studies, args.out, shard, evidence, args.restart, made_by)
            if shard.is_main and counts.extra_images:
                print(
                    f"warning: {counts.extra_studies} studies have more images than this model reads "
                    f"(model.max_views={generator.max_views}): {counts.extra_images} images were not read, "
                    "listed in their lines under 'ignored_images'",
                    file=sys.stderr,
                )
            if shard.is_main:
                print(
                    f"wrote {counts.written} reports to {args.out} ({counts.failed} studies without a readable "
                    f"image, {counts.bad} bad images; listed in their lines under 'error' / 'bad_images')"
                    + (f"; {counts.done_before} studies were already done" if counts.done_before else "")
                )
            if not counts.written and not counts.done_before:
                raise LeadrrgError(
                    f"no report was written for the {len(studies)} studies of {args.inputs}: none of their images "
                    "could be read (see 'error' in the lines of --out); expected image paths that exist, relative "
                    "to the CSV's folder or absolute (prefix the image folder in the path column)"
                )
            return 0
        config = generator.config
        if args.data:
            config.data.root = args.data
        if args.format:
            config.data.format = args.format
        if not config.data.root:
            raise LeadrrgError("the run's config has no data.root; give the data root with --data DIR")
        split = batch.split_studies(config, args.split, args.limit)
        logger.info("data loaded: %d studies of split %r from %s", len(split), args.split, config.data.root)
        batch.check_out_not_input(args.out, args.run, split, data=config.data)  # before any decoding
        made_by = batch.made_by(generator, args.run, evidence)
        count = batch.write_split(generator, split, args.out, shard, evidence, args.restart, made_by)
        if shard.is_main:
            decode = config.decode
            print(
                f"wrote {count} reports for split {args.split!r} of {config.data.root} to {args.out} "
                f"({decode.strategy} decoding{f', {decode.num_beams} beams' if decode.strategy == 'beam' else ''}"
                f"{f', {shard.world_size} processes' if shard.enabled else ''})"
            )
    return 0


def log_loaded(generator, run: str, seconds: float) -> None:
    """The `--log-level info` line of a loaded model: the run, device, decode settings and load time."""
    decode = generator.config.decode
    logger.info(
        "model loaded: %s on %s in %.1f s (%s decoding, max_new_tokens %d, batch %d, thresholds %s, "
        "expert_threshold %s)",
        run,
        generator.device,
        seconds,
        decode.strategy,
        decode.max_new_tokens,
        decode.batch_size,
        decode.thresholds,
        decode.expert_threshold,
    )


def print_report(generator, images: list[str], evidence: bool | str, as_json: bool) -> int:
    """Image mode: one study's report, the labeler's findings and the experts' probabilities, most probable
    first (or the result as one JSON object)."""
    paths = [str(Path(path).expanduser().resolve()) for path in images]
    for path in paths:
        problem = path_problem(path)
        if problem:
            raise LeadrrgError(f"image {path} {problem}; expected a PNG, JPEG or DICOM file")
    if len(paths) > generator.max_views:
        raise LeadrrgError(
            f"{len(paths)} images given but this model reads at most {generator.max_views} view(s) per study "
            "(model.max_views); give one study's views, frontal first"
        )
    result = generator.generate(paths, evidence=evidence)
    if as_json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    print(result.report_display)
    said = {name: value for name, value in result.findings.items() if value is not None}
    if said:
        words = {1: "present", 0: "absent", -1: "uncertain"}
        print()
        print("Findings in the report (labeler):", ", ".join(f"{n} {words[v]}" for n, v in said.items()))
    if result.expert_probs:
        print()
        print(
            expert_table(result.expert_probs, result.thresholds, result.contradictions, result.hedge_floors)
        )
    if result.evidence and result.evidence["layers"]:
        print()
        print(evidence_table(result.evidence))
    return 0
