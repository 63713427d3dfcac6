"""Side and size in evaluation: the image's findings reach the prediction records, `evaluate` scores the stated
side and severity against them and against the reference, warns about degenerate outputs, and `label --attributes`
writes the attribute columns."""

from __future__ import annotations

import csv
import json

from leadrrg import cli
from leadrrg.config import DataConfig
from leadrrg.data.manifests import load_studies
from leadrrg.data.synth.generate import synthesize
from leadrrg.evaluation.evaluate import evaluate_predictions, format_table

EFFUSION_RIGHT = {
    "Pleural Effusion": {"side": "right", "severity": "moderate", "zone": "lower", "devices": []}
}


def record(generated, reference="Moderate right pleural effusion.", findings=EFFUSION_RIGHT):
    return {"id": "s", "reference": reference, "generated": generated, "findings": findings}


def test_stated_side_and_size_are_scored_against_the_image():
    records = [
        record("Moderate right pleural effusion."),  # side and size right
        record("Small left pleural effusion."),  # both wrong
        record("Pleural effusion."),  # no side stated: an omission, not a contradiction
    ]
    metrics = evaluate_predictions(records, meteor=False)
    assert metrics["gt_laterality_accuracy"] == 0.5 and metrics["gt_laterality_n"] == 2
    assert metrics["gt_severity_accuracy"] == 0.5
    assert metrics["gt_attribute_hallucination_rate"] == 1 / 3
    assert metrics["gt_laterality_omission"] == 1 / 3
    # Against the reference's own extraction (real data has no image truth): the same here.
    assert metrics["laterality_accuracy"] == 0.5
    assert "vs the image's findings" in format_table(metrics)


def test_without_findings_there_are_no_gt_attribute_metrics():
    metrics = evaluate_predictions([record("Small left pleural effusion.", findings=None)], meteor=False)
    assert "gt_laterality_accuracy" not in metrics
    assert metrics["laterality_accuracy"] == 0.0


def test_punctuation_only_reports_are_flagged(tmp_path):
    preds = tmp_path / "preds.jsonl"
    rows = [record(". . . . ."), record(". . . . ."), record("Moderate right pleural effusion.")]
    preds.write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert (
        cli.main(["evaluate", "--preds", str(preds), "--out", str(tmp_path / "m.json"), "--no-meteor"]) == 0
    )
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["degenerate"]["num_punctuation_only"] == 2
    assert metrics["warnings"] and "punctuation-only" in metrics["warnings"][0]


def test_synth_findings_reach_the_studies(tmp_path):
    root = synthesize(tmp_path / "data", {"train": 6}, size=32, seed=1)
    manifest = [json.loads(line) for line in (root / "manifest.jsonl").read_text().splitlines()]
    studies = load_studies(DataConfig(root=str(root), format="synth"), "train")
    assert [study.attributes for study in studies] == [entry["findings"] for entry in manifest]


def test_label_attributes_columns(tmp_path):
    reports = tmp_path / "reports.txt"
    reports.write_text("Large left pneumothorax.\nNo pneumothorax.\n")
    out = tmp_path / "labels.csv"
    assert cli.main(["label", str(reports), "--out", str(out), "--attributes"]) == 0
    rows = list(csv.DictReader(out.open()))
    assert rows[0]["Pneumothorax_side"] == "left" and rows[0]["Pneumothorax_severity"] == "large"
    assert rows[1]["Pneumothorax"] == "0.0" and rows[1]["Pneumothorax_side"] == ""
