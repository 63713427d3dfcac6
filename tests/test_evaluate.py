"""evaluate_predictions and `leadrrg evaluate`: wiring of labeler + metrics, gt_ metrics, errors, CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from leadrrg import cli
from leadrrg.constants import NUM_OBSERVATIONS, OBSERVATIONS
from leadrrg.errors import LeadrrgError
from leadrrg.evaluation.evaluate import evaluate_predictions, format_table
from leadrrg.metrics.clinical import ce_scores
from leadrrg.metrics.hallucination import hallucination_scores
from leadrrg.metrics.nlg import NORMALIZATION

KEYWORDS = {"cardiomegaly": "Cardiomegaly", "effusion": "Pleural Effusion", "edema": "Edema"}


def keyword_labeler(reports):
    """A stand-in labeler: 1 for every observation whose keyword occurs, NaN otherwise."""
    labels = np.full((len(reports), NUM_OBSERVATIONS), math.nan, dtype=np.float32)
    for i, report in enumerate(reports):
        for word, name in KEYWORDS.items():
            if word in report.lower():
                labels[i, OBSERVATIONS.index(name)] = 1.0
    return labels


def gt_row(*names):
    return [1 if name in names else 0 for name in OBSERVATIONS]


RECORDS = [
    {"id": "s1", "reference": "Mild cardiomegaly. Small effusion.", "generated": "Cardiomegaly.",
     "labels": gt_row("Cardiomegaly", "Pleural Effusion")},
    {"id": "s2", "reference": "The lungs are clear.", "generated": "Pulmonary edema.",
     "labels": gt_row("No Finding"), "evidence": {"expert_probs": [0.1] * 14}},
    {"id": "s3", "reference": "Edema and effusion.", "generated": "Edema and effusion.",
     "labels": gt_row("Edema")},
]  # fmt: skip


def test_metrics_are_the_metric_functions_on_labeler_output():
    metrics = evaluate_predictions(RECORDS, split="test", meteor=False, label_fn=keyword_labeler)
    ref = keyword_labeler([r["reference"] for r in RECORDS])
    hyp = keyword_labeler([r["generated"] for r in RECORDS])
    gt = np.array([r["labels"] for r in RECORDS], dtype=np.float32)
    for name, value in ce_scores(ref, hyp).items():
        assert metrics[name] == value
    for name, value in hallucination_scores(ref, hyp).items():
        assert metrics[name] == value
    for name, value in ce_scores(gt, hyp).items():
        assert metrics[f"gt_{name}"] == value
    for name, value in hallucination_scores(gt, hyp).items():
        assert metrics[f"gt_{name}"] == value
    # vs reference labels, s2 invents edema: 1 of 4 generated findings
    assert metrics["hallucination_rate"] == pytest.approx(1 / 4)
    # vs ground truth, s3's effusion is invented too
    assert metrics["gt_hallucination_rate"] == pytest.approx(2 / 4)
    assert metrics["bleu_1"] > 0 and metrics["meteor"] is None
    assert "disabled" in metrics["missing"]["meteor"]


def test_meta():
    meta = evaluate_predictions(RECORDS, split="test", meteor=False, label_fn=keyword_labeler)["meta"]
    assert meta["split"] == "test" and meta["section"] == "findings"
    assert meta["num_studies"] == 3
    assert meta["normalization"] == NORMALIZATION
    assert meta["ground_truth_labels"] is True
    versions = meta["versions"]
    assert versions["pycocoevalcap"] == "1.2"
    assert versions["leadrrg"] and versions["java"]


def test_without_ground_truth_there_are_no_gt_metrics():
    records = [{k: v for k, v in r.items() if k != "labels"} for r in RECORDS]
    metrics = evaluate_predictions(records, meteor=False, label_fn=keyword_labeler)
    assert not any(name.startswith("gt_") for name in metrics)
    assert metrics["meta"]["ground_truth_labels"] is False


def test_default_labeler_is_leadrrg_labeler(monkeypatch):
    import leadrrg.labeler

    calls = []

    def fake_label_reports(reports):
        calls.append(list(reports))
        return keyword_labeler(reports)

    monkeypatch.setattr(leadrrg.labeler, "label_reports", fake_label_reports)
    evaluate_predictions(RECORDS, meteor=False)
    assert calls == [[r["reference"] for r in RECORDS] + [r["generated"] for r in RECORDS]]


def test_with_the_real_labeler():
    metrics = evaluate_predictions(RECORDS, meteor=False)
    assert 0.0 <= metrics["ce14_micro_f1"] <= 1.0
    assert 0.0 <= metrics["gt_hallucination_rate"] <= 1.0


def test_bad_records():
    with pytest.raises(LeadrrgError, match="no predictions"):
        evaluate_predictions([], meteor=False, label_fn=keyword_labeler)
    mixed = [RECORDS[0], {"id": "s9", "reference": "a", "generated": "b"}]
    with pytest.raises(LeadrrgError, match="'s9'.*every study or for none"):
        evaluate_predictions(mixed, meteor=False, label_fn=keyword_labeler)
    short = [dict(RECORDS[0], labels=[1, 0, 1])]
    with pytest.raises(LeadrrgError, match="list of 14 values"):
        evaluate_predictions(short, meteor=False, label_fn=keyword_labeler)
    with pytest.raises(LeadrrgError, match="'generated' must be a string"):
        evaluate_predictions([{"reference": "a", "generated": None}], meteor=False, label_fn=keyword_labeler)


def test_format_table():
    metrics = evaluate_predictions(RECORDS, split="val", meteor=False, label_fn=keyword_labeler)
    table = format_table(metrics)
    assert "3 studies, split val" in table
    assert "bleu_4" in table and "ce5_example" in table and "hallucination_rate" in table
    assert "meteor" in table and "missing (disabled" in table
    assert "ground-truth" in table


def write_jsonl(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_cli_writes_metrics_json(tmp_path, monkeypatch, capsys):
    import leadrrg.labeler

    monkeypatch.setattr(leadrrg.labeler, "label_reports", keyword_labeler)
    preds = write_jsonl(tmp_path / "preds.jsonl", [json.dumps(r) for r in RECORDS])
    out = tmp_path / "run" / "metrics.json"
    argv = ["evaluate", "--preds", str(preds), "--out", str(out), "--split", "test", "--no-meteor"]
    assert cli.main(argv) == 0
    metrics = json.loads(out.read_text())
    assert metrics["meta"]["split"] == "test" and metrics["meta"]["num_studies"] == 3
    assert metrics["meteor"] is None and "meteor" in metrics["missing"]
    assert "gt_ce14_micro_f1" in metrics
    assert "ce14_micro" in capsys.readouterr().out
    assert [p.name for p in out.parent.iterdir()] == ["metrics.json"]  # no temporary left behind


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([json.dumps(RECORDS[0]), "{not json"], "preds.jsonl, line 2: not valid JSON"),
        (["", json.dumps({"id": "x", "reference": "a"})], "preds.jsonl, line 2: missing 'generated'"),
        ([json.dumps({"generated": "a"})], "line 1: missing 'reference'"),
        (["[1, 2]"], "line 1: expected a JSON object"),
        ([""], "no predictions"),
    ],
)
def test_cli_rejects_malformed_predictions(tmp_path, capsys, lines, message):
    preds = write_jsonl(tmp_path / "preds.jsonl", lines)
    out = tmp_path / "metrics.json"
    assert cli.main(["evaluate", "--preds", str(preds), "--out", str(out), "--no-meteor"]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_cli_missing_file(tmp_path, capsys):
    missing = tmp_path / "nope.jsonl"
    assert cli.main(["evaluate", "--preds", str(missing), "--out", str(tmp_path / "m.json")]) == 2
    assert "nope.jsonl does not exist" in capsys.readouterr().err
