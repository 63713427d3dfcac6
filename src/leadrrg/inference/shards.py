"""Sharded inference under torchrun: each rank decodes a share of the studies into its own part file, and
rank 0 merges the parts into one predictions file in input order, checked for duplicates and gaps.

    torchrun --nproc_per_node N -m leadrrg.cli generate --run-dir RUN --split test --out preds.jsonl

`leadrrg.inference.batch` decodes into the part files and merges them.

Part files sit beside the output (`preds.jsonl.part<r>of<N>`), one JSON record a line, appended batch by
batch, so a killed run resumes: studies already in a part file (of any world size) or in the output are not
decoded again. Rank r decodes the r-th, (r+N)-th, ... study still to do. Inference never imports the training
code; its collectives are `leadrrg.collectives`, shared with training (gloo on CPUs, NCCL on GPUs). A single process (no torchrun)
is world size 1 and every helper is a no-op.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from leadrrg.collectives import DistContext, all_gather_objects, shutdown
from leadrrg.errors import LeadrrgError
from leadrrg.io import atomic_open, atomic_write_text, read_text

Shard = DistContext  # this process's place among the ranks, and the device it decodes on


def launched_world_size() -> int:
    """WORLD_SIZE set by torchrun (1 without it)."""
    try:
        return max(int(os.environ.get("WORLD_SIZE", "1")), 1)
    except ValueError:
        return 1


def start(device: str, resolve: Callable[[str], torch.device]) -> Shard:
    """The Shard of this process: under torchrun, joins the process group on this rank's device (`auto` and
    `cuda` mean cuda:LOCAL_RANK); otherwise world size 1 on `resolve(device)`."""
    world_size = launched_world_size()
    if world_size == 1:
        return Shard(device=resolve(device))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device in ("auto", "cuda") and torch.cuda.is_available():
        device = f"cuda:{local_rank}"
    resolved = resolve(device)
    owns = False
    if not dist.is_initialized():
        if resolved.type == "cuda":
            torch.cuda.set_device(resolved)
        dist.init_process_group(backend="nccl" if resolved.type == "cuda" else "gloo")
        owns = True
    return Shard(dist.get_rank(), dist.get_world_size(), local_rank, resolved, owns)


@contextmanager
def joined(device: str, resolve: Callable[[str], torch.device]) -> Iterator[Shard]:
    """`start` for the block: the process group this process joined is left after it (uncleanly when the block
    raised: other ranks may be gone)."""
    shard = start(device, resolve)
    try:
        yield shard
    except BaseException:
        shutdown(shard, clean=False)
        raise
    shutdown(shard)


def gather_or_raise(result: Any, error: BaseException | None, shard: Shard) -> list[Any]:
    """Every rank's `result`, from a collective each rank reaches whether it failed or not: if any rank failed,
    every rank raises (a LeadrrgError naming the failed rank on the others), so one rank's error never leaves
    the others waiting in the next collective."""
    text = None if error is None else f"{type(error).__name__}: {error}"
    gathered = all_gather_objects((result, text), shard)
    if error is not None:
        raise error
    for rank, (_, other) in enumerate(gathered):
        if other is not None:
            raise LeadrrgError(
                f"rank {rank} of {shard.world_size} failed ({other}); the part files are kept: rerun to resume"
            )
    return [value for value, _ in gathered]


# --------------------------------------------------------------------------------------------------
# Part files


def part_path(out: Path, rank: int, world_size: int) -> Path:
    return out.with_name(f"{out.name}.part{rank}of{world_size}")


def part_paths(out: Path) -> list[Path]:
    """Every part file of `out`, of any world size, in name order."""
    if not out.parent.is_dir():
        return []
    return sorted(p for p in out.parent.glob(f"{out.name}.part*of*") if p.is_file())


def read_records(path: Path, made_by: dict | None = None) -> list[tuple[str, str]]:
    """(id, line) of the records of a JSONL predictions file (`out` or a part file), each line ending in a
    newline. Blank lines are skipped. A torn last line (a kill mid-write: no newline at its end and not a whole
    JSON object) is dropped from the file, so that appending goes on from a clean line end; any other line that
    is not a JSON object with an `id` is refused (a LeadrrgError naming the line), never silently cut away with
    the lines after it. With `made_by`, a line not written by that run and settings is refused (`check_made_by`)."""
    if not path.is_file():
        return []
    expected = "leadrrg predictions (one JSON object with an 'id' a line)"
    raw = read_text(path, "predictions file", expected)
    lines = raw.split("\n")
    last = lines.pop()  # "" when the file ends with a newline
    kept = [(number, line) for number, line in enumerate(lines, start=1) if line.strip()]
    torn = last.lstrip().startswith("{") and not _is_json(last)
    if last.strip() and not torn:
        kept.append((len(lines) + 1, last))  # a whole record, only its newline missing
    records: list[tuple[str, str]] = []
    for number, line in kept:
        record = _is_record(line)
        if not record:
            raise LeadrrgError(
                f"{path}, line {number}: not a JSON object with an 'id'; expected {expected}: fix or remove "
                "that line, or write to another file"
            )
        if made_by is not None:
            check_made_by(path, number, record, made_by)
        records.append((str(record["id"]), line.removesuffix("\r") + "\n"))
    if torn or last.strip():
        atomic_write_text(path, raw[: len(raw) - len(last)] + ("" if torn else last + "\n"))
    return records


def check_made_by(path: Path, number: int, record: dict, made_by: dict) -> None:
    """Refuse (LeadrrgError naming the file, the line and what differs) a record whose `made_by` is not
    `made_by`: resuming into its file would mix two models' (or two decode settings') reports in one file."""
    theirs = record.get("made_by")
    if theirs == made_by:
        return
    if isinstance(theirs, dict):
        ours_flat, theirs_flat = _flat(made_by), _flat(theirs)
        differ = sorted(
            k for k in ours_flat.keys() | theirs_flat.keys() if ours_flat.get(k) != theirs_flat.get(k)
        )
        what = f"was written by another run or other decode settings ({', '.join(differ)} differ)"
    else:
        what = "has no 'made_by' (written by an older leadrrg or another program)"
    raise LeadrrgError(
        f"{path}, line {number} {what}; expected only reports of this run and decode settings, as resuming "
        "would mix two models' reports in one file: use a new --out, or --restart to overwrite it"
    )


def _flat(value: dict, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, item in value.items():
        if isinstance(item, dict) and item and not prefix:
            flat.update(_flat(item, f"{key}."))
        else:
            flat[prefix + key] = item
    return flat


def _is_json(line: str) -> bool:
    try:
        json.loads(line)
    except json.JSONDecodeError:
        return False
    return True


def _is_record(line: str) -> dict | None:
    """The JSON object with an `id` that `line` holds, or None."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    return record if isinstance(record, dict) and "id" in record else None


def finished_ids(out: Path, include_out: bool, made_by: dict | None = None) -> set[str]:
    """Ids already decoded: in the part files of `out` and, with `include_out`, in `out` itself (with `made_by`,
    each line checked to be of that run and settings: `check_made_by`)."""
    sources = part_paths(out) + ([out] if include_out else [])
    return {study_id for path in sources for study_id, _ in read_records(path, made_by)}


def lock_path(out: Path) -> Path:
    """The lock file held beside `out` while a run writes it (`leadrrg.io.exclusive_lock`)."""
    return out.with_name(f"{out.name}.lock")


def my_share(items: Sequence, shard: Shard) -> list:
    """This rank's items: every world_size-th, starting at its rank."""
    return list(items[shard.rank :: shard.world_size])


def check_unique(ids: Sequence[str], what: str) -> None:
    seen: set[str] = set()
    for study_id in ids:
        if study_id in seen:
            raise LeadrrgError(
                f"{what} has study id {study_id!r} twice; expected unique ids to split and merge the studies"
            )
        seen.add(study_id)


def merge(out: Path, ids: Sequence[str], include_out: bool, keep_others: bool = True) -> int:
    """Write `out` atomically: one line per id of `ids`, in that order, from the part files (and `out` itself
    with `include_out`); refuse a duplicate or a gap with a LeadrrgError, keeping the parts. Lines of ids not
    in `ids` (an earlier run with a larger --limit, or other studies' reports) are left out of a split's file,
    and kept, first and as they were, with `include_out` (unless `keep_others` is False, as for a resumed split):
    a resumed `--inputs` file never loses a report.
    Removes the parts once `out` is complete; returns the number of lines."""
    parts = part_paths(out)
    line_of: dict[str, str] = {}
    for path in ([out] if include_out else []) + parts:
        for study_id, line in read_records(path):
            if study_id in line_of:
                raise LeadrrgError(
                    f"study {study_id!r} is in two of the part files of {out} (one is {path.name}); expected each "
                    f"study decoded once: remove the parts and rerun with --restart"
                )
            line_of[study_id] = line
    missing = [study_id for study_id in ids if study_id not in line_of]
    if missing:
        raise LeadrrgError(
            f"the part files of {out} lack {len(missing)} of {len(ids)} studies (first {missing[0]!r}); "
            "expected every study decoded: rerun the same command to finish them"
        )
    wanted = set(ids)
    keep = include_out and keep_others
    kept = [line for study_id, line in line_of.items() if study_id not in wanted] if keep else []
    with atomic_open(out, "w", encoding="utf-8") as handle:
        handle.writelines(kept)
        for study_id in ids:
            handle.write(line_of[study_id])
    for path in parts:
        path.unlink(missing_ok=True)
    return len(kept) + len(ids)


def remove_parts(out: Path) -> None:
    for path in part_paths(out):
        path.unlink(missing_ok=True)
