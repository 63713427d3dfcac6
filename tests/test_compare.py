"""`evaluate --bootstrap` and `leadrrg compare`: intervals beside the metrics, seeded, paired
comparison JSON, and the errors for files that do not hold the same studies."""

from __future__ import annotations

import json

import pytest

from leadrrg import cli
from leadrrg.errors import LeadrrgError
from leadrrg.evaluation.compare import compare_predictions
from leadrrg.evaluation.evaluate import evaluate_predictions
from tests.test_evaluate import RECORDS, keyword_labeler, write_jsonl

REFERENCES = [
    "Mild cardiomegaly. Small left effusion.",
    "The lungs are clear. No effusion.",
    "Pulmonary edema and bilateral effusions.",
    "Heart size normal. Lungs clear.",
    "Cardiomegaly with edema.",
    "No acute cardiopulmonary abnormality.",
]
GOOD = [
    "Cardiomegaly. Small left effusion.",
    "The lungs are clear.",
    "Edema and bilateral effusions.",
    "Heart size normal. Lungs clear.",
    "Cardiomegaly with mild edema.",
    "No acute abnormality.",
]
POOR = ["The lungs are clear."] * len(REFERENCES)


def records(generated, ids=None):
    ids = ids or [f"s{i}" for i in range(len(REFERENCES))]
    return [{"id": i, "reference": r, "generated": g} for i, r, g in zip(ids, REFERENCES, generated)]


def test_bootstrap_adds_intervals_beside_each_metric():
    metrics = evaluate_predictions(RECORDS, meteor=False, label_fn=keyword_labeler, bootstrap=50, seed=1)
    names = list(metrics)
    for name in ("bleu_4", "rouge_l", "cider", "ce14_micro_f1", "ce5_macro_precision", "hallucination_rate"):
        assert names[names.index(name) + 1] == f"{name}_ci"
        low, high = metrics[f"{name}_ci"]
        assert low <= high
    assert "gt_ce14_micro_f1_ci" in metrics and "gt_omission_rate_ci" in metrics
    assert metrics["meteor_ci"] is None and "no METEOR score" in metrics["missing"]["meteor_ci"]
    assert "num_hallucinated_ci" not in metrics  # counts are not resampled
    assert metrics["meta"]["bootstrap"]["replicates"] == 50 and metrics["meta"]["bootstrap"]["seed"] == 1
    again = evaluate_predictions(RECORDS, meteor=False, label_fn=keyword_labeler, bootstrap=50, seed=1)
    other = evaluate_predictions(RECORDS, meteor=False, label_fn=keyword_labeler, bootstrap=50, seed=2)
    assert again["cider_ci"] == metrics["cider_ci"]
    assert any(other[f"{n}_ci"] != metrics[f"{n}_ci"] for n in ("bleu_1", "rouge_l", "cider"))


def test_without_bootstrap_there_are_no_intervals():
    metrics = evaluate_predictions(RECORDS, meteor=False, label_fn=keyword_labeler)
    assert not any(name.endswith("_ci") for name in metrics)
    assert metrics["meta"]["bootstrap"] is None


def test_compare_a_better_system():
    result = compare_predictions(records(POOR), records(GOOD), bootstrap=200, label_fn=keyword_labeler)
    plain_a = evaluate_predictions(records(POOR), meteor=False, label_fn=keyword_labeler)
    plain_b = evaluate_predictions(records(GOOD), meteor=False, label_fn=keyword_labeler)
    for name in ("bleu_4", "cider", "ce14_micro_f1", "omission_rate"):
        entry = result[name]
        assert entry["difference"] == pytest.approx(plain_b[name] - plain_a[name], abs=1e-12)
        assert entry["a"] == pytest.approx(plain_a[name], abs=1e-12)
        assert entry["ci"][0] <= entry["difference"] <= entry["ci"][1]
        assert 0 < entry["p_value"] <= 1
    assert result["bleu_4"]["difference"] > 0 and result["bleu_4"]["p_value"] < 0.05
    assert "meteor" not in result


def test_compare_matches_studies_by_id_not_order():
    a = records(POOR)
    b = list(reversed(records(GOOD)))
    assert compare_predictions(a, b, bootstrap=20, label_fn=keyword_labeler) == compare_predictions(
        a, records(GOOD), bootstrap=20, label_fn=keyword_labeler
    )


def test_compare_refuses_studies_in_one_file_only():
    a = records(POOR)
    b = records(GOOD, ids=["s0", "s1", "s2", "s3", "x4", "x5"])
    with pytest.raises(
        LeadrrgError, match=r"4 differ: 2 only in A \('s4', 's5'\); 2 only in B \('x4', 'x5'\)"
    ):
        compare_predictions(a, b, bootstrap=10, label_fn=keyword_labeler)
    with pytest.raises(LeadrrgError, match="'s5' appears twice"):
        compare_predictions(a, a + a[-1:], bootstrap=10, label_fn=keyword_labeler)
    changed = records(GOOD)
    changed[2]["reference"] = "Something else."
    with pytest.raises(LeadrrgError, match="study 's2' has a different reference report"):
        compare_predictions(a, changed, bootstrap=10, label_fn=keyword_labeler)
    with pytest.raises(LeadrrgError, match="record 1 has no 'id'"):
        compare_predictions([{"reference": "a", "generated": "b"}], a, bootstrap=10, label_fn=keyword_labeler)


def test_cli_compare_writes_json(tmp_path, monkeypatch, capsys):
    import leadrrg.labeler

    monkeypatch.setattr(leadrrg.labeler, "label_reports", keyword_labeler)
    a = write_jsonl(tmp_path / "a.jsonl", [json.dumps(r) for r in records(POOR)])
    b = write_jsonl(tmp_path / "b.jsonl", [json.dumps(r) for r in records(GOOD)])
    out = tmp_path / "c.json"
    assert cli.main(["compare", str(a), str(b), "--bootstrap", "100", "--seed", "3", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert {"difference", "ci", "p_value"} <= set(result["rouge_l"])
    assert result["rouge_l"]["difference"] > 0
    printed = capsys.readouterr().out
    assert "b.jsonl - a.jsonl: 100 paired bootstrap replicates, seed 3" in printed and "rouge_l" in printed


def test_cli_compare_errors(tmp_path, capsys):
    a = write_jsonl(tmp_path / "a.jsonl", [json.dumps(r) for r in records(POOR)])
    b = write_jsonl(tmp_path / "b.jsonl", [json.dumps(r) for r in records(GOOD)[:5]])
    out = tmp_path / "c.json"
    assert cli.main(["compare", str(a), str(b), "--out", str(out)]) == 2
    assert "1 only in a.jsonl ('s5')" in capsys.readouterr().err
    assert not out.exists()
    assert cli.main(["compare", str(a), str(a), "--bootstrap", "0"]) == 2
    assert "--bootstrap 0: expected a number of replicates >= 1" in capsys.readouterr().err


def test_cli_evaluate_bootstrap(tmp_path, monkeypatch, capsys):
    import leadrrg.labeler

    monkeypatch.setattr(leadrrg.labeler, "label_reports", keyword_labeler)
    preds = write_jsonl(tmp_path / "preds.jsonl", [json.dumps(r) for r in records(GOOD)])
    out = tmp_path / "metrics.json"
    argv = ["evaluate", "--preds", str(preds), "--out", str(out), "--no-meteor", "--bootstrap", "40"]
    assert cli.main(argv) == 0
    metrics = json.loads(out.read_text())
    assert len(metrics["bleu_1_ci"]) == 2 and metrics["meta"]["bootstrap"]["seed"] == 0
    assert "bleu_1" in capsys.readouterr().out
    assert cli.main([*argv[:-1], "-3"]) == 2
    assert "--bootstrap -3" in capsys.readouterr().err


def test_compare_takes_the_model_based_metrics_too():
    from leadrrg.metrics.local_models import PerStudyMean

    def field_fn(references, generated):  # a stand-in scorer: 1 where the report equals its reference
        same = [float(r == g) for r, g in zip(references, generated)]
        return {"scores": {}, "missing": {}, "statistics": [PerStudyMean({"bertscore_f1": same})]}

    a, b = records(POOR), records(REFERENCES)
    result = compare_predictions(a, b, bootstrap=50, label_fn=keyword_labeler, field_fn=field_fn)
    assert result["bertscore_f1"]["b"] == 1.0 and result["bertscore_f1"]["difference"] >= 0
