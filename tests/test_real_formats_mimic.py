"""MIMIC-CXR and CheXpert Plus as their releases ship them (issue 24): PhysioNet's split / metadata CSVs with
free-text reports or MIT-LCP's sectioned CSV, ReXrank's study-keyed JSON, a label file keyed by another column,
CheXpert v1's train.csv, and published predictions as CSV. Real headers and key names; generated images and
placeholder text (MIMIC-CXR is credentialed)."""

from __future__ import annotations

import csv
import gzip
import io
import json
from pathlib import Path

import pytest

from leadrrg.config import DataConfig
from leadrrg.constants import OBSERVATIONS
from leadrrg.data.manifests import load_split, read_data
from leadrrg.errors import LeadrrgError
from leadrrg.evaluation.predictions import read_predictions
from tests.fixtures_data import write_png
from tests.test_manifests import run_check

SPLIT_HEADER = ["dicom_id", "study_id", "subject_id", "split"]
METADATA_HEADER = [
    "dicom_id",
    "subject_id",
    "study_id",
    "PerformedProcedureStepDescription",
    "ViewPosition",
    "Rows",
    "Columns",
    "StudyDate",
    "StudyTime",
    "ProcedureCodeSequence_CodeMeaning",
    "ViewCodeSequence_CodeMeaning",
    "PatientOrientationCodeSequence_CodeMeaning",
]
REPORT = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___F with cough.

 FINDINGS:

 The lungs are clear {n}.  No pleural effusion.

 IMPRESSION:

 No acute cardiopulmonary process.
"""


def csv_gz(path: Path, header: list[str], rows: list[list]) -> None:
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(header)
    writer.writerows(rows)
    path.write_bytes(gzip.compress(text.getvalue().encode()))


def make_physionet(root: Path, sectioned: bool = False) -> Path:
    """files/p10/p100000NN/s5000000N/{dicom}.jpg + .txt reports, the split and metadata CSVs (.gz) as PhysioNet ships
    them; study 7 has no report; each study's lateral image comes first in the split file."""
    splits, metadata, sections = [], [], []
    for n in range(1, 9):
        subject, study = f"100000{n:02d}", f"5000000{n}"
        folder = root / "files" / "p10" / f"p{subject}"
        split = {1: "validate", 2: "test", 3: "test"}.get(n, "train")
        for view, position in (("lat", "LATERAL"), ("front", "PA")):
            dicom = f"{view}{n}-0000aaaa-bbbbcccc-dddd"
            write_png(folder / f"s{study}" / f"{dicom}.jpg", seed=n * 2 + len(view))
            splits.append([dicom, study, subject, split])
            metadata.append(
                [
                    dicom,
                    subject,
                    study,
                    "CHEST (PA AND LAT)",
                    position,
                    48,
                    40,
                    21800506,
                    213014.5,
                    "CHEST (PA AND LAT)",
                    "postero-anterior",
                    "Erect",
                ]
            )
        if n != 7:
            (folder / f"s{study}.txt").write_text(REPORT.format(n=n))
            sections.append([f"s{study}", "No acute process.", f"Sectioned findings {n}.", "", ""])
    csv_gz(root / "mimic-cxr-2.0.0-split.csv.gz", SPLIT_HEADER, splits)
    csv_gz(root / "mimic-cxr-2.0.0-metadata.csv.gz", METADATA_HEADER, metadata)
    if sectioned:
        with open(root / "mimic_cxr_sectioned.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["study", "impression", "findings", "last_paragraph", "comparison"])
            writer.writerows(sections)
    return root


def test_physionet_mimic_without_r2gen_files(tmp_path, capsys):
    root = make_physionet(tmp_path / "mimic")
    data = DataConfig(format="mimic_cxr", root=str(root))
    read = read_data(data)
    assert len(read.records) == 14  # 7 studies with a report, 2 images each
    assert any(n.startswith("recognised MIMIC-CXR as PhysioNet ships it") for n in read.notes)
    assert any("'validate'" in n and "'val'" in n for n in read.notes)
    assert any("1 studies of the split file have no report" in n for n in read.notes)
    val = load_split(data, "val").studies
    assert val[0].report == "the lungs are clear . no pleural effusion ."  # R2Gen cleaning drops digits
    assert Path(val[0].images[0]).name.startswith("front1")  # ViewPosition PA before LATERAL
    studies = load_split(DataConfig(format="mimic_cxr", root=str(root), grouping="study"), "test").studies
    assert [len(s.images) for s in studies] == [2, 2] and studies[0].id == "50000002"
    assert run_check(["check", "--format", "mimic_cxr", "--root", str(root)]) == 0
    assert "recognised MIMIC-CXR as PhysioNet ships it" in capsys.readouterr().out


def test_physionet_mimic_with_sectioned_csv(tmp_path):
    root = make_physionet(tmp_path / "mimic", sectioned=True)
    read = read_data(DataConfig(format="mimic_cxr", root=str(root)))
    assert {r.findings for r in read.records if r.group == "50000001"} == {"Sectioned findings 1."}
    assert any("mimic_cxr_sectioned.csv" in n for n in read.notes)


def test_split_file_and_label_key_on_a_jsonl_root(tmp_path):
    """MIMIC-CXR-JPG's split CSV and CheXpert CSV (study_id, subject_id first) applied to a JSONL root."""
    root = tmp_path / "jsonl"
    lines = []
    for n in range(1, 5):
        write_png(root / f"s{n}.png", seed=n)
        lines.append(
            json.dumps({"id": f"s5000000{n}", "split": "train", "images": [f"s{n}.png"], "report": "Clear."})
        )
    (root / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    csv_gz(
        root / "mimic-cxr-2.0.0-split.csv.gz",
        SPLIT_HEADER,
        [[f"d{n}", f"5000000{n}", "10000001", "validate" if n == 1 else "train"] for n in range(1, 4)],
    )
    csv_gz(
        root / "mimic-cxr-2.0.0-chexpert.csv.gz",
        ["subject_id", "study_id", *OBSERVATIONS],
        [["10000001", "50000001", *(["1.0"] + [""] * 13)]],
    )
    data = DataConfig(
        format="jsonl",
        root=str(root),
        split_file="mimic-cxr-2.0.0-split.csv.gz",
        label_file="mimic-cxr-2.0.0-chexpert.csv.gz",
        label_key="study_id",
    )
    read = read_data(data)
    assert {(r.id, r.split) for r in read.records} == {
        ("s50000001", "val"),
        ("s50000002", "train"),
        ("s50000003", "train"),
    }
    assert any("1 studies are not in the split file" in w for w in read.warnings)
    labelled = next(r for r in read.records if r.id == "s50000001")
    assert labelled.labels is not None and labelled.labels[0] == 1


def rexrank_mimic(root: Path) -> Path:
    value = {}
    for n, (subject, study) in enumerate((("10046166", "50051329"), ("10268877", "50042142"))):
        images = []
        for view in ("427446c1", "abea5eb9"):
            rel = f"p10/p{subject}/s{study}/{view}-881f5cce-85191ce1-91a58ba9-0a57d3f5.jpg"
            write_png(root / "files" / rel, seed=n * 2 + len(images))
            images.append("/" + rel)
        value[study] = {
            "image_path": images,
            "section_findings": f"Lateral view limited {n}.\nNo pleural effusions.",
            "section_impression": float("nan"),
            "frontal_lateral": ["lateral", "antero-posterior"],
            "split": "test",
            "subject_id": int(subject),
            "context": "Indication: ___-year-old male.",
            "key_image_path": images[1],
            "report": "Findings: ... Impression: None.",
        }
    (root / "ReXRank_MIMICCXR_test.json").write_text(json.dumps(value, indent=4))
    return root


def test_rexrank_mimic_leading_slash_paths_under_files(tmp_path):
    root = rexrank_mimic(tmp_path / "mimic")
    data = DataConfig(
        format="mimic_cxr", root=str(root), annotation_file="ReXRank_MIMICCXR_test.json", grouping="study"
    )
    studies = load_split(data, "test").studies
    assert [s.id for s in studies] == ["50051329", "50042142"]
    assert Path(studies[0].images[0]).name.startswith("abea5eb9")  # antero-posterior before lateral
    assert studies[0].images[0].startswith(str((root / "files").resolve()))


def test_rexrank_chexpert_plus_json_and_chexpert_v1_labels(tmp_path, capsys):
    root = tmp_path / "chexpert"
    value = {}
    for n in (64620, 64545):
        rel = f"valid/patient{n}/study1/view1_frontal.png"
        write_png(root / "PNG" / rel, seed=n % 7)
        value[f"patient{n}_study1"] = {
            "image_path": [rel],
            "report": "Findings: None. Impression: ...",
            "context": "Age:77.0.",
            "section_clinical_history": float("nan"),
            "section_findings": float("nan") if n == 64620 else "\nLow volumes.\n",
            "section_impression": "\n1. STABLE.\n",
            "frontal_lateral": ["Frontal"],
            "ap_pa": ["AP"],
            "age": 77.0,
            "sex": "Female",
            "race": "White",
            "ethnicity": "Non-Hispanic/Non-Latino",
            "key_image_path": rel,
        }
    (root / "ReXRank_CheXpertPlus.json").write_text(json.dumps(value))
    with open(root / "train.csv", "w", newline="") as handle:  # CheXpert v1.0-small's, keyed by Path
        writer = csv.writer(handle)
        writer.writerow(["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *OBSERVATIONS])
        writer.writerow(
            [
                "CheXpert-v1.0-small/valid/patient64545/study1/view1_frontal.png",
                "Female",
                55,
                "Frontal",
                "AP",
                *(["1.0"] + [""] * 13),
            ]
        )
    data = DataConfig(format="chexpert_plus", root=str(root), label_file="train.csv", label_key="Path")
    read = read_data(data)
    assert {r.split for r in read.records} == {"val"}  # from the valid/ folder of its paths
    assert [s.report for s in load_split(data, "val").studies] == ["low volumes ."]
    assert next(r for r in read.records if r.id == "patient64545_study1").labels[0] == 1
    assert (
        run_check(
            [
                "check",
                "--format",
                "chexpert_plus",
                "--root",
                str(root),
                "--label-file",
                "train.csv",
                "--label-key",
                "Path",
            ]
        )
        == 0
    )
    assert "study-keyed JSON" in capsys.readouterr().out


def test_predictions_csv_with_named_columns(tmp_path):
    path = tmp_path / "cxrmate2_generated_reports_mimic_cxr_test.csv"
    path.write_text(
        'findings,impression,study_id,reference\n"Clear lungs.",No acute process.,50051329,"Clear."\n'
    )
    (record,) = read_predictions(path)
    assert record == {"id": "50051329", "reference": "Clear.", "generated": "Clear lungs. No acute process."}
    path.write_text('findings,impression,study_id\n"Clear lungs.",No acute process.,50051329\n')
    with pytest.raises(LeadrrgError, match="has no reference column"):
        read_predictions(path)
    jsonl = tmp_path / "preds.jsonl"
    jsonl.write_text("study_id,findings\n")
    with pytest.raises(LeadrrgError, match='"reference", "generated"'):
        read_predictions(jsonl)
