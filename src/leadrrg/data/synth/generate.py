"""SynthCXR: procedural frontal chest radiographs with known findings and matching reports.

A study is drawn in three independent streams derived from (seed, split, index): its findings
(`sample_findings`, from the co-occurrence prior of `SynthConfig` or, for `shift_test`, independently at
the same marginal prevalence), its report (`write_report`) and its image (`render_image`). `synthesize`
writes a data set directory:

    DIR/images/<study_id>/0.png   8-bit grayscale
    DIR/manifest.jsonl            id, split, images (relative to DIR), report, labels (14 ints), findings
    DIR/annotation.json           R2Gen layout: {"train": [{id, report, image_path, split}], ...}
    DIR/synth_config.json         the prior the studies were drawn from

Everything is written into a temporary sibling directory that is renamed to DIR only when complete.
numpy and Pillow only (no torch). The shared types live in `synth_types`, the prior in `synth_prior`, the
renderer in `synth_render` and the report writer in `synth_reports`; their public names are importable
from here too.
"""

from __future__ import annotations

import functools
import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from leadrrg.constants import OBSERVATIONS
from leadrrg.data.synth.prior import findings_from_labels, marginal_prevalence, sample_findings
from leadrrg.data.synth.render import render_image
from leadrrg.data.synth.reports import write_report
from leadrrg.data.synth.types import (
    DEVICES,
    FINDING_NAMES,
    SEVERITIES,
    SIDES,
    SPLITS,
    ZONES,
    Finding,
    Findings,
    Syndrome,
    SynthConfig,
    check_synth_output,
)
from leadrrg.errors import LeadrrgError
from leadrrg.io import atomic_directory

__all__ = [
    "DEVICES",
    "FINDING_NAMES",
    "SEVERITIES",
    "SIDES",
    "SPLITS",
    "ZONES",
    "Finding",
    "Findings",
    "Syndrome",
    "SynthConfig",
    "findings_from_labels",
    "make_study",
    "marginal_prevalence",
    "render_image",
    "sample_findings",
    "study_id",
    "synthesize",
    "write_contact_sheet",
    "write_report",
]


# --------------------------------------------------------------------------------------------------
# Studies and data sets


def study_id(split: str, index: int) -> str:
    return f"{split}-{index:06d}"


def _study_rngs(seed: int, split: str, index: int) -> list[np.random.Generator]:
    """Independent streams (findings, report, image) for one study, from (seed, split, index) only."""
    sequence = np.random.SeedSequence([seed, SPLITS.index(split), index])
    return [np.random.default_rng(child) for child in sequence.spawn(3)]


def make_study(
    split: str, index: int, size: int, seed: int, config: SynthConfig
) -> tuple[dict[str, Any], np.ndarray]:
    """One study's manifest record (without paths) and its image."""
    rng_findings, rng_report, rng_image = _study_rngs(seed, split, index)
    findings = sample_findings(rng_findings, config, independent=split == "shift_test")
    report = write_report(findings, rng_report, config)
    image = render_image(findings, size, rng_image)
    record = {
        "id": study_id(split, index),
        "split": split,
        "report": report,
        "labels": findings.labels().tolist(),
        "findings": findings.to_dict(),
    }
    return record, image


def _png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image, mode="L").save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _work(task: tuple[str, int, int, int, str, str]) -> dict[str, Any]:
    """Worker: render one study and write its PNG under `root`; return its manifest record."""
    split, index, size, seed, config_json, root = task
    config = _config_for(config_json)
    record, image = make_study(split, index, size, seed, config)
    relative = f"images/{record['id']}/0.png"
    path = Path(root) / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_png_bytes(image))
    return {
        "id": record["id"],
        "split": split,
        "images": [relative],
        **{k: record[k] for k in ("report", "labels", "findings")},
    }


@functools.lru_cache(maxsize=4)
def _config_for(config_json: str) -> SynthConfig:
    return SynthConfig.from_dict(json.loads(config_json))


def _check_counts(counts: dict[str, int]) -> None:
    for split, n in counts.items():
        if split not in SPLITS:
            raise LeadrrgError(f"unknown split {split!r}; expected one of: {', '.join(SPLITS)}")
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 0:
            raise LeadrrgError(f"count for split {split!r} is {n!r}; expected a non-negative integer")
    if sum(counts.values()) == 0:
        raise LeadrrgError("all split counts are 0; expected at least one study to synthesise")


def parallel_map(work: Callable[[Any], Any], tasks: list[tuple], workers: int) -> Iterator[Any]:
    """`work` over `tasks` in order, in `workers` spawned processes (`work` must be a module-level function)."""
    if workers <= 1 or len(tasks) < 2:
        yield from map(work, tasks)
        return
    import multiprocessing

    # spawn: safe even when the caller has torch (and its threads) loaded.
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        yield from pool.imap(work, tasks, chunksize=max(1, min(64, len(tasks) // (workers * 8))))


def synthesize(
    out_dir: str | Path,
    counts: dict[str, int],
    size: int = 128,
    seed: int = 0,
    workers: int = 1,
    config: SynthConfig | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Write a SynthCXR data set to `out_dir` (see the module docstring); return its path.

    The same (counts, size, seed, config) give byte-identical files for any number of workers."""
    out = Path(out_dir)
    _check_counts(counts)
    if size < 32 or size > 2048:
        raise LeadrrgError(f"image size {size} is out of range; expected 32..2048 pixels")
    if workers < 1:
        raise LeadrrgError(f"workers is {workers}; expected at least 1")
    check_synth_output(out, overwrite)
    config = config or SynthConfig()
    config_json = config.to_json()
    with atomic_directory(out) as tmp:
        tasks = [
            (split, i, size, seed, config_json, str(tmp))
            for split in SPLITS
            for i in range(counts.get(split, 0))
        ]
        records = parallel_map(_work, tasks, workers)
        if progress:
            from leadrrg.progress import progress_iter  # a bar on a terminal, plain lines in a log

            records = progress_iter(records, len(tasks), "synth")
        with open(tmp / "manifest.jsonl", "w", encoding="utf-8") as manifest:
            annotation: dict[str, list[dict[str, Any]]] = {split: [] for split in SPLITS}
            for record in records:
                manifest.write(json.dumps(record) + "\n")
                annotation[record["split"]].append(
                    {
                        "id": record["id"],
                        "report": record["report"],
                        "image_path": record["images"],
                        "split": record["split"],
                    }
                )
        (tmp / "annotation.json").write_text(json.dumps(annotation) + "\n", encoding="utf-8")
        (tmp / "synth_config.json").write_text(config_json + "\n", encoding="utf-8")
    return out


def read_manifest(data_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(data_dir) / "manifest.jsonl"
    if not path.is_file():
        raise LeadrrgError(f"{path} does not exist; expected a SynthCXR directory written by `leadrrg synth`")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# --------------------------------------------------------------------------------------------------
# Preview


def write_contact_sheet(data_dir: str | Path, path: str | Path, count: int = 24, columns: int = 6) -> Path:
    """A grid of studies from `data_dir` with their positive findings as captions (PNG).

    Studies are picked to cover as many different findings as possible, then in order."""
    from PIL import Image, ImageDraw, ImageFont

    data_dir = Path(data_dir)
    records = read_manifest(data_dir)
    chosen: list[dict[str, Any]] = []
    covered: set[str] = set()
    for record in records:  # greedy coverage of the observations
        names = {OBSERVATIONS[i] for i, v in enumerate(record["labels"]) if v}
        if names - covered and len(chosen) < count:
            chosen.append(record)
            covered |= names
    for record in records:
        if len(chosen) >= count:
            break
        if record not in chosen:
            chosen.append(record)
    font = ImageFont.load_default()
    tile = 192
    caption_h = 40
    rows = (len(chosen) + columns - 1) // columns
    sheet = Image.new("L", (columns * tile, rows * (tile + caption_h)), 255)
    draw = ImageDraw.Draw(sheet)
    for k, record in enumerate(chosen):
        image = Image.open(data_dir / record["images"][0]).convert("L").resize((tile, tile), Image.BILINEAR)
        x, y = (k % columns) * tile, (k // columns) * (tile + caption_h)
        sheet.paste(image, (x, y))
        names = [OBSERVATIONS[i] for i, v in enumerate(record["labels"]) if v]
        words = _caption(record, names)
        lines, line = [], ""
        for word in words.split(" "):
            if len(line) + len(word) + 1 > 34:
                lines.append(line)
                line = word
            else:
                line = f"{line} {word}".strip()
        lines.append(line)
        for j, text in enumerate(lines[:3]):
            draw.text((x + 3, y + tile + 1 + 12 * j), text, fill=0, font=font)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


def _caption(record: dict[str, Any], names: list[str]) -> str:
    attrs = record.get("findings", {})
    parts = []
    for name in names:
        a = attrs.get(name, {})
        short = {
            "Enlarged Cardiomediastinum": "EnlCM",
            "Support Devices": "Devices",
            "Pleural Effusion": "Effusion",
        }.get(name, name)
        if a and name not in ("Support Devices",):
            side = {"right": "R", "left": "L", "bilateral": "B"}[a["side"]]
            short += (
                f"({a['severity'][:3]},{side})"
                if a["side"] != "bilateral"
                or name in ("Pleural Effusion", "Atelectasis", "Lung Opacity", "Pleural Other")
                else f"({a['severity'][:3]})"
            )
        parts.append(short)
    return f"{record['id']}: " + ", ".join(parts)
