"""Real data sets as they are downloaded: every case of issue 10 in its real structure (synthetic text).

Each fixture rebuilds one thing a real download contains (split names, file names, folder layouts, label file
columns and codings) on top of the tiny builders of `tests.fixtures_data`, and checks that it is read
correctly or refused with one sentence that says what to do.
"""

from __future__ import annotations

import csv
import gzip
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from leadrrg.config import DataConfig
from leadrrg.constants import OBSERVATIONS
from leadrrg.data.label_files import CHEXBERT_ORDER, parse_labels
from leadrrg.data.manifests import load_split, load_studies, read_data
from leadrrg.errors import LeadrrgError
from tests.fixtures_data import (
    FIXTURE_REPORTS,
    make_chexpert_plus,
    make_iu_xray,
    make_jsonl,
    make_mimic_cxr,
    write_png,
)

# The CheXpert labeler's output columns (its own order: Lung Lesion before Lung Opacity) and CheXbert's.
CHEXPERT_LABELER_COLUMNS = (
    "Reports",
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Lesion",
    "Lung Opacity",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
CHEXBERT_COLUMNS = ("Report Impression", *CHEXBERT_ORDER)


def obs(name: str) -> int:
    return OBSERVATIONS.index(name)


def fixture_labels(report: str) -> list:
    return next(labels for findings, _, labels in FIXTURE_REPORTS if findings == report)


def read_csv(path: Path) -> list[list[str]]:
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


def edit_annotation(root: Path, change) -> dict:
    annotation = json.loads((root / "annotation.json").read_text())
    annotation = change(annotation) or annotation
    (root / "annotation.json").write_text(json.dumps(annotation))
    return annotation


def run_check(argv: list[str]) -> int:
    import argparse

    from leadrrg.commands import data as data_command

    parser = argparse.ArgumentParser()
    data_command.add_arguments(parser)
    return data_command.run(parser.parse_args(argv))


def write_label_csv(path: Path, columns, rows) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows(rows)
    return path


def labeler_row(report: str, labels: list, columns) -> list:
    by_name = dict(zip(OBSERVATIONS, labels))
    cells = ["" if by_name[c] is None else f"{by_name[c]:.1f}" for c in columns[1:]]
    return [report, *cells]


# --------------------------------------------------------------------------------------------------
# Split names


def test_blank_test_split_is_read_as_test_and_reported(tmp_path: Path, capsys) -> None:
    root = make_iu_xray(tmp_path)
    edit_annotation(root, lambda a: {"train": a["train"], "val": a["val"], "    ": a["test"]})
    data = DataConfig(format="iu_xray", root=str(root))
    assert len(load_studies(data, "test")) == 2  # `generate --split test` works
    assert run_check(["check", "--format", "iu_xray", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "splits test, train, val" in out
    assert "split name '    ' (blank) in" in out and "is read as 'test'" in out and "warnings: 1" in out


def test_two_blank_splits_or_two_names_for_one_split_are_refused(tmp_path: Path) -> None:
    root = make_iu_xray(tmp_path)
    edit_annotation(root, lambda a: {"train": a["train"], " ": a["val"], "    ": a["test"]})
    with pytest.raises(LeadrrgError, match=r"2 blank split name\(s\)"):
        load_studies(DataConfig(format="iu_xray", root=str(root)), "train")
    edit_annotation(root, lambda a: {"train": a["train"], "val": a[" "], "valid": a["    "]})
    with pytest.raises(LeadrrgError, match="splits 'val' and 'valid', which both mean 'val'"):
        load_studies(DataConfig(format="iu_xray", root=str(root)), "train")


@pytest.mark.parametrize("name", ["validate", "valid", "Validation"])
def test_validation_aliases_are_val(tmp_path: Path, capsys, name: str) -> None:
    root = make_mimic_cxr(tmp_path)
    edit_annotation(root, lambda a: {"train": a["train"], name: a["val"], "test": a["test"]})
    data = DataConfig(format="mimic_cxr", root=str(root))
    result = load_split(data, "val")  # what training validates on
    assert result.split == "val" and len(result.studies) == 2
    assert len(load_studies(data, name)) == 2  # the name as stored is accepted too
    assert run_check(["check", "--format", "mimic_cxr", "--root", str(root)]) == 0
    assert f"split {name!r} in" in capsys.readouterr().out


def test_chexpert_plus_without_test_split_says_which_split_to_use(tmp_path: Path, capsys) -> None:
    root = make_chexpert_plus(tmp_path, counts={"train": 4, "valid": 2})
    data = DataConfig(format="chexpert_plus", root=str(root))
    with pytest.raises(LeadrrgError, match=r"split 'test' is not in .*no test split.*--split val"):
        load_studies(data, "test")
    assert len(load_studies(data, "val")) == 2
    assert run_check(["check", "--format", "chexpert_plus", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "no test split (splits: train, val)" in out and "use 'val' (--split val)" in out


# --------------------------------------------------------------------------------------------------
# MIMIC-CXR: per-image entries or studies, PhysioNet layout, .csv.gz labels


def make_mimic_two_views(root: Path) -> Path:
    """R2Gen's MIMIC layout where every study has two entries (two images, the same report), as in val."""
    root = make_mimic_cxr(root)

    def add_second_view(annotation):
        for entries in annotation.values():
            for entry in list(entries):
                second = dict(entry, id=entry["id"].replace("-0000-", "-0001-"))
                second["image_path"] = [entry["image_path"][0].replace("-0000-", "-0001-")]
                write_png(root / "images" / second["image_path"][0], seed=7)
                entries.append(second)

    edit_annotation(root, add_second_view)
    return root


def test_mimic_grouping_entries_or_studies(tmp_path: Path, capsys) -> None:
    root = make_mimic_two_views(tmp_path)
    entries = load_studies(DataConfig(format="mimic_cxr", root=str(root)), "val")
    assert len(entries) == 4 and all(len(s.images) == 1 for s in entries)
    studies = load_studies(DataConfig(format="mimic_cxr", root=str(root), grouping="study"), "val")
    assert len(studies) == 2 and all(len(s.images) == 2 for s in studies)
    assert studies[0].id == "50000006" and studies[0].labels is not None  # joined by study_id
    assert run_check(["check", "--format", "mimic_cxr", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert (
        "20 entries in splits" in out
        and "20 entries (one per image, as R2Gen evaluates) of 10 studies" in out
    )
    assert run_check(["check", "--format", "mimic_cxr", "--root", str(root), "--grouping", "study"]) == 0
    out = capsys.readouterr().out
    assert "10 studies in splits" in out and "20 annotation entries grouped into 10 studies" in out


def test_mimic_study_in_two_splits_is_warned(tmp_path: Path) -> None:
    root = make_mimic_cxr(tmp_path)
    edit_annotation(root, lambda a: a["test"][0].update(study_id=a["train"][0]["study_id"]))
    warnings = read_data(DataConfig(format="mimic_cxr", root=str(root))).warnings
    assert any("1 studies of annotation.json have entries in more than one split" in w for w in warnings)


def test_mimic_labels_from_csv_gz_found_or_named(tmp_path: Path) -> None:
    root = make_mimic_cxr(tmp_path)
    plain = root / "mimic-cxr-2.0.0-chexpert.csv"
    (root / "mimic-cxr-2.0.0-chexpert.csv.gz").write_bytes(gzip.compress(plain.read_bytes()))
    plain.unlink()  # as PhysioNet ships it: only the .gz
    found = load_studies(DataConfig(format="mimic_cxr", root=str(root)), "train")
    assert found[1].labels[obs("Cardiomegaly")] == 1.0 and math.isnan(found[1].labels[obs("Edema")])
    named = load_studies(
        DataConfig(format="mimic_cxr", root=str(root), label_file="mimic-cxr-2.0.0-chexpert.csv.gz"), "train"
    )
    np.testing.assert_array_equal(named[2].labels, found[2].labels)


def test_corrupt_gzip_label_file_is_one_sentence(tmp_path: Path) -> None:
    root = make_mimic_cxr(tmp_path)
    (root / "mimic-cxr-2.0.0-chexpert.csv").unlink()
    (root / "mimic-cxr-2.0.0-chexpert.csv.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(LeadrrgError, match=r"label file .*csv.gz cannot be read"):
        load_studies(DataConfig(format="mimic_cxr", root=str(root)), "train")


def test_mimic_physionet_files_layout(tmp_path: Path, capsys) -> None:
    root = make_mimic_cxr(tmp_path)
    (root / "images").rename(root / "files")  # MIMIC-CXR-JPG: files/p1X/p<subject>/s<study>/<dicom>.jpg
    studies = load_studies(DataConfig(format="mimic_cxr", root=str(root)), "train")
    assert all(Path(p).is_file() and "/files/p10/" in p for s in studies for p in s.images)
    assert run_check(["check", "--format", "mimic_cxr", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "relative to" in out and "files" in out and "missing images" not in out


# --------------------------------------------------------------------------------------------------
# CheXpert Plus: the PNG release, labels in labels/


def test_chexpert_plus_png_release_maps_jpg_names_to_png(tmp_path: Path, capsys) -> None:
    root = make_chexpert_plus(tmp_path)
    for jpg in sorted(root.glob("*/patient*/study1/*.jpg")):
        target = root / "PNG" / "PNG" / jpg.relative_to(root).with_suffix(".png")
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.open(jpg).save(target)
        jpg.unlink()
    studies = load_studies(DataConfig(format="chexpert_plus", root=str(root)), "train")
    assert studies[0].images[0].endswith("PNG/PNG/train/patient00001/study1/view1_frontal.png")
    assert all(Path(p).is_file() for s in studies for p in s.images)
    assert studies[1].labels[obs("Cardiomegaly")] == 1.0  # labels still keyed by the CSV's .jpg names
    assert run_check(["check", "--format", "chexpert_plus", "--root", str(root)]) == 0
    assert "with the CSV's .jpg names as .png" in capsys.readouterr().out


def test_chexpert_plus_labels_under_labels_folder(tmp_path: Path) -> None:
    root = make_chexpert_plus(tmp_path)
    (root / "chexbert_labels").rename(root / "labels")  # the Redivis layout
    studies = load_studies(DataConfig(format="chexpert_plus", root=str(root)), "train")
    assert studies[1].labels is not None and studies[1].labels[obs("Pleural Effusion")] == 1.0


# --------------------------------------------------------------------------------------------------
# IU X-Ray variants


def test_iu_variant_numeric_ids_flat_images_no_entry_split(tmp_path: Path) -> None:
    root = tmp_path / "iu"
    annotation: dict[str, list] = {"train": [], "val": [], "test": []}
    for index, split in enumerate(["train"] * 4 + ["val", "test"]):
        views = 1 + index % 5  # 1 to 5 images per study, all in one flat folder
        names = [f"{index + 1}_IM-{index:04d}-{1001 + v}.dcm.png" for v in range(views)]
        for v, name in enumerate(names):
            write_png(root / "images" / name, seed=index * 10 + v)
        annotation[split].append(
            {"id": index + 1, "report": FIXTURE_REPORTS[index % 5][0], "image_path": names}
        )
    (root / "annotation.json").write_text(json.dumps(annotation))
    train = load_studies(DataConfig(format="iu_xray", root=str(root)), "train")
    assert [s.id for s in train] == ["1", "2", "3", "4"]
    assert [len(s.images) for s in train] == [1, 2, 3, 4] and all(Path(p).is_file() for p in train[3].images)


def test_iu_list_without_splits_is_refused_with_the_fix(tmp_path: Path) -> None:
    root = make_iu_xray(tmp_path)
    edit_annotation(root, lambda a: [{k: v for k, v in e.items() if k != "split"} for e in a["test"]])
    with pytest.raises(
        LeadrrgError, match=r"list of 2 entries and 2 of them name no split.*\{\"test\": \[\.\.\.\]\}"
    ):
        load_studies(DataConfig(format="iu_xray", root=str(root)), "test")


def test_list_of_entries_with_split_keys_is_read(tmp_path: Path) -> None:
    root = make_iu_xray(tmp_path)
    edit_annotation(root, lambda a: a["train"] + a["val"] + a["test"])
    assert len(load_studies(DataConfig(format="iu_xray", root=str(root)), "train")) == 6


# --------------------------------------------------------------------------------------------------
# Label files keyed by report text or row order


def iu_with_labeler_output(root: Path, columns) -> Path:
    root = make_iu_xray(root)
    annotation = json.loads((root / "annotation.json").read_text())
    rows = []
    for split in ("train", "val", "test"):
        for entry in annotation[split]:
            labels = fixture_labels(entry["report"])
            rows.append(labeler_row(f"  {entry['report'].upper()}  ", labels, columns))  # case, spaces differ
    write_label_csv(root / "labeled_reports.csv", columns, rows)
    return root


@pytest.mark.parametrize(
    "columns", [CHEXPERT_LABELER_COLUMNS, CHEXBERT_COLUMNS], ids=["chexpert", "chexbert"]
)
def test_labeler_output_joins_by_report_text(tmp_path: Path, columns) -> None:
    root = iu_with_labeler_output(tmp_path, columns)
    data = DataConfig(format="iu_xray", root=str(root), label_file="labeled_reports.csv")
    read = read_data(data)
    assert all(r.labels is not None for r in read.records)
    second = next(r for r in read.records if r.id == "CXR2_IM-1001")  # cardiomegaly + effusion
    assert second.labels[obs("Cardiomegaly")] == 1.0 and second.labels[obs("Lung Lesion")] != 1.0
    assert math.isnan(second.labels[obs("Lung Opacity")])
    assert any(f"by report text ({columns[0]!r}): 10 records labelled" in n for n in read.notes)


def test_label_file_by_row_order(tmp_path: Path) -> None:
    root = iu_with_labeler_output(tmp_path, CHEXPERT_LABELER_COLUMNS)
    rows = read_csv(root / "labeled_reports.csv")
    write_label_csv(root / "rows.csv", rows[0][1:], [r[1:] for r in rows[1:]])  # no report column at all
    with pytest.raises(LeadrrgError, match="data.label_join=row"):
        load_studies(DataConfig(format="iu_xray", root=str(root), label_file="rows.csv"), "train")
    by_row = load_studies(
        DataConfig(format="iu_xray", root=str(root), label_file="rows.csv", label_join="row"), "train"
    )
    assert by_row[1].labels[obs("Cardiomegaly")] == 1.0 and by_row[0].labels[obs("No Finding")] == 1.0
    write_label_csv(root / "short.csv", rows[0][1:], [r[1:] for r in rows[1:4]])
    with pytest.raises(LeadrrgError, match="has 3 rows but the data has 10 studies"):
        load_studies(
            DataConfig(format="iu_xray", root=str(root), label_file="short.csv", label_join="row"), "train"
        )


def test_label_file_matching_nothing_is_warned(tmp_path: Path, capsys) -> None:
    root = iu_with_labeler_output(tmp_path, CHEXPERT_LABELER_COLUMNS)
    rows = read_csv(root / "labeled_reports.csv")
    write_label_csv(
        root / "other.csv", rows[0], [[f"another report {i}", *r[1:]] for i, r in enumerate(rows[1:])]
    )
    code = run_check(["check", "--format", "iu_xray", "--root", str(root), "--label-file", "other.csv"])
    out = capsys.readouterr().out
    assert code == 0 and "none of its 10 rows matches a study by report text" in out
    assert "labels: none of 10 studies carry labels" in out


# --------------------------------------------------------------------------------------------------
# CheXbert label codes (PromptMRG)

PROMPTMRG_CODES = {1.0: 1, 0.0: 2, -1.0: 3, None: 0}


def promptmrg_labels(labels: list) -> list[int]:
    by_name = dict(zip(OBSERVATIONS, labels))
    return [PROMPTMRG_CODES[by_name[name]] for name in CHEXBERT_ORDER]


def make_promptmrg_iu(root: Path) -> Path:
    root = make_iu_xray(root)

    def add_labels(annotation):
        for entries in annotation.values():
            for entry in entries:
                entry["labels"] = promptmrg_labels(fixture_labels(entry["report"]))

    edit_annotation(root, add_labels)
    (root / "annotation.json").rename(root / "iu_annotation_promptmrg.json")
    return root


def test_promptmrg_labels_need_the_chexbert_coding(tmp_path: Path) -> None:
    root = make_promptmrg_iu(tmp_path)
    with pytest.raises(LeadrrgError, match=r"is 2; expected 1, 0, -1 or empty .*data.label_codes=chexbert"):
        load_studies(DataConfig(format="iu_xray", root=str(root)), "train")
    studies = load_studies(DataConfig(format="iu_xray", root=str(root), label_codes="chexbert"), "train")
    first, second = studies[0].labels, studies[1].labels  # FIXTURE_REPORTS[0] and [1]
    assert first[obs("No Finding")] == 1.0 and first[obs("Cardiomegaly")] == 0.0
    assert math.isnan(first[obs("Edema")])  # 0 = blank, never read as negative
    assert second[obs("Cardiomegaly")] == 1.0 and second[obs("Pleural Effusion")] == 1.0
    third = load_studies(DataConfig(format="iu_xray", root=str(root), label_codes="chexbert"), "train")[2]
    assert third.labels[obs("Pneumonia")] == -1.0  # 3 = uncertain


def test_jsonl_labels_in_chexbert_codes(tmp_path: Path) -> None:
    root = make_jsonl(tmp_path)
    lines = [json.loads(line) for line in (root / "manifest.jsonl").read_text().splitlines()]
    for entry in lines:
        entry["labels"] = promptmrg_labels(entry["labels"])
    (root / "manifest.jsonl").write_text("\n".join(json.dumps(e) for e in lines))
    with pytest.raises(LeadrrgError, match="data.label_codes=chexbert"):
        load_studies(DataConfig(format="jsonl", root=str(root)), "train")
    studies = load_studies(DataConfig(format="jsonl", root=str(root), label_codes="chexbert"), "train")
    assert studies[2].labels[obs("Pneumonia")] == -1.0 and studies[2].labels[obs("Pneumothorax")] == 0.0


def test_chexbert_coding_refuses_minus_one_and_zero_one_labels_are_warned(tmp_path: Path) -> None:
    with pytest.raises(
        LeadrrgError, match="CheXbert codes; for 1 / 0 / -1 / blank set data.label_codes=chexpert"
    ):
        parse_labels([-1] * 14, "here", "chexbert")
    root = make_jsonl(tmp_path)
    lines = [json.loads(line) for line in (root / "manifest.jsonl").read_text().splitlines()]
    for entry in lines:
        entry["labels"] = [0 if v is None else int(v == 1) for v in entry["labels"]]
    (root / "manifest.jsonl").write_text("\n".join(json.dumps(e) for e in lines))
    warnings = read_data(DataConfig(format="jsonl", root=str(root))).warnings
    assert any(
        "use only the values 0 and 1" in w and "label_codes=chexpert (0 = negative)" in w for w in warnings
    )


# --------------------------------------------------------------------------------------------------
# Duplicates


def test_duplicate_studies_are_warned(tmp_path: Path, capsys) -> None:
    root = make_iu_xray(tmp_path)
    edit_annotation(root, lambda a: a["test"][1].update(image_path=a["train"][0]["image_path"]))
    assert run_check(["check", "--format", "iu_xray", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "2 images belong to more than one study (duplicate studies?)" in out
    assert "'CXR1_IM-1000', 'CXR10_IM-1009'" in out


# --------------------------------------------------------------------------------------------------
# `leadrrg label --no-header` (the CheXpert labeler's sample_reports.csv)


def test_label_no_header_reads_every_row(tmp_path: Path) -> None:
    from leadrrg.cli import main

    source = tmp_path / "sample_reports.csv"
    reports = [f for f, _, _ in FIXTURE_REPORTS]
    with open(source, "w", newline="") as handle:
        csv.writer(handle).writerows([[r] for r in reports])
    out = tmp_path / "labels.csv"
    assert main(["label", str(source), "--out", str(out), "--no-header"]) == 0
    header, *values = read_csv(out)
    rows = [dict(zip(header, row)) for row in values]
    assert [r["Reports"] for r in rows] == reports  # the first report is a report, not a header
    assert rows[1]["Cardiomegaly"] == "1.0"
    assert main(["label", str(source), "--out", str(tmp_path / "x.csv")]) == 2  # refused: names --no-header


def test_label_no_header_with_column_numbers(tmp_path: Path) -> None:
    from leadrrg.labeler.reports_io import read_reports

    source = tmp_path / "r.csv"
    source.write_text("1,Heart is enlarged.,No effusion.\n2,Lungs clear.,\n")
    assert read_reports(source, "2,3", header=False) == ["Heart is enlarged. No effusion.", "Lungs clear."]
    with pytest.raises(LeadrrgError, match="column numbers counted from 1"):
        read_reports(source, "report", header=False)
    shutil.copy(source, tmp_path / "r.txt")
    with pytest.raises(LeadrrgError, match="--no-header applies to CSV input"):
        read_reports(tmp_path / "r.txt", header=False)
