"""SynthCXR-IU: real IU X-Ray report language paired with SynthCXR images rendered from each report's labels.

For each IU X-Ray report (`leadrrg.data.synth.iu_reports`) whose chosen section (default `findings`, as R2Gen
uses) is non-empty:

1. Label the report's findings and impression together with the rule-based labeler (`label_reports`;
   `label_from="report"` labels only the chosen section, the training target, instead). With the default,
   211 of the 3,425 studies (245 of 1,821 drawn positives) show a finding that only the impression
   states, which a findings-only target does not mention.
2. Ground truth of the image = the labeler's positives. Label policy: 1.0 -> present; uncertain (-1.0),
   negative (0.0) and not mentioned (NaN) -> absent. Uncertain findings are not drawn because a hedge
   ("may represent atelectasis") does not say the finding is there; their report still hedges, so the
   pairing is looser there (their number is counted in `synth_iu.json`). No Finding follows SynthCXR's
   rule (1 iff nothing but Support Devices is present), not the labeler's, which also withholds No
   Finding for abnormalities outside the 14 observations (granuloma, scoliosis, ...) that SynthCXR does
   not draw.
3. Render a SynthCXR image from those labels (`findings_from_labels` + `render_image`): attributes
   (severity, side, zone, devices) are drawn at random, so the image does not follow the report's
   laterality or size words. Everything is deterministic per (seed, uid) and independent of the worker
   count and of which other reports are included.
4. Pair the image with the report itself (the chosen section as `report`; both sections as strings).

Splits: IU has one study per uid, so a study-wise split is a uid-wise split: `train`/`val`/`test`
70/10/20 (R2Gen's ratio) by a SHA-256 hash of the uid, independent of the seed and of `--limit`.

No `shift_test` split. SynthCXR's shift split draws findings independently of each other, with reports
written to match. Here the report is real and must stay paired with its own image, so the labels cannot
be redrawn, and a "rare combination" subset of test is too small to measure anything: in the full build
(3,425 studies, 72% No Finding) only 98 of the 718 test studies have two or more positives, 6 of them
hold a pair with lift < 1 under the training labels, and none a pair unseen in training. The
co-occurrence strengths of the training split are written to `synth_iu.json` (`top_lift_pairs`); the
prior-shift measurement stays with SynthCXR (`leadrrg synth --reports synthetic`).

On disk, the layout of `leadrrg synth`:

    DIR/images/<uid>/0.png     8-bit grayscale
    DIR/manifest.jsonl         id (= uid), split, images, report (the chosen section), findings,
                               impression (strings), labels (14 ints, the image's ground truth),
                               report_labels (labeler output, null = not mentioned), iu_uid,
                               iu_image_ids, rendered (the drawn attributes per finding)
    DIR/annotation.json        R2Gen layout: {"train": [{id, report, image_path, split}], "val", "test"}
    DIR/synth_iu.json          provenance (wheel, archive SHA-256, license), label policy, counts,
                               train prevalence and strongest co-occurrences

written into a temporary sibling directory that is renamed to DIR only when complete. `findings` is the
report's text here (SynthCXR's structured attributes are under `rendered`), so the `synth`/`jsonl` manifest
reader takes both sections from the strings and `DataConfig.section` picks the training target.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from leadrrg.config import SECTIONS
from leadrrg.constants import NUM_OBSERVATIONS, OBSERVATIONS
from leadrrg.data.synth.generate import SynthConfig, findings_from_labels, parallel_map, render_image
from leadrrg.data.synth.iu_reports import IuReport, load_iu_reports
from leadrrg.data.synth.types import check_synth_output
from leadrrg.data.text import select_section
from leadrrg.errors import LeadrrgError
from leadrrg.io import atomic_directory
from leadrrg.labeler import label_reports
from leadrrg.progress import progress_iter

__all__ = ["IU_SPLITS", "image_labels", "iu_split", "label_statistics", "render_study", "synthesize_iu"]

IU_SPLITS: tuple[str, ...] = ("train", "val", "test")
SPLIT_FRACTIONS = (0.7, 0.1, 0.2)  # R2Gen's IU X-Ray ratio
LABEL_FROM = ("both", "report")  # label findings + impression, or only the chosen section
LABEL_POLICY = (
    "image labels = positives (1.0) of leadrrg.labeler.label_reports on {text}; "
    "uncertain (-1.0), negative and not mentioned are absent; No Finding = 1 iff nothing but Support "
    "Devices is present"
)
_NO_FINDING = OBSERVATIONS.index("No Finding")
_SUPPORT_DEVICES = OBSERVATIONS.index("Support Devices")


def _uid_digest(uid: str, purpose: str) -> bytes:
    return hashlib.sha256(f"leadrrg-synth-iu:{purpose}:{uid}".encode()).digest()


def iu_split(uid: str) -> str:
    """The study's split (train/val/test, 70/10/20) from a hash of its uid alone."""
    u = int.from_bytes(_uid_digest(uid, "split")[:8], "big") / 2**64
    edge = 0.0
    for split, fraction in zip(IU_SPLITS, SPLIT_FRACTIONS):
        edge += fraction
        if u < edge:
            return split
    return IU_SPLITS[-1]


def image_labels(report_labels: np.ndarray) -> np.ndarray:
    """(N, 14) labeler output (1/0/-1/NaN) -> (N, 14) int64 0/1 ground truth of the images (module docstring)."""
    values = np.asarray(report_labels, dtype=np.float64).reshape(-1, NUM_OBSERVATIONS)
    out = (values == 1.0).astype(np.int64)
    findings = np.delete(out, [_NO_FINDING, _SUPPORT_DEVICES], axis=1)
    out[:, _NO_FINDING] = (findings.sum(axis=1) == 0).astype(np.int64)
    return out


def _labeler_text(report: IuReport, label_from: str, section: str) -> str:
    """What the labeler reads: findings then impression with a sentence break, or the chosen section."""
    if label_from == "report":
        return select_section(report.findings, report.impression, section)
    findings = report.findings.strip()
    if findings and findings[-1] not in ".!?":
        findings += "."
    return " ".join(part for part in (findings, report.impression.strip()) if part)


def render_study(uid: str, labels: Sequence[int], size: int, seed: int) -> tuple[dict[str, Any], np.ndarray]:
    """The drawn attributes and the (size, size) uint8 image of one study, from (seed, uid) only."""
    words = np.frombuffer(_uid_digest(uid, "render")[:16], dtype="<u4").tolist()
    rng_findings, rng_image = (
        np.random.default_rng(child) for child in np.random.SeedSequence([seed, *words]).spawn(2)
    )
    findings = findings_from_labels(np.asarray(labels, dtype=np.float64), rng_findings, SynthConfig())
    return findings.to_dict(), render_image(findings, size, rng_image)


def _png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image, mode="L").save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _work(task: tuple[str, list[int], int, int, str]) -> dict[str, Any]:
    """Worker: render one study and write its PNG under `root`; return the drawn attributes."""
    uid, labels, size, seed, root = task
    rendered, image = render_study(uid, labels, size, seed)
    path = Path(root) / "images" / uid / "0.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_png_bytes(image))
    return rendered


# --------------------------------------------------------------------------------------------------
# Statistics


def label_statistics(labels: np.ndarray, top: int = 10, min_count: int = 5) -> dict[str, Any]:
    """Prevalence per observation and the strongest co-occurring pairs of (N, 14) 0/1 labels.

    Pairs (No Finding excluded) are ranked by lift = P(a, b) / (P(a) P(b)) among pairs seen together in
    at least `min_count` studies."""
    labels = np.asarray(labels, dtype=np.int64).reshape(-1, NUM_OBSERVATIONS)
    n = len(labels)
    if n == 0:
        return {"studies": 0, "prevalence": {}, "top_lift_pairs": []}
    prevalence = labels.mean(axis=0)
    co = labels.T @ labels  # (14, 14) joint counts
    pairs = []
    for a in range(1, NUM_OBSERVATIONS):
        for b in range(a + 1, NUM_OBSERVATIONS):
            if co[a, b] >= min_count:
                lift = (co[a, b] / n) / (prevalence[a] * prevalence[b])
                pairs.append(
                    {
                        "pair": [OBSERVATIONS[a], OBSERVATIONS[b]],
                        "together": int(co[a, b]),
                        "lift": round(lift, 2),
                    }
                )
    pairs.sort(key=lambda p: (-p["lift"], -p["together"]))
    return {
        "studies": n,
        "prevalence": {name: round(float(p), 4) for name, p in zip(OBSERVATIONS, prevalence)},
        "top_lift_pairs": pairs[:top],
    }


# --------------------------------------------------------------------------------------------------
# The data set


def _check_arguments(section: str, label_from: str, size: int, workers: int, limit: int | None) -> None:
    if section not in SECTIONS:
        raise LeadrrgError(f"report section {section!r} is unknown; expected one of: {', '.join(SECTIONS)}")
    if label_from not in LABEL_FROM:
        raise LeadrrgError(f"label_from {label_from!r} is unknown; expected one of: {', '.join(LABEL_FROM)}")
    if size < 32 or size > 2048:
        raise LeadrrgError(f"image size {size} is out of range; expected 32..2048 pixels")
    if workers < 1:
        raise LeadrrgError(f"workers is {workers}; expected at least 1")
    if limit is not None and limit < 1:
        raise LeadrrgError(f"limit is {limit}; expected at least 1 report")


def _usable_reports(reports: Sequence[IuReport], section: str, limit: int | None) -> list[IuReport]:
    """The first `limit` reports (all: None) with a non-empty `section`; refuses none, or a repeated uid."""
    usable = [r for r in reports if select_section(r.findings, r.impression, section)]
    if limit is not None:
        usable = usable[:limit]
    if not usable:
        raise LeadrrgError(
            f"none of the {len(reports)} reports has a non-empty {section} section; nothing to write"
        )
    uids = [r.uid for r in usable]
    if len(set(uids)) != len(uids):
        raise LeadrrgError("the reports repeat a uid; expected one report per IU study")
    return usable


def _manifest_record(
    report: IuReport,
    split: str,
    section: str,
    labels: np.ndarray,
    report_labels: np.ndarray,
    attributes: dict[str, Any],
) -> dict[str, Any]:
    """One manifest line: the study's image, report, image labels (14 0/1) and labeler output (14, NaN: null)."""
    return {
        "id": report.uid,
        "split": split,
        "images": [f"images/{report.uid}/0.png"],
        "report": select_section(report.findings, report.impression, section),
        "findings": report.findings,
        "impression": report.impression,
        "labels": labels.tolist(),
        "report_labels": [None if math.isnan(v) else float(v) for v in report_labels.tolist()],
        "iu_uid": report.uid,
        "iu_image_ids": list(report.image_ids),
        "rendered": attributes,
    }


def _label_summary(
    labels: np.ndarray,
    report_labels: np.ndarray,
    splits: Sequence[str],
    section: str,
    label_from: str,
    counts: dict[str, int],
) -> dict[str, Any]:
    """The label and split part of `synth_iu.json`: policies, counts (`counts` plus the splits and the uncertain
    labels dropped) and the training split's label statistics."""
    split_array = np.array(splits)
    uncertain = report_labels[:, 1:] == -1.0
    return {
        "label_policy": LABEL_POLICY.format(
            text="findings + impression" if label_from == "both" else f"the {section} section"
        ),
        "split_policy": "sha256 of the uid: train/val/test 70/10/20 (R2Gen ratio); no shift_test split",
        "severity_weights": SynthConfig().severity_weights,
        "counts": {
            **counts,
            "splits": {split: int((split_array == split).sum()) for split in IU_SPLITS},
            "uncertain_labels_dropped": int(uncertain.sum()),
            "studies_with_uncertain": int(uncertain.any(axis=1).sum()),
        },
        "train": label_statistics(labels[split_array == "train"]),
    }


def synthesize_iu(
    out_dir: str | Path,
    size: int = 128,
    seed: int = 0,
    workers: int = 1,
    reports: Sequence[IuReport] | None = None,
    section: str = "findings",
    wheel: str | Path | None = None,
    cache_dir: str | Path | None = None,
    limit: int | None = None,
    overwrite: bool = False,
    progress: bool = False,
    provenance: dict[str, Any] | None = None,
    label_from: str = "both",
) -> Path:
    """Write a SynthCXR-IU data set to `out_dir` (module docstring); return its path.

    `reports` defaults to all IU X-Ray reports (`load_iu_reports(wheel, cache_dir)`); `provenance`
    describes given reports in `synth_iu.json`. `limit` keeps the first N usable reports in uid order.
    `label_from`: `both` labels findings + impression, `report` only the chosen `section`.
    The same (reports, size, seed, section) give byte-identical files for any number of workers."""
    out = Path(out_dir)
    _check_arguments(section, label_from, size, workers, limit)
    check_synth_output(out, overwrite)
    if reports is None:
        reports, provenance = load_iu_reports(wheel, cache_dir, log=lambda m: print(m, file=sys.stderr))
    provenance = provenance or {"source": "reports given to synthesize_iu"}
    total = len(reports)
    usable = _usable_reports(reports, section, limit)
    report_labels = label_reports(
        [_labeler_text(r, label_from, section) for r in usable]
    )  # (N, 14) 1/0/-1/NaN
    labels = image_labels(report_labels)  # (N, 14) 0/1
    splits = [iu_split(r.uid) for r in usable]

    with atomic_directory(out) as tmp:
        tasks = [(r.uid, labels[i].tolist(), size, seed, str(tmp)) for i, r in enumerate(usable)]
        rendered = parallel_map(_work, tasks, workers)
        if progress:  # a bar on a terminal, plain lines in a log
            rendered = progress_iter(rendered, len(tasks), "synth-iu")
        annotation: dict[str, list[dict[str, Any]]] = {split: [] for split in IU_SPLITS}
        with open(tmp / "manifest.jsonl", "w", encoding="utf-8") as manifest:
            for i, attributes in enumerate(rendered):
                report, split = usable[i], splits[i]
                record = _manifest_record(report, split, section, labels[i], report_labels[i], attributes)
                manifest.write(json.dumps(record) + "\n")
                annotation[split].append(
                    {
                        "id": report.uid,
                        "report": record["report"],
                        "image_path": record["images"],
                        "split": split,
                    }
                )
        (tmp / "annotation.json").write_text(json.dumps(annotation) + "\n", encoding="utf-8")
        counts = {
            "reports": total,
            "with_section": sum(1 for r in reports if select_section(r.findings, r.impression, section)),
            "written": len(usable),
        }
        summary = {
            "dataset": "SynthCXR-IU",
            "provenance": provenance,
            "section": section,
            "label_from": label_from,
            "size": size,
            "seed": seed,
            **_label_summary(labels, report_labels, splits, section, label_from, counts),
        }
        (tmp / "synth_iu.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return out
