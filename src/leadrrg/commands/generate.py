"""`leadrrg generate`: reports from a trained run, for a data split, a folder of studies, or one study's images.

    leadrrg generate --run RUN --data DIR --split test --out preds.jsonl [--limit N] [--evidence]
                     [--set decode.strategy=beam --set decode.num_beams=4 ...]
    leadrrg generate --run RUN --inputs DIR | "GLOB" | FILE.csv --out preds.jsonl [--evidence]
    leadrrg generate --run RUN --images frontal.png [lateral.png] [--json] [--evidence]

Data mode (`--data` / the run's data.root) writes one JSON object a line (`id`, `reference`, `generated`,
ground-truth `labels` when the data has them, and `expert_probs` + `evidence` with --evidence; see
`leadrrg.inference.predict`), atomically: the file is complete or absent. The data layout and report section come from
the run's config (data.format, data.section, data.clean); --data replaces data.root and --format data.format.

Inputs mode needs no reports: studies come from a folder, a glob or a CSV (`leadrrg.inference.studies`); each
line is `{"id", "images", "report", "findings", "expert_probs"[, "evidence"][, "bad_images"]}`, or `{"id",
"images", "error"}` for a study none of whose images could be read. Lines are appended batch by batch, so an
interrupted run resumes where it stopped (finished studies are skipped; `--restart` starts over). Bad images
are listed in their study's line and counted at the end; they never stop the batch.

Under torchrun (`torchrun --nproc_per_node N -m leadrrg.cli generate --run-dir RUN --split test --out
preds.jsonl`; torchrun itself takes `--run` for its own `--run-path`, hence `--run-dir`) data and inputs mode
are sharded: each rank decodes every N-th study into a part file beside --out, and rank 0 merges the parts into
one file in input order, checked for duplicates and gaps (`leadrrg.inference.shards`). A killed sharded run
resumes from its part files, with any number of processes; `--restart` discards them. Greedy and beam output
is the single-process output; sampling draws from seed + rank.

Image mode prints the report, the labeler's findings and the experts' probabilities, most probable first (or one
JSON object with --json, the API's `ReportResult.to_dict()`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from leadrrg.commands import add_overrides_argument, add_run_argument, check_trained_overrides
from leadrrg.config import DATA_FORMATS
from leadrrg.errors import LeadrrgError
from leadrrg.io import check_output_file, path_problem
from leadrrg.runs.provenance import BASE_PATH_OVERRIDES

# --set may change decoding, data reading and where the base model lies, never the trained model.
OVERRIDABLE = ("decode.", "data.", *BASE_PATH_OVERRIDES)
LOAD_THREADS = 2  # --inputs: images are read by this many threads, one batch ahead of decoding
SHARD_CHUNK = 4  # under torchrun, batches decoded between two flushes of a rank's part file


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
        help="inputs mode and torchrun: overwrite --out (and part files) instead of resuming",
    )
    parser.add_argument(
        "--study-column", help="inputs CSV: the study id column (default: study_id, study or id)"
    )
    parser.add_argument("--path-column", help="inputs CSV: the image path column (default: path, image, ...)")


def run(args: argparse.Namespace) -> int:
    from leadrrg.inference import shards
    from leadrrg.inference.api import load

    check_run_dir(Path(args.run))
    check_trained_overrides(args.overrides, OVERRIDABLE, "at generation time")
    if args.limit is not None and args.limit < 1:
        raise LeadrrgError(f"--limit is {args.limit}; expected a positive number of studies")
    if args.batch_size is not None and args.batch_size < 1:
        raise LeadrrgError(f"--batch-size is {args.batch_size}; expected a positive number")
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
    studies = None
    if args.inputs is not None:  # find the studies before paying for the model
        from leadrrg.inference.studies import find_studies

        studies = find_studies(args.inputs, args.study_column, args.path_column)
    shard = shards.start(args.device, resolve_device)
    try:
        generator = load(args.run, device=shard.device, seed=args.seed + shard.rank, overrides=args.overrides)
        if args.images is not None:
            status = generate_for_images(args, generator)
        elif studies is not None:
            status = generate_for_inputs(args, generator, studies, shard)
        else:
            status = generate_for_split(args, generator, shard)
    except BaseException:
        shards.stop(shard, clean=False)
        raise
    shards.stop(shard)
    return status


def evidence_mode(args) -> bool | str:
    return {None: False, "compact": True, "full": "full"}[args.evidence]


def check_run_dir(run_dir: Path) -> None:
    problem = path_problem(run_dir, "directory")
    if problem:
        raise LeadrrgError(
            f"run directory {run_dir} {problem}; expected the --out directory of leadrrg train"
        )
    if not (run_dir / "model.safetensors").is_file():
        raise LeadrrgError(
            f"run directory {run_dir} has no model.safetensors; train it first (leadrrg train) or wait for its "
            "first checkpoint"
        )


def resolve_device(name: str):
    from leadrrg.inference.api import resolve_device as _resolve_device

    try:
        return _resolve_device(name)
    except LeadrrgError as exc:
        raise LeadrrgError(f"--{exc}") from None


def generate_for_split(args, generator, shard) -> int:
    from leadrrg.data.dataset import raise_on_bad_images
    from leadrrg.data.manifests import load_studies
    from leadrrg.inference.predict import generate_split
    from leadrrg.io import atomic_open

    config = generator.config
    if args.data:
        config.data.root = args.data
    if args.format:
        config.data.format = args.format
    if not config.data.root:
        raise LeadrrgError("the run's config has no data.root; give the data root with --data DIR")
    studies = load_studies(config.data, args.split)
    if args.limit is not None:
        studies = studies[: args.limit]
    if not studies:
        raise LeadrrgError(f"split {args.split!r} of {config.data.root} has no studies to generate for")
    raise_on_bad_images(studies, config.model.max_views, f"split {args.split!r} of {config.data.root}")
    decode = config.decode
    size = args.batch_size or decode.batch_size

    def decode_into(chunk, handle) -> None:
        records = generate_split(
            generator.model,
            generator.tokenizer,
            config,
            chunk,
            decode,
            evidence=evidence_mode(args),
            batch_size=size,
            generator=generator.sampler,
        )
        for record in records:
            handle.write(json.dumps(record, allow_nan=False) + "\n")

    if shard.enabled:
        count = generate_sharded(args, shard, studies, decode_into, size * SHARD_CHUNK, include_out=False)
    else:
        records = generate_split(
            generator.model,
            generator.tokenizer,
            config,
            studies,
            decode,
            evidence=evidence_mode(args),
            batch_size=args.batch_size,
            generator=generator.sampler,
            progress=True,
        )
        with atomic_open(args.out, "w", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record, allow_nan=False) + "\n")
        count = len(records)
    if shard.is_main:
        print(
            f"wrote {count} reports for split {args.split!r} of {config.data.root} to {args.out} "
            f"({decode.strategy} decoding{f', {decode.num_beams} beams' if decode.strategy == 'beam' else ''}"
            f"{f', {shard.world_size} processes' if shard.enabled else ''})"
        )
    return 0


def generate_sharded(args, shard, studies, decode_into, chunk_size: int, include_out: bool) -> int:
    """Decode this rank's share of the studies not yet done into its part file, `chunk_size` studies per
    `decode_into(chunk, handle)` call (each flushed, so a kill loses one chunk at most), then merge every part
    into --out on rank 0 (`leadrrg.inference.shards`). Returns the number of lines in --out."""
    from leadrrg.collectives import broadcast_object
    from leadrrg.inference import shards
    from leadrrg.progress import Progress

    out = Path(args.out)
    ids = [study.id for study in studies]
    shards.check_unique(ids, f"the input of {out}")
    done = None
    if shard.is_main:
        if args.restart:
            shards.remove_parts(out)
        done = shards.finished_ids(out, include_out=include_out and not args.restart)
    done = broadcast_object(done, shard)
    todo = [study for study in studies if study.id not in done]
    if done and shard.is_main:
        print(f"resuming: {len(studies) - len(todo)} of {len(studies)} studies already done", file=sys.stderr)
    mine = shards.my_share(todo, shard)
    error = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with (
            open(shards.part_path(out, shard.rank, shard.world_size), "a", encoding="utf-8") as handle,
            Progress(len(mine), f"generate (rank {shard.rank})", enabled=shard.is_main) as bar,
        ):
            for start in range(0, len(mine), chunk_size):
                chunk = mine[start : start + chunk_size]
                decode_into(chunk, handle)
                handle.flush()
                bar.update(len(chunk))
    except Exception as exc:  # reported on every rank by gather_or_raise
        error = exc
    shards.gather_or_raise(None, error, shard)
    count, error = 0, None
    if shard.is_main:
        try:
            count = shards.merge(out, ids, include_out=include_out and not args.restart)
        except Exception as exc:
            error = exc
    shards.gather_or_raise(None, error, shard)
    return count


def generate_for_inputs(args, generator, studies, shard) -> int:
    out = Path(args.out)
    if args.limit is not None:
        studies = studies[: args.limit]
    size = args.batch_size or generator.config.decode.batch_size
    counts = {"written": 0, "failed": 0, "bad": 0}

    def decode_into(chunk, handle) -> None:
        for key, value in decode_inputs(generator, chunk, handle, size, evidence_mode(args)).items():
            counts[key] += value

    if shard.enabled:
        from leadrrg.collectives import all_gather_objects

        done_before = 0
        generate_sharded(args, shard, studies, decode_into, size * SHARD_CHUNK, include_out=True)
        totals = all_gather_objects(counts, shard)
        counts = {key: sum(c[key] for c in totals) for key in counts}
    else:
        from leadrrg.progress import Progress

        done = set() if args.restart else finished_ids(out)
        todo = [study for study in studies if study.id not in done]
        done_before = len(studies) - len(todo)
        if done:
            print(f"resuming: {done_before} of {len(studies)} studies already in {out}", file=sys.stderr)
        out.parent.mkdir(parents=True, exist_ok=True)
        with (
            open(out, "w" if args.restart else "a", encoding="utf-8") as handle,
            Progress(len(todo), "generate") as bar,
        ):
            counts = decode_inputs(generator, todo, handle, size, evidence_mode(args), bar)
    if shard.is_main:
        print(
            f"wrote {counts['written']} reports to {out} ({counts['failed']} studies without a readable image, "
            f"{counts['bad']} bad images; listed in their lines under 'error' / 'bad_images')"
            + (f"; {done_before} studies were already done" if done_before else "")
        )
    return 0


def decode_inputs(generator, studies, handle, size: int, evidence, bar=None) -> dict[str, int]:
    """Decode `studies` (without reports) `size` at a time, images read by LOAD_THREADS threads one batch ahead,
    appending one line per study to `handle` after each batch -> counts of written, failed and bad images."""
    from concurrent.futures import ThreadPoolExecutor

    import torch

    counts = {"written": 0, "failed": 0, "bad": 0}
    chunks = [studies[i : i + size] for i in range(0, len(studies), size)]
    with ThreadPoolExecutor(LOAD_THREADS) as pool:
        submit = lambda chunk: [pool.submit(read_views, s, generator.max_views) for s in chunk]  # noqa: E731
        pending = submit(chunks[0]) if chunks else []
        for index, chunk in enumerate(chunks):
            loaded = [future.result() for future in pending]
            pending = submit(chunks[index + 1]) if index + 1 < len(chunks) else []  # read ahead
            records, ready = [], []  # ready: (position, images, view_mask)
            for study, (views, bad) in zip(chunk, loaded):
                counts["bad"] += len(bad)
                record = {"id": study.id, "images": study.images}
                if bad:
                    record["bad_images"] = bad
                if views:
                    ready.append((len(records), *generator.prepare_arrays(views)))
                else:
                    record["error"] = "no readable image: " + "; ".join(b["reason"] for b in bad)
                records.append(record)
            if ready:
                images = torch.stack([r[1] for r in ready])
                view_mask = torch.stack([r[2] for r in ready])
                for (position, _, _), result in zip(
                    ready, generator.decode(images, view_mask, None, evidence)
                ):
                    records[position].update(result.to_dict())
            for record in records:
                counts["failed"] += "error" in record
                counts["written"] += "error" not in record
                handle.write(json.dumps(record, allow_nan=False) + "\n")
            handle.flush()
            if bar is not None:
                bar.update(len(chunk))
    return counts


def read_views(study, max_views: int) -> tuple[list, list[dict]]:
    """A study's first `max_views` images as gray arrays, and {path, reason} for each that could not be read."""
    from leadrrg.inference.inputs import to_gray

    views, bad = [], []
    for path in study.images[:max_views]:
        try:
            views.append(to_gray(path))
        except Exception as exc:  # a bad image is listed, never fatal
            bad.append({"path": path, "reason": str(exc)})
    return views, bad


def finished_ids(out: Path) -> set[str]:
    """Ids of the complete lines of an earlier run's output; a torn last line (killed mid-write) is removed."""
    from leadrrg.inference.shards import read_records

    return {study_id for study_id, _ in read_records(out)}


def generate_for_images(args, generator) -> int:
    paths = [str(Path(path).expanduser().resolve()) for path in args.images]
    for path in paths:
        problem = path_problem(path)
        if problem:
            raise LeadrrgError(f"image {path} {problem}; expected a PNG, JPEG or DICOM file")
    if len(paths) > generator.max_views:
        raise LeadrrgError(
            f"{len(paths)} images given but this model reads at most {generator.max_views} view(s) per study "
            "(model.max_views); give one study's views, frontal first"
        )
    result = generator.generate(paths, evidence=evidence_mode(args))
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    print(result.report)
    said = {name: value for name, value in result.findings.items() if value is not None}
    if said:
        words = {1: "present", 0: "absent", -1: "uncertain"}
        print()
        print("Findings in the report (labeler):", ", ".join(f"{n} {words[v]}" for n, v in said.items()))
    ranked = sorted(result.expert_probs.items(), key=lambda item: -item[1])
    if ranked:
        print()
        print("Expert probabilities:")
        width = max(len(name) for name, _ in ranked)
        for name, prob in ranked:
            print(f"  {name:<{width}}  {prob:.3f}")
    if result.evidence and result.evidence["layers"]:
        from leadrrg.serve.render import evidence_table

        print()
        print(evidence_table(result.evidence))
    return 0
