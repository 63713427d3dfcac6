"""What a run does before its first step, said as it goes, and the image header check done once per run.

`Startup` prints one line as each start-up stage begins and one with its seconds as it ends (`leadrrg train:
checking 272,920 image headers: done in 2.4 s; every image header is readable; 272,920 unchanged since the last
check (cached)`), from the main process only, with `Progress` for the long stages, and a last line with every
stage's seconds (`start-up done in 43.8 s: data 21.7 s, labels 5.4 s, ...`): a run on MIMIC-CXR spends a minute or
more here.

The data root is read once per run (`read_task_studies`): the main process reads it, keeps the train and val studies
and labels them, then sends them to the other processes in one broadcast; the other processes never read the root.
The header check (`shared_bad_images`) runs once per run: the main process stats every image and keeps those that
passed unchanged since the last start (`leadrrg.data.header_cache`, one file per data root in the cache folder),
every process checks a share of the rest, and the main process records the outcome.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from leadrrg import __version__
from leadrrg.collectives import DistContext, all_gather_objects, broadcast_object
from leadrrg.config import RunConfig
from leadrrg.data.dataset import check_paths, image_paths
from leadrrg.data.header_cache import HeaderCache, file_stamps, header_cache_file
from leadrrg.data.labels import labels_from_labeler
from leadrrg.data.manifests import Study, load_split, read_records
from leadrrg.errors import LeadrrgError
from leadrrg.fetch import default_cache_dir
from leadrrg.progress import Progress

HEADER_CACHE_ENV = "LEADRRG_HEADER_CACHE"  # the folder of the image header cache (default: the cache root)
TRAIN_SPLIT = "train"
VAL_SPLIT = "val"


class Phase:
    """One start-up stage under way: `update(n)` as items are done; `note` is added to the line that ends it."""

    def __init__(self, progress: Progress):
        self.progress = progress
        self.note = ""

    @property
    def count(self) -> int:
        return self.progress.count

    def update(self, n: int = 1) -> None:
        self.progress.update(n)


class Startup:
    """Start-up lines on stderr (`leadrrg train: ...`) when `enabled` (the main process, unless quiet); the
    seconds of each stage are kept in `seconds` either way."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.started = time.perf_counter()
        self.seconds: dict[str, float] = {}
        self.notes: dict[str, str] = {}

    def say(self, text: str) -> None:
        if self.enabled:
            print(f"leadrrg train: {text}", file=sys.stderr, flush=True)

    @contextmanager
    def phase(self, text: str, total: int | None = None, unit: str = "studies", stage: str | None = None):
        """Announce `text...`; yields a Phase, then says `text: done in S s[; note]` and adds the seconds to
        `stage` (default: the first word of `text`)."""
        self.say(f"{text}...")
        started = time.perf_counter()
        with Progress(total, text.split(" ")[0], unit, enabled=self.enabled and bool(total)) as bar:
            phase = Phase(bar)
            yield phase
        seconds = time.perf_counter() - started
        stage = stage or text.split(" ")[0]
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds
        if phase.note:
            self.notes[stage] = phase.note
        self.say(f"{text}: done in {seconds:.1f} s" + (f"; {phase.note}" if phase.note else ""))

    def summary(self) -> str:
        """`start-up done in S s: stage s, ...` (stages in the order they ran)."""
        total = time.perf_counter() - self.started
        stages = ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in self.seconds.items())
        return f"start-up done in {total:.1f} s: {stages}"


def default_label_cache() -> Path:
    """Where labeler output for unlabelled data sets is cached, keyed by report hash (shared across data sets;
    versioned so a changed labeler does not reuse stale labels)."""
    return default_cache_dir() / "labels" / f"report_labels-{__version__}.csv"


def load_split_studies(
    config: RunConfig,
    split: str,
    label_cache: Path | None,
    required: bool = True,
    records: list | None = None,
    startup: Startup | None = None,
) -> list:
    """Studies of `split` (from `records` when the root was read already), with missing labels filled by the
    rule-based labeler (cached by report)."""
    return label_studies(split_studies(config, split, records, required), split, label_cache, startup)


def label_studies(
    studies: list, split: str, label_cache: Path | None, startup: Startup | None = None
) -> list:
    """`studies` with missing labels filled by the rule-based labeler (cached by report in `label_cache`)."""
    unlabelled = len({s.report for s in studies if s.labels is None})
    if not unlabelled:
        return studies
    with (startup or Startup(False)).phase(
        f"labeling {unlabelled:,} {split} reports", unlabelled, "reports", stage="labels"
    ) as bar:
        progress = lambda done, total: bar.update(done - bar.count)  # noqa: E731
        if label_cache is None:
            with tempfile.TemporaryDirectory() as tmp:
                return labels_from_labeler(studies, Path(tmp) / "labels.csv", progress)
        studies = labels_from_labeler(studies, label_cache, progress)
        bar.note = f"{bar.count:,} by the labeler, {unlabelled - bar.count:,} from its cache ({label_cache})"
    return studies


def split_studies(config: RunConfig, split: str, records: list | None, required: bool) -> list:
    """The studies of `split`; [] when the data has no such split and it is not `required`."""
    try:
        return load_split(config.data, split, records).studies
    except LeadrrgError:
        if required:
            raise
        return []


def read_labelled_studies(config: RunConfig, label_cache: Path, startup: Startup) -> tuple[list, list]:
    """(train studies, val studies) of the root, read once, with missing labels filled by the labeler."""
    data = config.data
    with startup.phase(f"reading the {data.format} data at {data.root}", stage="data") as phase:
        records = read_records(data)
        train_studies = split_studies(config, TRAIN_SPLIT, records, required=True)
        val_studies = split_studies(config, VAL_SPLIT, records, required=False)
        phase.note = (
            f"{len(records):,} records, {len(train_studies):,} train and {len(val_studies):,} val studies"
        )
    del records
    if not train_studies:
        raise LeadrrgError(
            f"the {TRAIN_SPLIT!r} split of {data.root} has no studies; expected a training split"
        )
    train_studies = label_studies(train_studies, TRAIN_SPLIT, label_cache, startup)
    return train_studies, label_studies(val_studies, VAL_SPLIT, label_cache, startup)


def read_task_studies(
    config: RunConfig, ctx: DistContext, label_cache: Path, startup: Startup, read=read_labelled_studies
) -> tuple[list, list]:
    """`read(config, label_cache, startup)` (the labelled train and val studies) on the main process alone, which
    sends them to the others in one broadcast: under torchrun the root is read, split and labelled once, not once
    per process. An error there is raised on every process (the same LeadrrgError text), so none is left waiting."""
    if not ctx.enabled:
        return read(config, label_cache, startup)
    studies, failure = None, None
    if ctx.is_main:
        try:
            studies = read(config, label_cache, startup)
        except Exception as exc:  # noqa: BLE001  (raised again below, after the others are told)
            failure = exc
    if failure is not None:
        broadcast_object(("failed", _failure_text(failure)), ctx)
        raise failure
    with startup.phase(
        f"sending the studies to {ctx.world_size - 1} other process(es)", stage="data share"
    ) as phase:
        packed = ("ok", tuple(_pack_studies(split) for split in studies)) if ctx.is_main else None
        shared = broadcast_object(packed, ctx)
        if shared[0] == "failed":
            raise LeadrrgError(shared[1])
        if studies is None:
            studies = tuple(_unpack_studies(columns) for columns in shared[1])
        phase.note = f"{len(studies[0]):,} train and {len(studies[1]):,} val studies"
    return studies[0], studies[1]


def _failure_text(exc: BaseException | None) -> str:
    if exc is None or isinstance(exc, LeadrrgError):
        return str(exc)
    return f"the main process failed to read the data ({type(exc).__name__}: {exc})"


def _pack_studies(studies: list[Study]) -> dict:
    """`studies` as columns (labels stacked in one array), which pickle far faster than one object per study."""
    labels = [s.labels for s in studies]
    known = np.array([row is not None for row in labels], dtype=bool)
    stacked = np.stack([row for row in labels if row is not None]) if known.any() else None
    return {
        "id": [s.id for s in studies],
        "split": [s.split for s in studies],
        "images": [s.images for s in studies],
        "report": [s.report for s in studies],
        "labels": stacked,
        "known": known,
        "attributes": [s.attributes for s in studies],
    }


def _unpack_studies(columns: dict) -> list[Study]:
    rows = iter(columns["labels"] if columns["labels"] is not None else ())
    labels = [next(rows) if known else None for known in columns["known"]]
    fields = zip(
        columns["id"], columns["split"], columns["images"], columns["report"], labels, columns["attributes"]
    )
    return [Study(*values) for values in fields]


def default_header_cache(root: str) -> Path:
    """Where the header check of data root `root` is remembered: `$LEADRRG_HEADER_CACHE` if set, else the cache
    folder (never inside the root, which may be read-only); versioned so that a changed check does not trust an
    older one."""
    folder = os.environ.get(HEADER_CACHE_ENV)
    return header_cache_file(Path(folder) if folder else default_cache_dir(), root, __version__)


def shared_bad_images(
    studies: list, max_views: int, ctx: DistContext, startup: Startup, cache_file: Path | None, root: str
) -> list[tuple[str, str]]:
    """Every unreadable image among `studies`' views (in path order, on every process), checked once per run: the
    main process stats each path and skips those that passed unchanged since the last check (`cache_file`; None:
    check all), the processes check a share of the rest each, and the main process updates the cache."""
    paths = image_paths(studies, max_views)
    cache, stamps, todo = None, None, None
    with startup.phase(f"checking {len(paths):,} image headers", stage="image headers") as phase:
        if ctx.is_main:
            stamps = file_stamps(paths)
            cache = HeaderCache(cache_file, root) if cache_file is not None else None
            todo = np.asarray(
                cache.stale(paths, stamps) if cache is not None else range(len(paths)), np.int64
            )
        todo = broadcast_object(todo, ctx)  # indices into `paths`, the same list on every process
        unchanged, mine = len(paths) - len(todo), todo[ctx.rank :: ctx.world_size]
        if unchanged and len(todo):
            where = f", {len(mine):,} on this process" if ctx.enabled else ""
            startup.say(
                f"{unchanged:,} unchanged since the last check (cached); checking {len(todo):,}{where}"
            )
        found = _check_share([paths[index] for index in mine], mine.tolist(), startup.enabled)
        bad = dict(sum(all_gather_objects(found, ctx), []))
        if cache is not None:
            for index in todo.tolist():
                cache.record(paths[index], stamps[index], passed=index not in bad)
            cache.save()
        phase.note = f"{len(bad):,} of {len(paths):,} unreadable" if bad else "every image header is readable"
        if unchanged:
            phase.note += f"; {unchanged:,} unchanged since the last check (cached)"
    return [(paths[index], bad[index]) for index in sorted(bad)]


def _check_share(paths: list[str], indices: list[int], show: bool) -> list[tuple[int, str]]:
    """(index, reason) of every unreadable image of `paths` (`indices`: their indices in the whole list)."""
    index_of = dict(zip(paths, indices))
    with Progress(len(paths), "checking", "images", enabled=show and bool(paths)) as bar:
        return [(index_of[path], reason) for path, reason in check_paths(paths, progress=bar.update)]
