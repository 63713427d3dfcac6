"""Batch generation into a JSON-lines file, resumable and sharded: what `leadrrg generate --split` and
`leadrrg generate --inputs` do, callable from Python.

    generator = leadrrg.load("runs/lead")
    count = write_split(generator, split_studies(generator.config, "test"), "preds.jsonl")
    counts = write_inputs(generator, find_studies("scans/"), "reports.jsonl")   # resumes an interrupted run

A split (studies with reports) becomes prediction records (`leadrrg.inference.predict`), written atomically by
one process. Studies without reports (`leadrrg.inference.studies`) are decoded `decode.batch_size` at a time,
their images read by LOAD_THREADS threads one batch ahead, and appended batch by batch, so an interrupted run
resumes where it stopped (`restart=True` starts over); a bad image is listed in its study's line, never fatal.

Under torchrun (`shard` from `leadrrg.inference.shards.joined`) each rank decodes every N-th study still to do
into its part file, SHARD_CHUNK batches between two flushes, and rank 0 merges the parts into one file in input
order (`leadrrg.inference.shards`); a killed sharded run resumes from its part files with any number of processes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import torch

from leadrrg.collectives import all_gather_objects
from leadrrg.config import DataConfig, RunConfig
from leadrrg.data.dataset import raise_on_bad_images
from leadrrg.data.manifests import Study, load_studies
from leadrrg.data.readers.chexpert_plus import CSV_GLOB, LABEL_DIRS, SECTION_LABELS
from leadrrg.data.readers.jsonl import MANIFEST_NAME
from leadrrg.data.readers.mimic_cxr import LABEL_NAMES
from leadrrg.data.readers.r2gen import ANNOTATION_NAME
from leadrrg.data.records import data_file
from leadrrg.errors import LeadrrgError
from leadrrg.inference import shards
from leadrrg.inference.api import ReportGenerator
from leadrrg.inference.inputs import to_gray
from leadrrg.inference.predict import generate_split
from leadrrg.inference.shards import Shard
from leadrrg.io import atomic_open, check_not_input, check_writable, exclusive_lock, output_error, sha256_file
from leadrrg.progress import Progress
from leadrrg.runs.files import CONFIG_FILE, MODEL_FILE, TOKENIZER_DIR, weights_checksum

LOAD_THREADS = 2  # inputs: images are read by this many threads, one batch ahead of decoding
SHARD_CHUNK = 4  # under torchrun, batches decoded between two flushes of a rank's part file
SAME_REPORTS = ("batch_size", "cache", "compile")  # decode settings that leave the reports as they are


@dataclass
class InputsResult:
    """What `write_inputs` wrote: studies with a report, studies none of whose images could be read, bad images,
    studies already done by an earlier run (skipped), and the images beyond model.max_views that were not read
    (`extra_images`, in `extra_studies` studies; listed in their lines under `ignored_images`)."""

    written: int = 0
    failed: int = 0
    bad: int = 0
    done_before: int = 0
    extra_images: int = 0
    extra_studies: int = 0


def json_line(record: dict[str, Any]) -> str:
    return json.dumps(record, allow_nan=False) + "\n"


def made_by(generator: ReportGenerator, run_dir: str | Path, evidence: bool | str = False) -> dict[str, Any]:
    """What wrote an `--inputs` line, recorded in it as `made_by` so that a resume by another run or with other
    decode settings is refused: the run's weights checksum, the decode settings that shape a report (all but
    SAME_REPORTS) and the evidence option."""
    weights = Path(run_dir) / MODEL_FILE
    decode = dataclasses.asdict(generator.config.decode)
    record = {
        "weights_sha256": weights_checksum(weights)
        or sha256_file(weights),  # the file's: runs before checksums
        "decode": {key: value for key, value in decode.items() if key not in SAME_REPORTS},
        "evidence": evidence,
    }
    return json.loads(json.dumps(record))  # as a line reads back, to compare with one


def split_studies(config: RunConfig, split: str, limit: int | None = None) -> list[Study]:
    """The first `limit` studies of `split` of the run's data (config.data), their images checked readable."""
    studies = load_studies(config.data, split)
    if limit is not None:
        studies = studies[:limit]
    if not studies:
        raise LeadrrgError(f"split {split!r} of {config.data.root} has no studies to generate for")
    raise_on_bad_images(studies, config.model.max_views, f"split {split!r} of {config.data.root}")
    return studies


def check_out_not_input(
    out: str | Path,
    run_dir: str | Path,
    studies: Sequence = (),
    data: DataConfig | None = None,
    inputs: str | None = None,
) -> None:
    """Refuse (LeadrrgError, before any decoding) an `out` that is a file the generation reads, which writing the
    predictions would destroy: the run's config, weights or tokenizer, the studies' images, the data root's
    manifest, annotation, report CSV or label files (`data`), or the `--inputs` CSV (`inputs`)."""
    files = [*run_files(run_dir), *(image for study in studies for image in study.images)]
    if data is not None:
        files += data_files(data)
    if inputs is not None and Path(inputs).is_file():
        files.append(Path(inputs))
    check_not_input(out, files, "--out")


def run_files(run_dir: str | Path) -> list[Path]:
    """The files of a run directory that loading it reads: config, weights and tokenizer."""
    run_dir = Path(run_dir)
    tokenizer = run_dir / TOKENIZER_DIR
    return [
        run_dir / CONFIG_FILE,
        run_dir / MODEL_FILE,
        *(tokenizer.rglob("*") if tokenizer.is_dir() else []),
    ]


def data_files(data: DataConfig) -> list[Path]:
    """The files a data root is read from, whatever its layout (`leadrrg.data.readers`): the manifest, the
    annotation, the report CSVs and the label files, those named by data.annotation_file / data.label_file
    included."""
    root = Path(data.root)
    files = [root / MANIFEST_NAME, root / ANNOTATION_NAME, *(root / name for name in LABEL_NAMES)]
    if root.is_dir():
        files += [*root.glob("*annotation*.json"), *root.glob(CSV_GLOB)]
    files += [
        root / folder / f"{name}_fixed.json" for folder in LABEL_DIRS for name in SECTION_LABELS.values()
    ]
    files += [data_file(root, name) for name in (data.annotation_file, data.label_file) if name]
    return files


def write_split(
    generator: ReportGenerator,
    studies: Sequence[Study],
    out: str | Path,
    shard: Shard | None = None,
    evidence: bool | str = False,
    restart: bool = False,
    made_by: dict | None = None,
) -> int:
    """Prediction records of `studies` (`generate_split`) into `out`: atomically by one process, or through part
    files under torchrun (resumed unless `restart`). With `made_by` (the `made_by` function, as `leadrrg
    generate` gives it) one process resumes too, as `write_inputs` does: each line records it, the studies
    already in `out` (or in a part file a killed run left) are skipped and the rest are appended to the part
    file, merged into `out` in split order at the end, under `<out>.lock`; lines of another run or other decode
    settings are refused. Returns the number of records in `out`."""
    out = Path(out)
    shard = shard or Shard(device=generator.device)
    if not shard.enabled and made_by is None:
        records = generate_split(generator, studies, evidence=evidence, progress=True)
        with atomic_open(out, "w", encoding="utf-8") as handle:
            handle.writelines(json_line(record) for record in records)
        return len(records)

    def decode_into(chunk: Sequence[Study], handle: IO[str]) -> None:
        for record in generate_split(generator, chunk, evidence=evidence):
            handle.write(json_line(record if made_by is None else {**record, "made_by": made_by}))

    chunk_size = generator.config.decode.batch_size * SHARD_CHUNK
    resume = made_by is not None  # lines already in `out` count as done; those of other ids are left out
    return generate_sharded(studies, out, shard, decode_into, chunk_size, restart, resume, made_by, False)


def write_inputs(
    generator: ReportGenerator,
    studies: Sequence,
    out: str | Path,
    shard: Shard | None = None,
    evidence: bool | str = False,
    restart: bool = False,
    made_by: dict | None = None,
) -> InputsResult:
    """Reports for studies without reports (`leadrrg.inference.studies.InputStudy`) appended to `out`, one line
    each, resuming an earlier run's `out` (and part files under torchrun) unless `restart`. `out` is locked
    (`<out>.lock`) for the run, so a second run into it is refused. With `made_by` (the `made_by` function), each
    line records it and a resume into lines written by another run or other decode settings is refused."""
    out = Path(out)
    shard = shard or Shard(device=generator.device)
    result = InputsResult()
    if shard.enabled:

        def decode_into(chunk: Sequence, handle: IO[str]) -> None:
            add(result, decode_inputs(generator, chunk, handle, evidence, made_by=made_by))

        chunk_size = generator.config.decode.batch_size * SHARD_CHUNK
        generate_sharded(studies, out, shard, decode_into, chunk_size, restart, True, made_by)
        totals = InputsResult()
        for counts in all_gather_objects(result, shard):
            add(totals, counts)
        return totals
    check_writable(out, "--out")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise output_error(exc, out, "--out") from None
    with exclusive_lock(shards.lock_path(out), f"--out {out}"):
        done = set() if restart else {study_id for study_id, _ in shards.read_records(out, made_by)}
        todo = [study for study in studies if study.id not in done]
        result.done_before = len(studies) - len(todo)
        if done:
            print(
                f"resuming: {result.done_before} of {len(studies)} studies already in {out}", file=sys.stderr
            )
        try:
            with (
                open(out, "w" if restart else "a", encoding="utf-8") as handle,
                Progress(len(todo), "generate") as bar,
            ):
                add(result, decode_inputs(generator, todo, handle, evidence, bar, made_by))
        except OSError as exc:  # full or forbidden mid-run: the lines written so far are kept, to resume
            raise output_error(exc, out, "--out") from None
    return result


def add(total: InputsResult, counts: InputsResult) -> None:
    total.written += counts.written
    total.failed += counts.failed
    total.bad += counts.bad
    total.extra_images += counts.extra_images
    total.extra_studies += counts.extra_studies


def generate_sharded(
    studies: Sequence,
    out: Path,
    shard: Shard,
    decode_into: Callable[[Sequence, IO[str]], None],
    chunk_size: int,
    restart: bool,
    include_out: bool,
    made_by: dict | None = None,
    keep_others: bool = True,
) -> int:
    """Decode this rank's share of the studies not yet done into its part file, `chunk_size` studies per
    `decode_into(chunk, handle)` call (each flushed, so a kill loses one chunk at most), then merge every part
    into `out` on rank 0 (`leadrrg.inference.shards`; with `include_out`, lines already in `out` count as done;
    with `made_by`, lines of another run are refused; `keep_others=False` leaves lines of other ids out of `out`).
    Rank 0 holds `<out>.lock` throughout. Returns the number of lines in `out`."""
    ids = [study.id for study in studies]
    shards.check_unique(ids, f"the input of {out}")
    include_out = include_out and not restart
    with contextlib.ExitStack() as lock:
        done, error = set(), None
        if shard.is_main:
            try:
                out.parent.mkdir(parents=True, exist_ok=True)
                lock.enter_context(exclusive_lock(shards.lock_path(out), f"--out {out}"))
                if restart:
                    shards.remove_parts(out)
                done = shards.finished_ids(out, include_out, made_by)
            except Exception as exc:  # reported on every rank by gather_or_raise
                error = exc
        done = shards.gather_or_raise(done, error, shard)[0]
        merge = (include_out, keep_others)
        return _decode_and_merge(studies, ids, done, out, shard, decode_into, chunk_size, merge)


def _decode_and_merge(
    studies: Sequence,
    ids: list[str],
    done: set[str],
    out: Path,
    shard: Shard,
    decode_into: Callable[[Sequence, IO[str]], None],
    chunk_size: int,
    merge: tuple[bool, bool],
) -> int:
    """`generate_sharded` once the studies already `done` are known: decode this rank's share, merge on rank 0."""
    todo = [study for study in studies if study.id not in done]
    if done and shard.is_main:
        print(f"resuming: {len(studies) - len(todo)} of {len(studies)} studies already done", file=sys.stderr)
    mine = shards.my_share(todo, shard)
    error = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with (
            open(shards.part_path(out, shard.rank, shard.world_size), "a", encoding="utf-8") as handle,
            Progress(
                len(mine),
                f"generate (rank {shard.rank})" if shard.enabled else "generate",
                enabled=shard.is_main,
            ) as bar,
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
            count = shards.merge(out, ids, include_out=merge[0], keep_others=merge[1])
        except Exception as exc:
            error = exc
    shards.gather_or_raise(None, error, shard)
    return count


def decode_inputs(
    generator: ReportGenerator,
    studies: Sequence,
    handle: IO[str],
    evidence: bool | str,
    bar=None,
    made_by: dict | None = None,
) -> InputsResult:
    """Decode `studies` (without reports) `decode.batch_size` at a time, images read by LOAD_THREADS threads one
    batch ahead, appending one line per study to `handle` after each batch (with `made_by` in it when given) ->
    counts of written, failed and bad images."""
    size = generator.config.decode.batch_size
    counts = InputsResult()
    chunks = [studies[i : i + size] for i in range(0, len(studies), size)]
    with ThreadPoolExecutor(LOAD_THREADS) as pool:

        def submit(chunk: Sequence) -> list:
            return [pool.submit(read_views, study, generator.max_views) for study in chunk]

        pending = submit(chunks[0]) if chunks else []
        for index, chunk in enumerate(chunks):
            loaded = [future.result() for future in pending]
            pending = submit(chunks[index + 1]) if index + 1 < len(chunks) else []  # read ahead
            records = decode_chunk(generator, chunk, loaded, evidence, counts)
            for record in records:
                if made_by is not None:
                    record["made_by"] = made_by
                counts.failed += "error" in record
                counts.written += "error" not in record
                handle.write(json_line(record))
            handle.flush()
            if bar is not None:
                bar.update(len(chunk))
    return counts


def decode_chunk(
    generator: ReportGenerator,
    chunk: Sequence,
    loaded: list[tuple[list, list[dict]]],
    evidence: bool | str,
    counts: InputsResult,
) -> list[dict[str, Any]]:
    """One line per study of `chunk`, given its read views and bad images: the report, or the error when none
    of its images could be read. `images` lists the first max_views images (those read, frontal first), and
    `ignored_images` the rest, which the model does not read."""
    records, ready = [], []  # ready: (position, images, view_mask)
    for study, (views, bad) in zip(chunk, loaded):
        counts.bad += len(bad)
        record = {"id": study.id, "images": study.images[: generator.max_views]}
        extra = study.images[generator.max_views :]
        if extra:
            record["ignored_images"] = extra
            counts.extra_images += len(extra)
            counts.extra_studies += 1
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
        for (position, _, _), result in zip(ready, generator.decode(images, view_mask, None, evidence)):
            records[position].update(result.to_dict())
    return records


def read_views(study, max_views: int) -> tuple[list, list[dict]]:
    """A study's first `max_views` images as gray arrays, and {path, reason} for each that could not be read."""
    views, bad = [], []
    for path in study.images[:max_views]:
        try:
            views.append(to_gray(path))
        except Exception as exc:  # a bad image is listed, never fatal
            bad.append({"path": path, "reason": str(exc)})
    return views, bad
