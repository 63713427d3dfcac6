"""IU X-Ray as its releases ship it (issue 24): Open-i's XML + flat PNGs, Kaggle's CSV pair, ReXrank's study-keyed
JSON, LLaVA conversation files, and a split file. Each builds a small root in the release's exact layout (real
element, header and key names; generated images; short placeholder reports)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from leadrrg.config import DataConfig
from leadrrg.data.manifests import load_split, read_data
from leadrrg.data.splits import hash_split
from leadrrg.errors import LeadrrgError
from tests.fixtures_data import write_png
from tests.test_manifests import run_check

XML = """<?xml version="1.0" encoding="utf-8"?>
<eCitation>
  <meta type="rr"/>
  <uId id="CXR{n}"/>
  <MedlineCitation Owner="Indiana University" Status="supplied">
    <Article PubModel="Electronic">
      <Abstract>
        <AbstractText Label="COMPARISON">None.</AbstractText>
        <AbstractText Label="INDICATION">Cough.</AbstractText>
        <AbstractText Label="FINDINGS">{findings}</AbstractText>
        <AbstractText Label="IMPRESSION">Normal chest {n}.</AbstractText>
      </Abstract>
    </Article>
  </MedlineCitation>
  <MeSH><major>normal</major></MeSH>
  {images}
</eCitation>
"""


def make_openi(root: Path, studies: int = 12) -> Path:
    """ecgen-radiology/<n>.xml + flat CXR<n>_1_IM-<n>-{1001,2001}.png; report 3 has no image, report 4 no findings."""
    (root / "ecgen-radiology").mkdir(parents=True)
    for n in range(1, studies + 1):
        ids = [f"CXR{n}_1_IM-{n:04d}-{v}001" for v in (1, 2)] if n != 3 else []
        images = "".join(
            f'<parentImage id="{i}"><figureId>F{k}</figureId></parentImage>' for k, i in enumerate(ids)
        )
        findings = "" if n == 4 else f"The heart is normal in size {n}."
        xml = XML.format(n=n, findings=findings, images=images)
        (root / "ecgen-radiology" / f"{n}.xml").write_text(xml, encoding="utf-8")
        for k, image in enumerate(ids):
            write_png(root / f"{image}.png", seed=n * 2 + k)
    return root


def test_openi_xml_release_reads_as_downloaded(tmp_path, capsys):
    root = make_openi(tmp_path / "openi")
    data = DataConfig(format="iu_xray", root=str(root))
    read = read_data(data)
    assert len(read.records) == 11  # report 3 names no image
    assert read.notes[0].startswith("recognised Open-i's IU X-Ray release: 12 XML reports")
    assert any("1 reports name no image" in note for note in read.notes)
    assert any("Open-i ships no split" in warning for warning in read.warnings)
    first = next(r for r in read.records if r.id == "CXR1")
    assert first.split == hash_split("CXR1") and first.impression == "Normal chest 1."
    assert [Path(p).name for p in first.images] == ["CXR1_1_IM-0001-1001.png", "CXR1_1_IM-0001-2001.png"]
    assert run_check(["check", "--format", "iu_xray", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "recognised Open-i's IU X-Ray release" in out
    assert "11 studies in splits" in out and "10 with a non-empty findings section (1 skipped)" in out


def test_openi_with_r2gen_split_file(tmp_path):
    """R2Gen's annotation.json as data.split_file: its ids (CXR1_1_IM-0001) are Open-i's image names without the
    view number; studies it does not name are left out with a warning."""
    root = make_openi(tmp_path / "openi")
    split = {
        "train": [{"id": "CXR1_1_IM-0001"}, {"id": "CXR2_1_IM-0002"}],
        "val": [],
        "test": [{"id": "CXR5_1_IM-0005"}],
    }
    (root / "annotation_r2gen.json").write_text(json.dumps(split))
    data = DataConfig(format="iu_xray", root=str(root), split_file="annotation_r2gen.json")
    read = read_data(data)
    assert {(r.id, r.split) for r in read.records} == {("CXR1", "train"), ("CXR2", "train"), ("CXR5", "test")}
    assert any("8 studies are not in the split file" in w for w in read.warnings)
    assert not any("Open-i ships no split" in w for w in read.warnings)


def make_kaggle(root: Path, studies: int = 10) -> Path:
    """indiana_reports.csv + indiana_projections.csv + images/images_normalized/<uid>_IM-*.dcm.png (raddar's)."""
    folder = root / "images" / "images_normalized"
    folder.mkdir(parents=True)
    with open(root / "indiana_reports.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["uid", "MeSH", "Problems", "image", "indication", "comparison", "findings", "impression"]
        )
        for uid in range(1, studies + 1):
            writer.writerow(
                [
                    uid,
                    "normal",
                    "normal",
                    "Xray Chest PA and Lateral",
                    "Cough, fever",
                    "None.",
                    f"The lungs are clear, {uid}.",
                    f"No acute disease {uid}.",
                ]
            )
    with open(root / "indiana_projections.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["uid", "filename", "projection"])
        for uid in range(1, studies):  # the last report has no image
            for k, view in (("2", "Lateral"), ("1", "Frontal")):
                name = f"{uid}_IM-{uid:04d}-{k}001.dcm.png"
                writer.writerow([uid, name, view])
                write_png(folder / name, seed=uid * 3 + int(k))
    return root


def test_kaggle_csv_pair_reads_as_downloaded(tmp_path, capsys):
    root = make_kaggle(tmp_path / "kaggle")
    read = read_data(DataConfig(format="iu_xray", root=str(root)))
    assert len(read.records) == 9 and read.notes[0].startswith("recognised Kaggle's IU X-Ray CSV pair")
    first = read.records[0]
    assert (
        first.id == "CXR1"
        and first.findings == "The lungs are clear, 1."
        and first.split == hash_split("CXR1")
    )
    assert Path(first.images[0]).name == "1_IM-0001-1001.dcm.png"  # frontal first
    assert any("1 reports have no row" in note for note in read.notes)
    assert run_check(["check", "--format", "iu_xray", "--root", str(root)]) == 0
    assert "recognised Kaggle's IU X-Ray CSV pair" in capsys.readouterr().out


def rexrank_iu_entry(key: str, split: str) -> dict:
    return {
        "key_image_path": f"{key}/0.png",
        "image_path": [f"{key}/0.png", f"{key}/1.png"],
        "report": "Findings: Lungs are clear. Impression: No acute disease.",
        "section_findings": "Lungs are clear.",
        "section_impression": "No acute disease.",
        "split": split,
        "frontal_lateral": ["Lateral", "Frontal"],
        "context": "Indication: Chest pain Comparison: None.",
    }


def test_rexrank_iu_study_keyed_json(tmp_path, capsys):
    root = tmp_path / "iu"
    keys = {"CXR3030_IM-1405": "test", "CXR38_IM-1911": "test", "CXR1347_IM-0225": "valid"}
    for key in keys:
        write_png(root / "images" / key / "0.png", seed=1)
        write_png(root / "images" / key / "1.png", seed=2)
    value = {key: rexrank_iu_entry(key, split) for key, split in keys.items()}
    value["CXR38_IM-1911"]["section_impression"] = float("nan")  # ReXrank writes NaN
    (root / "ReXRank_IUXray_test.json").write_text(json.dumps(value))
    data = DataConfig(format="iu_xray", root=str(root), annotation_file="ReXRank_IUXray_test.json")
    read = read_data(data)
    record = next(r for r in read.records if r.id == "CXR3030_IM-1405")
    assert (record.split, record.findings, record.impression) == (
        "test",
        "Lungs are clear.",
        "No acute disease.",
    )
    assert Path(record.images[0]).name == "1.png"  # the frontal view first (frontal_lateral)
    assert next(r for r in read.records if r.id == "CXR38_IM-1911").impression == ""
    assert "study-keyed JSON" in read.notes[0]
    assert len(load_split(data, "test").studies) == 2
    assert (
        run_check(
            [
                "check",
                "--format",
                "iu_xray",
                "--root",
                str(root),
                "--annotation-file",
                "ReXRank_IUXray_test.json",
            ]
        )
        == 0
    )
    assert "study-keyed JSON (ReXrank" in capsys.readouterr().out


def llava_entry(index: int) -> dict:
    return {
        "id": f"CXR{index}_IM-{index:04d}-1001",
        "image": f"CXR{index}_IM-{index:04d}-1001.png",
        "conversations": [
            {"from": "human", "value": "<image>\nDescribe the findings of the chest x-ray.\n"},
            {"from": "gpt", "value": f"The heart size is normal {index}."},
        ],
    }


def test_llava_conversation_files_one_per_split(tmp_path):
    root = tmp_path / "llava"
    for index in range(1, 7):
        write_png(root / "images" / f"CXR{index}_IM-{index:04d}-1001.png", seed=index)
    (root / "train.json").write_text(json.dumps([llava_entry(i) for i in range(1, 5)]))
    (root / "test.json").write_text(json.dumps([llava_entry(i) for i in range(5, 7)]))
    data = DataConfig(format="iu_xray", root=str(root), annotation_file="train.json,test.json")
    read = read_data(data)
    assert sorted({r.split for r in read.records}) == ["test", "train"]
    assert [s.report for s in load_split(data, "test").studies] == [
        "the heart size is normal 5 .",
        "the heart size is normal 6 .",
    ]
    assert "LLaVA conversations" in read.notes[0]
    (root / "all.json").write_text(json.dumps([llava_entry(1)]))
    with pytest.raises(LeadrrgError, match="names no split and the file name 'all.json'"):
        read_data(DataConfig(format="iu_xray", root=str(root), annotation_file="all.json"))


def test_no_annotation_names_the_other_iu_layouts(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(LeadrrgError, match="Open-i's ecgen-radiology"):
        read_data(DataConfig(format="iu_xray", root=str(tmp_path / "empty")))
