"""Builders of tiny data sets in every supported layout, for tests (no pytest fixtures: plain functions).

    from tests.fixtures_data import make_iu_xray
    root = make_iu_xray(tmp_path / "iu")            # -> DataConfig(format="iu_xray", root=str(root))

Each builder writes small generated grayscale PNGs and short reports with known CheXpert labels
(`FIXTURE_REPORTS`), and returns the data root. Counts are studies per split.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from PIL import Image

from leadrrg.constants import OBSERVATIONS

DEFAULT_COUNTS: Mapping[str, int] = {"train": 6, "val": 2, "test": 2}


def _labels(**values: float) -> list[float | None]:
    row: list[float | None] = [None] * len(OBSERVATIONS)
    for name, value in values.items():
        row[OBSERVATIONS.index(name.replace("_", " "))] = value
    return row


# (findings, impression, labels in OBSERVATIONS order with None for not mentioned)
FIXTURE_REPORTS: list[tuple[str, str, list[float | None]]] = [
    (
        "The heart size is normal. The lungs are clear. No pleural effusion or pneumothorax.",
        "No acute cardiopulmonary process.",
        _labels(No_Finding=1.0, Cardiomegaly=0.0, Pleural_Effusion=0.0, Pneumothorax=0.0),
    ),
    (
        "The heart is enlarged. There is a small right pleural effusion.",
        "Cardiomegaly with small right effusion.",
        _labels(Cardiomegaly=1.0, Pleural_Effusion=1.0),
    ),
    (
        "Right lower lobe consolidation. No pneumothorax.",
        "Findings concerning for pneumonia.",
        _labels(Consolidation=1.0, Pneumonia=-1.0, Pneumothorax=0.0),
    ),
    (
        "Mild pulmonary edema. Heart size is enlarged. Left basilar atelectasis.",
        "Congestive heart failure.",
        _labels(Edema=1.0, Cardiomegaly=1.0, Atelectasis=1.0),
    ),
    (
        "A right-sided PICC line ends in the SVC. Lungs are clear.",
        "Support device in place.",
        _labels(Support_Devices=1.0, No_Finding=None),
    ),
]


def write_png(path: Path, seed: int, size: tuple[int, int] = (40, 48), bits: int = 8) -> Path:
    """A small chest-like grayscale image (PNG, or JPEG when `path` ends in .jpg): dark lung fields,
    bright mediastinum, some noise."""
    rng = np.random.default_rng(seed)
    height, width = size
    yy, xx = np.mgrid[0:height, 0:width] / np.array([height, width])[:, None, None]
    image = 0.3 + 0.5 * np.exp(-((xx - 0.5) ** 2) / 0.01) + 0.2 * yy + 0.05 * rng.standard_normal(size)
    image = np.clip(image, 0, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    if bits == 16:
        Image.fromarray((image * 65535).astype(np.uint16)).save(path)
    else:
        Image.fromarray((image * 255).astype(np.uint8)).save(path)
    return path


def _studies(counts: Mapping[str, int]):
    index = 0
    for split, count in counts.items():
        for _ in range(count):
            yield index, split, FIXTURE_REPORTS[index % len(FIXTURE_REPORTS)]
            index += 1


def make_jsonl(
    root: Path, counts: Mapping[str, int] = DEFAULT_COUNTS, views: int = 1, labels: bool = True
) -> Path:
    """`root/manifest.jsonl` + `root/images/<id>/<view>.png` (the `jsonl` and `synth` layout)."""
    root = Path(root)
    lines = []
    for index, split, (findings, _, label_row) in _studies(counts):
        study_id = f"s{index:04d}"
        images = [f"images/{study_id}/{view}.png" for view in range(views)]
        for view, relative in enumerate(images):
            write_png(root / relative, seed=index * 10 + view)
        entry = {"id": study_id, "split": split, "images": images, "report": findings}
        if labels:
            entry["labels"] = label_row
        lines.append(json.dumps(entry))
    root.mkdir(parents=True, exist_ok=True)
    (root / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return root


def make_iu_xray(root: Path, counts: Mapping[str, int] = DEFAULT_COUNTS) -> Path:
    """R2Gen IU X-Ray layout: `root/annotation.json` + `root/images/<id>/{0,1}.png` (two views)."""
    root = Path(root)
    annotation: dict[str, list] = {split: [] for split in counts}
    for index, split, (findings, _, _) in _studies(counts):
        study_id = f"CXR{index + 1}_IM-{1000 + index}"
        paths = [f"{study_id}/0.png", f"{study_id}/1.png"]
        for view, relative in enumerate(paths):
            write_png(root / "images" / relative, seed=index * 10 + view)
        annotation[split].append({"id": study_id, "report": findings, "image_path": paths, "split": split})
    (root / "annotation.json").write_text(json.dumps(annotation, indent=1))
    return root


def make_mimic_cxr(root: Path, counts: Mapping[str, int] = DEFAULT_COUNTS, label_csv: bool = True) -> Path:
    """R2Gen MIMIC-CXR layout: `root/annotation.json` (one entry per image, with `study_id` and
    `subject_id`), `root/images/p1x/p<subject>/s<study>/<dicom_id>.jpg`, and optionally the
    MIMIC-CXR-JPG label CSV `root/mimic-cxr-2.0.0-chexpert.csv` keyed by study_id."""
    root = Path(root)
    annotation: dict[str, list] = {split: [] for split in counts}
    label_rows = []
    for index, split, (findings, _, label_row) in _studies(counts):
        subject_id, study_id = 10000000 + index, 50000000 + index
        dicom_id = f"{index:08x}-0000-0000-0000-000000000000"
        relative = f"p{str(subject_id)[:2]}/p{subject_id}/s{study_id}/{dicom_id}.jpg"
        write_png(root / "images" / relative, seed=index)
        annotation[split].append(
            {
                "id": dicom_id,
                "study_id": study_id,
                "subject_id": subject_id,
                "report": findings,
                "image_path": [relative],
                "split": split,
            }
        )
        label_rows.append([subject_id, study_id, *label_row])
    (root / "annotation.json").write_text(json.dumps(annotation, indent=1))
    if label_csv:
        # The real CSV orders observations alphabetically; readers must go by column name.
        order = sorted(range(len(OBSERVATIONS)), key=lambda i: OBSERVATIONS[i])
        with open(root / "mimic-cxr-2.0.0-chexpert.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["subject_id", "study_id", *(OBSERVATIONS[i] for i in order)])
            for subject_id, study_id, *row in label_rows:
                writer.writerow(
                    [subject_id, study_id, *("" if row[i] is None else f"{row[i]:.1f}" for i in order)]
                )
    return root


def make_chexpert_plus(
    root: Path, counts: Mapping[str, int] | None = None, views: int = 2, labels: bool = True
) -> Path:
    """CheXpert Plus layout: `root/df_chexpert_plus_240401.csv` (one row per image), images at
    `root/{train,valid}/patient<N>/study1/view<k>_{frontal,lateral}.jpg` as named by `path_to_image`,
    and `root/chexbert_labels/findings_fixed.json` (JSON lines keyed by `path_to_image`).
    The real release has `train` and `valid` splits; tests may add `test`."""
    root = Path(root)
    counts = counts or {"train": 6, "valid": 2, "test": 2}
    rows, label_lines = [], []
    for index, split, (findings, impression, label_row) in _studies(counts):
        folder = "valid" if split == "valid" else "train"
        for view in range(views):
            kind = "frontal" if view == 0 else "lateral"
            relative = f"{folder}/patient{index + 1:05d}/study1/view{view + 1}_{kind}.jpg"
            write_png(root / relative, seed=index * 10 + view)
            rows.append(
                {
                    "path_to_image": relative,
                    "path_to_dcm": relative.replace(".jpg", ".dcm"),
                    "frontal_lateral": kind.capitalize(),
                    "ap_pa": "PA" if view == 0 else "",
                    "deid_patient_id": f"patient{index + 1:05d}",
                    "report": f"FINDINGS: {findings} IMPRESSION: {impression}",
                    "section_findings": findings,
                    "section_impression": impression,
                    "split": split,
                }
            )
            record = {"path_to_image": relative}
            record.update({name: value for name, value in zip(OBSERVATIONS, label_row)})
            label_lines.append(json.dumps(record))
    with open(root / "df_chexpert_plus_240401.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    if labels:
        (root / "chexbert_labels").mkdir(exist_ok=True)
        (root / "chexbert_labels" / "findings_fixed.json").write_text("\n".join(label_lines) + "\n")
    return root
