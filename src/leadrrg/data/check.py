"""Checking a data root before training on it (`leadrrg data check`): what was read, per split the studies kept
and skipped, the images missing or unreadable, label coverage, and every warning of the readers."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from leadrrg.config import DataConfig
from leadrrg.constants import OBSERVATIONS
from leadrrg.data.images import check_image
from leadrrg.data.manifests import available_splits, load_split, read_data

# The counts of one split, in the order `data check` prints them.
COUNTS = ("studies", "skipped_empty", "images", "missing", "unreadable", "labelled")


@dataclass
class DataCheck:
    """The result of `check_data`. `counts` maps split -> the COUNTS of that split."""

    data: DataConfig
    records: int  # records read (MIMIC entries or studies, see `unit`)
    unit: str  # "entries" (mimic_cxr per entry) or "studies"
    notes: list[str]  # how the data was read (split names mapped, files used)
    counts: dict[str, tuple[int, ...]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)  # image paths
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (image path, reason)
    labels: np.ndarray | None = None  # (N, 14) labels of the labelled studies, or None when none has labels
    warnings: list[str] = field(default_factory=list)

    @property
    def totals(self) -> tuple[int, ...]:
        """The COUNTS summed over the splits."""
        return tuple(int(sum(column)) for column in zip(*self.counts.values())) or (0,) * len(COUNTS)

    @property
    def studies(self) -> int:
        return self.totals[0]

    def label_coverage(self) -> list[tuple[str, int, int]]:
        """(observation, studies labelled positive, studies where it is mentioned) over the labelled studies."""
        if self.labels is None:
            return []
        return [
            (name, int((self.labels[:, i] == 1).sum()), int((~np.isnan(self.labels[:, i])).sum()))
            for i, name in enumerate(OBSERVATIONS)
        ]


def check_data(data: DataConfig, decode: bool = False, workers: int = 8) -> DataCheck:
    """Read `data` and check every image of every split (`decode`: decode the pixels fully, else the headers)
    with `workers` threads."""
    read = read_data(data)
    unit = "entries" if data.format == "mimic_cxr" and data.grouping == "entry" else "studies"
    check = DataCheck(data, len(read.records), unit, list(read.notes))
    all_labels = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for split in available_splits(read.records):
            result = load_split(data, split, read.records)
            paths = sorted({path for study in result.studies for path in study.images})
            exists = list(pool.map(lambda p: Path(p).is_file(), paths))
            missing = [p for p, ok in zip(paths, exists) if not ok]
            present = [p for p, ok in zip(paths, exists) if ok]
            reasons = pool.map(lambda p: check_image(p, decode=decode), present)
            unreadable = [(p, reason) for p, reason in zip(present, reasons) if reason is not None]
            labelled = [s.labels for s in result.studies if s.labels is not None]
            all_labels += labelled
            check.counts[split] = (
                len(result.studies),
                result.skipped_empty,
                len(paths),
                len(missing),
                len(unreadable),
                len(labelled),
            )
            check.missing += missing
            check.unreadable += unreadable
    check.labels = np.stack(all_labels) if all_labels else None
    check.warnings = list(read.warnings)
    skipped = check.totals[1]
    if skipped:
        check.warnings.append(f"{skipped} studies have an empty {data.section} section and are skipped")
    return check
