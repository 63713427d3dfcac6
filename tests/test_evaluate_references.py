"""`leadrrg evaluate` / `leadrrg compare` with --data: predictions without references (a CSV in cxrmate-2's columns
`study_id,findings,impression`) take the reference and labels of the data set's study with the same id."""

from __future__ import annotations

import csv
import json
import logging

import pytest

from leadrrg import cli
from leadrrg.config import DataConfig
from leadrrg.data.manifests import load_studies
from leadrrg.errors import LeadrrgError
from leadrrg.evaluation.predictions import attach_references, read_predictions
from tests.fixtures_data import make_jsonl, make_mimic_cxr

COUNTS = {"train": 2, "test": 3}  # test studies: s0002, s0003, s0004


def write_csv(path, rows):
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["study_id", "findings", "impression"])
        writer.writerows(rows)
    return path


@pytest.fixture
def root(tmp_path):
    return make_jsonl(tmp_path / "data", counts=COUNTS)


def data_args(root):
    return ["--data", str(root), "--format", "jsonl", "--split", "test"]


def test_evaluate_csv_without_reference_end_to_end(tmp_path, root, capsys):
    # both MIMIC spellings of an id: `0002` and `s0003`
    preds = write_csv(
        tmp_path / "cxrmate2.csv",
        [
            ["0002", "The heart is enlarged.", "Cardiomegaly."],
            ["s0003", "Right lower lobe consolidation.", ""],
            ["s0004", "Mild pulmonary edema.", "Heart failure."],
        ],
    )
    out = tmp_path / "metrics.json"
    assert (
        cli.main(["evaluate", "--preds", str(preds), "--out", str(out), "--no-meteor", *data_args(root)]) == 0
    )
    metrics = json.loads(out.read_text())
    assert metrics["meta"]["num_studies"] == 3 and metrics["meta"]["split"] == "test"
    assert "gt_ce14_micro_f1" in metrics  # the data's labels came along
    studies = {s.id: s for s in load_studies(DataConfig(root=str(root), format="jsonl"), "test")}
    records = read_predictions(preds, DataConfig(root=str(root), format="jsonl"), "test")
    assert [r["reference"] for r in records] == [studies[i].report for i in ("s0002", "s0003", "s0004")]
    assert records[0]["generated"] == "The heart is enlarged. Cardiomegaly."
    assert all(len(r["labels"]) == 14 for r in records)


def test_without_data_the_csv_is_refused_with_the_way_out(tmp_path, capsys):
    preds = write_csv(tmp_path / "p.csv", [["s0002", "Clear lungs.", ""]])
    assert cli.main(["evaluate", "--preds", str(preds), "--out", str(tmp_path / "m.json")]) == 2
    assert "--data ROOT --format FORMAT --split SPLIT" in capsys.readouterr().err


def test_jsonl_without_reference_and_compare(tmp_path, root, capsys):
    a = tmp_path / "a.jsonl"
    b = tmp_path / "b.csv"
    a.write_text(
        "".join(json.dumps({"id": f"s000{i}", "generated": "Lungs are clear."}) + "\n" for i in (2, 3, 4))
    )
    write_csv(b, [[f"000{i}", "The heart is enlarged.", ""] for i in (2, 3, 4)])
    out = tmp_path / "c.json"
    argv = ["compare", str(a), str(b), "--bootstrap", "20", "--out", str(out), *data_args(root)]
    assert cli.main(argv) == 0
    result = json.loads(out.read_text())
    assert result and all("difference" in value for value in result.values() if isinstance(value, dict))


def test_ids_not_in_the_split_are_an_error(tmp_path, root, capsys):
    preds = write_csv(
        tmp_path / "p.csv", [["s0002", "Clear.", ""], ["s0000", "Clear.", ""], ["9999", "Clear.", ""]]
    )
    out = tmp_path / "m.json"
    assert (
        cli.main(["evaluate", "--preds", str(preds), "--out", str(out), "--no-meteor", *data_args(root)]) == 2
    )
    err = capsys.readouterr().err
    assert (
        "p.csv" in err and "2 of 3 predictions" in err and "'s0000', '9999'" in err and "split 'test'" in err
    )
    assert not out.exists()


def test_studies_without_a_prediction_warn_with_the_count(tmp_path, root, caplog):
    preds = write_csv(tmp_path / "p.csv", [["s0002", "The heart is enlarged.", ""]])
    out = tmp_path / "m.json"
    with caplog.at_level(logging.WARNING, logger="leadrrg"):
        assert (
            cli.main(["evaluate", "--preds", str(preds), "--out", str(out), "--no-meteor", *data_args(root)])
            == 0
        )
    assert "2 of the 3 studies" in caplog.text and "scored on the 1 predictions given" in caplog.text
    assert json.loads(out.read_text())["meta"]["num_studies"] == 1


def test_attach_references_library():
    from leadrrg.data.records import Study

    studies = [Study("50414267", "test", [], "Clear lungs.", None, {"Edema": {"severity": "mild"}})]
    filled = attach_references([{"id": "s50414267", "generated": "x"}], studies)
    assert filled == [
        {
            "id": "50414267",
            "generated": "x",
            "reference": "Clear lungs.",
            "findings": {"Edema": {"severity": "mild"}},
        }
    ]
    with pytest.raises(LeadrrgError, match="1 of 1 predictions"):
        attach_references([{"id": "s1", "generated": "x"}], studies)


def test_format_is_needed_with_data(tmp_path, root, capsys):
    preds = write_csv(tmp_path / "p.csv", [["s0002", "Clear.", ""]])
    argv = ["evaluate", "--preds", str(preds), "--out", str(tmp_path / "m.json"), "--data", str(root)]
    assert cli.main(argv) == 2
    assert "needs --format" in capsys.readouterr().err


def test_mimic_study_ids_join_the_per_image_entries_by_study(tmp_path, capsys):
    root = make_mimic_cxr(tmp_path / "mimic", counts=COUNTS)  # test study_ids 50000002..50000004
    preds = write_csv(
        tmp_path / "p.csv", [["s50000002", "The heart is enlarged.", ""], ["50000003", "Clear.", ""]]
    )
    records = read_predictions(preds, DataConfig(root=str(root), format="mimic_cxr"), "test")
    assert [r["id"] for r in records] == ["50000002", "50000003"] and all("labels" in r for r in records)
