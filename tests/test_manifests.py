"""Manifests for every layout, section choice, cleaning, labels, malformed input; report text helpers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

import leadrrg.labeler
from leadrrg.config import DataConfig
from leadrrg.constants import OBSERVATIONS
from leadrrg.data.label_files import parse_labels
from leadrrg.data.labels import labels_from_labeler
from leadrrg.data.manifests import FORMATS, load_split, load_studies
from leadrrg.data.text import clean_report, extract_sections, select_section, split_findings_impression
from leadrrg.errors import LeadrrgError
from tests.fixtures_data import (
    FIXTURE_REPORTS,
    make_chexpert_plus,
    make_iu_xray,
    make_jsonl,
    make_mimic_cxr,
)

BUILDERS = {
    "jsonl": make_jsonl,
    "synth": make_jsonl,
    "iu_xray": make_iu_xray,
    "mimic_cxr": make_mimic_cxr,
    "chexpert_plus": make_chexpert_plus,
}


def obs(name: str) -> int:
    return OBSERVATIONS.index(name)


# --------------------------------------------------------------------------------------------------
# Text


def test_clean_report_r2gen_conventions() -> None:
    text = "1. The heart size is normal.  2. No pleural effusion, pneumothorax...\n3. Nodule 1.5 cm (stable) and/or x-ray - ok"
    assert clean_report(text, "r2gen") == (
        "the heart size is normal . no pleural effusion pneumothorax . nodule 1.5 cm stable and or x-ray ok ."
    )
    assert clean_report("The lungs are clear.\nNo acute  disease. ___ was notified.", "r2gen") == (
        "the lungs are clear . no acute disease . was notified ."
    )
    assert clean_report("", "r2gen") == "" and clean_report(" ... ", "r2gen") == ""
    assert clean_report("  Keep It.  ", "none") == "Keep It."
    with pytest.raises(LeadrrgError, match="r2gen"):
        clean_report("x", "fancy")


def test_extract_sections_from_free_text() -> None:
    report = (
        "FINAL REPORT\n EXAMINATION: CHEST (PA AND LAT)\n INDICATION: cough\n"
        " FINDINGS: The lungs are clear.\n No effusion.\n IMPRESSION: No acute process."
    )
    sections = extract_sections(report)
    assert sections["findings"] == "The lungs are clear. No effusion."
    assert sections["impression"] == "No acute process."
    assert sections["indication"] == "cough" and sections["preamble"] == "FINAL REPORT"
    assert extract_sections("no headers here") == {}
    assert split_findings_impression("Heart normal.") == ("Heart normal.", "")
    assert split_findings_impression("CONCLUSION: fine") == ("", "fine")


def test_select_section() -> None:
    assert select_section("a b.", "c.", "findings") == "a b."
    assert select_section("a b.", "c.", "impression") == "c."
    assert select_section("a b.", "c.", "both") == "a b. c."
    assert select_section(None, "c.", "both") == "c."
    with pytest.raises(LeadrrgError, match="findings, impression, both"):
        select_section("a", "b", "summary")


# --------------------------------------------------------------------------------------------------
# Layouts


@pytest.mark.parametrize("fmt", sorted(BUILDERS))
def test_every_layout_loads_every_split(tmp_path: Path, fmt: str) -> None:
    assert fmt in FORMATS
    root = BUILDERS[fmt](tmp_path / fmt)
    data = DataConfig(format=fmt, root=str(root))
    total = 0
    for split in ("train", "val", "test"):
        studies = load_studies(data, split)
        assert studies, split
        total += len(studies)
        for study in studies:
            assert study.images and all(Path(p).is_absolute() and Path(p).is_file() for p in study.images)
            assert study.report.endswith(" .") and study.report == study.report.lower()
            assert study.labels is None or (study.labels.shape == (14,) and study.labels.dtype == np.float32)
    assert total == 10


def test_iu_xray_has_two_views_and_no_labels(tmp_path: Path) -> None:
    studies = load_studies(DataConfig(format="iu_xray", root=str(make_iu_xray(tmp_path))), "train")
    assert all(len(s.images) == 2 and s.labels is None for s in studies)
    assert studies[0].images[0].endswith("images/CXR1_IM-1000/0.png")
    assert studies[0].report == clean_report(FIXTURE_REPORTS[0][0], "r2gen")


def test_mimic_labels_join_by_study_id_whatever_the_column_order(tmp_path: Path) -> None:
    root = make_mimic_cxr(tmp_path)
    studies = load_studies(DataConfig(format="mimic_cxr", root=str(root)), "train")
    second = studies[1]  # FIXTURE_REPORTS[1]: cardiomegaly + effusion
    assert second.labels[obs("Cardiomegaly")] == 1.0 and second.labels[obs("Pleural Effusion")] == 1.0
    assert math.isnan(second.labels[obs("Edema")])
    assert studies[2].labels[obs("Pneumonia")] == -1.0
    # Without the CSV the labels stay None (another component fills them with the labeler).
    (root / "mimic-cxr-2.0.0-chexpert.csv").rename(root / "labels.csv")
    assert load_studies(DataConfig(format="mimic_cxr", root=str(root)), "train")[1].labels is None
    with_file = load_studies(DataConfig(format="mimic_cxr", root=str(root), label_file="labels.csv"), "train")
    assert with_file[1].labels[obs("Cardiomegaly")] == 1.0


def test_chexpert_plus_groups_views_frontal_first_and_reads_labels(tmp_path: Path) -> None:
    root = make_chexpert_plus(tmp_path)
    result = load_split(DataConfig(format="chexpert_plus", root=str(root)), "val")
    assert result.split == "val"  # CheXpert Plus's "valid" is read as the canonical "val"
    study = result.studies[0]
    assert study.id.startswith("valid/patient") and len(study.images) == 2
    assert study.images[0].endswith("view1_frontal.jpg") and study.images[1].endswith("view2_lateral.jpg")
    train = load_studies(DataConfig(format="chexpert_plus", root=str(root)), "train")
    assert train[1].labels[obs("Cardiomegaly")] == 1.0


@pytest.mark.parametrize("fmt", ["chexpert_plus", "jsonl"])
def test_section_choice(tmp_path: Path, fmt: str) -> None:
    if fmt == "jsonl":
        root = tmp_path / "j"
        make_jsonl(root)
        lines = [json.loads(line) for line in (root / "manifest.jsonl").read_text().splitlines()]
        for i, entry in enumerate(lines):
            findings, impression, _ = FIXTURE_REPORTS[i % len(FIXTURE_REPORTS)]
            entry["report"] = f"FINDINGS: {findings}\nIMPRESSION: {impression}"
        (root / "manifest.jsonl").write_text("\n".join(json.dumps(e) for e in lines))
    else:
        root = make_chexpert_plus(tmp_path / "c")
    findings, impression, _ = FIXTURE_REPORTS[0]
    by_section = {
        section: load_studies(DataConfig(format=fmt, root=str(root), section=section), "train")[0].report
        for section in ("findings", "impression", "both")
    }
    assert by_section["findings"] == clean_report(findings, "r2gen")
    assert by_section["impression"] == clean_report(impression, "r2gen")
    assert by_section["both"] == clean_report(findings + " " + impression, "r2gen")
    raw = load_studies(DataConfig(format=fmt, root=str(root), clean="none"), "train")[0].report
    assert raw == findings


def test_empty_sections_are_skipped_and_counted(tmp_path: Path) -> None:
    root = make_iu_xray(tmp_path)
    annotation = json.loads((root / "annotation.json").read_text())
    annotation["train"][0]["report"] = "  "
    annotation["train"][1]["report"] = "..."
    (root / "annotation.json").write_text(json.dumps(annotation))
    result = load_split(DataConfig(format="iu_xray", root=str(root)), "train")
    assert result.skipped_empty == 2 and len(result.studies) == 4
    # R2Gen's annotation has no impression: asking for it skips everything, loudly counted.
    assert (
        load_split(DataConfig(format="iu_xray", root=str(root), section="impression"), "train").skipped_empty
        == 6
    )


def test_missing_split_lists_the_available_ones(tmp_path: Path) -> None:
    data = DataConfig(format="iu_xray", root=str(make_iu_xray(tmp_path)))
    with pytest.raises(LeadrrgError, match=r"split 'shift' is not in .*available splits: test, train, val"):
        load_studies(data, "shift")


def test_missing_root_and_files(tmp_path: Path) -> None:
    with pytest.raises(LeadrrgError, match="nope does not exist"):
        load_studies(DataConfig(format="jsonl", root=str(tmp_path / "nope")), "train")
    with pytest.raises(LeadrrgError, match="manifest.jsonl"):
        load_studies(DataConfig(format="jsonl", root=str(tmp_path)), "train")
    with pytest.raises(LeadrrgError, match="annotation.json"):
        load_studies(DataConfig(format="mimic_cxr", root=str(tmp_path)), "train")
    with pytest.raises(LeadrrgError, match="df_chexpert_plus"):
        load_studies(DataConfig(format="chexpert_plus", root=str(tmp_path)), "train")


@pytest.mark.parametrize(
    "mutate, message",
    [
        (
            lambda e: e.pop("image_path"),
            r"entry 1 of split 'train' \(id 'CXR2_IM-1001'\): key 'image_path' is missing",
        ),
        (lambda e: e.update(report=["a list"]), r"entry 1 of split 'train' .*report is list"),
        (lambda e: e.update(image_path=[3]), r"entry 1 .*image_path is \[3\]"),
    ],
)
def test_malformed_annotation_names_file_and_entry(tmp_path: Path, mutate, message: str) -> None:
    root = make_iu_xray(tmp_path)
    annotation = json.loads((root / "annotation.json").read_text())
    mutate(annotation["train"][1])
    (root / "annotation.json").write_text(json.dumps(annotation))
    with pytest.raises(LeadrrgError, match=message) as info:
        load_studies(DataConfig(format="iu_xray", root=str(root)), "train")
    assert str(root / "annotation.json") in str(info.value)


def test_malformed_manifest_names_the_line(tmp_path: Path) -> None:
    root = make_jsonl(tmp_path)
    lines = (root / "manifest.jsonl").read_text().splitlines()
    lines[2] = lines[2][:-5]
    (root / "manifest.jsonl").write_text("\n".join(lines))
    with pytest.raises(LeadrrgError, match="line 3: not valid JSON"):
        load_studies(DataConfig(format="jsonl", root=str(root)), "train")
    lines[2] = json.dumps({"id": "x", "split": "train", "images": ["a.png"], "report": "r", "labels": [1, 0]})
    (root / "manifest.jsonl").write_text("\n".join(lines))
    with pytest.raises(LeadrrgError, match="line 3: labels has 2 values"):
        load_studies(DataConfig(format="jsonl", root=str(root)), "train")


def test_parse_labels_forms() -> None:
    from_dict = parse_labels({"Cardiomegaly": 1, "Edema": -1, "Fracture": None}, "here")
    assert from_dict[obs("Cardiomegaly")] == 1.0 and from_dict[obs("Edema")] == -1.0
    assert np.isnan(from_dict[obs("Fracture")]) and np.isnan(from_dict[obs("No Finding")])
    assert parse_labels(None, "here") is None
    with pytest.raises(LeadrrgError, match="unknown label 'Heart'"):
        parse_labels({"Heart": 1}, "here")
    with pytest.raises(LeadrrgError, match="expected 1, 0, -1"):
        parse_labels([2] * 14, "here")


def test_labels_from_labeler_caches_by_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []

    def fake_label_reports(reports):
        calls.append(list(reports))
        out = np.full((len(reports), 14), np.nan, np.float32)
        out[:, obs("Cardiomegaly")] = [1.0 if "enlarged" in r else 0.0 for r in reports]
        return out

    monkeypatch.setattr(leadrrg.labeler, "label_reports", fake_label_reports, raising=False)
    studies = load_studies(DataConfig(format="iu_xray", root=str(make_iu_xray(tmp_path))), "train")
    cache = tmp_path / "cache" / "labels.csv"
    labelled = labels_from_labeler(studies, cache)
    assert all(s.labels is not None for s in labelled) and cache.is_file()
    assert labelled[1].labels[obs("Cardiomegaly")] == 1.0 and labelled[0].labels[obs("Cardiomegaly")] == 0.0
    assert len(calls) == 1 and len(calls[0]) == len({s.report for s in studies})  # unique reports only
    again = labels_from_labeler(studies, cache)  # served from the cache
    assert len(calls) == 1
    np.testing.assert_array_equal(again[1].labels, labelled[1].labels)


# --------------------------------------------------------------------------------------------------
# `leadrrg data check`


def run_check(argv: list[str]) -> int:
    import argparse

    from leadrrg.commands import data as data_command

    parser = argparse.ArgumentParser()
    data_command.add_arguments(parser)
    return data_command.run(parser.parse_args(argv))


def test_data_check_counts_and_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = make_mimic_cxr(tmp_path)
    assert run_check(["check", "--format", "mimic_cxr", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "10 entries in splits test, train, val" in out and "labels: 10/10" in out and "OK" in out
    assert "10 entries (one per image, as R2Gen evaluates) of 10 studies" in out
    annotation = json.loads((root / "annotation.json").read_text())
    Path(root / "images" / annotation["train"][0]["image_path"][0]).unlink()
    Path(root / "images" / annotation["val"][0]["image_path"][0]).write_bytes(b"not a jpeg")
    assert run_check(["check", "--format", "mimic_cxr", "--root", str(root), "--decode"]) == 1
    out = capsys.readouterr().out
    assert "missing images: 1" in out and "unreadable images: 1" in out
    assert annotation["train"][0]["image_path"][0] in out and "FAILED" in out


@pytest.mark.parametrize(
    "name, views, tokens", [("iu_xray", 2, 60), ("mimic_cxr", 1, 100), ("chexpert_plus", 1, 100)]
)
def test_dataset_presets(name: str, views: int, tokens: int) -> None:
    from leadrrg.config import load_preset

    config = load_preset(name)
    assert config.data.format == name and config.data.section == "findings"
    assert config.model.max_views == views and config.model.vision.image_size == 224
    assert config.data.max_report_tokens == tokens


def test_synth_manifest_with_structured_findings(tmp_path: Path) -> None:
    # SynthCXR writes its structured findings under "findings"; the text is "report".
    root = make_jsonl(tmp_path)
    lines = [json.loads(line) for line in (root / "manifest.jsonl").read_text().splitlines()]
    for entry in lines:
        entry["findings"] = {"cardiomegaly": {"severity": "mild"}}
        entry["split"] = "shift_test" if entry["split"] == "test" else entry["split"]
    (root / "manifest.jsonl").write_text("\n".join(json.dumps(e) for e in lines))
    studies = load_studies(DataConfig(format="synth", root=str(root)), "shift_test")
    assert len(studies) == 2 and studies[0].report == clean_report(FIXTURE_REPORTS[3][0], "r2gen")
    assert studies[0].labels[obs("Edema")] == 1.0


def test_annotation_paths_relative_to_root_are_accepted(tmp_path: Path) -> None:
    root = make_iu_xray(tmp_path)
    annotation = json.loads((root / "annotation.json").read_text())
    for entries in annotation.values():
        for entry in entries:
            entry["image_path"] = [f"images/{p}" for p in entry["image_path"]]
    (root / "annotation.json").write_text(json.dumps(annotation))
    study = load_studies(DataConfig(format="iu_xray", root=str(root)), "train")[0]
    assert all(Path(p).is_file() for p in study.images)
