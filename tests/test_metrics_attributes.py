"""Attribute metrics and degenerate-output counts: values computed by hand."""

from __future__ import annotations

import pytest

from leadrrg.metrics.attributes import (
    attribute_scores,
    degenerate_outputs,
    degenerate_warning,
    normalize_severity,
)


def test_values_by_hand():
    truths = [
        {
            "Pleural Effusion": {"side": "right", "severity": "moderate"},
            "Pneumothorax": {"side": "left", "severity": "mild"},
        },
        {
            "Consolidation": {"side": "left", "severity": "large"},
            "Cardiomegaly": {"side": "bilateral", "severity": "mild"},
        },
        {"Atelectasis": {"side": "bilateral", "severity": "mild"}},
    ]
    hypotheses = [
        # effusion: side right (ok), severity mild (wrong); pneumothorax: side unstated, severity mild (ok)
        {
            "Pleural Effusion": {"side": "right", "severity": "mild"},
            "Pneumothorax": {"side": None, "severity": "mild"},
            "Edema": {"side": "bilateral", "severity": "mild"},  # not in the truth: not scored here
        },
        # consolidation: side right (wrong), no severity; cardiomegaly: no side scored, severity "small" -> mild (ok)
        {
            "Consolidation": {"side": "right", "severity": None},
            "Cardiomegaly": {"side": None, "severity": "small"},
        },
        # atelectasis not asserted
        {},
    ]
    scores = attribute_scores(hypotheses, truths)
    # sides scored: effusion right/right, consolidation left/right -> 1 of 2
    assert scores["laterality_n"] == 2 and scores["laterality_accuracy"] == pytest.approx(0.5)
    # severities scored: effusion moderate/mild, pneumothorax mild/mild, cardiomegaly mild/mild -> 2 of 3
    assert scores["severity_n"] == 3 and scores["severity_accuracy"] == pytest.approx(2 / 3)
    # asserted and true: effusion, pneumothorax, consolidation, cardiomegaly; contradicted: effusion, consolidation
    assert scores["attribute_n"] == 4 and scores["attribute_hallucination_rate"] == pytest.approx(0.5)
    # one-sided truths among asserted-and-true: effusion (stated), pneumothorax (omitted), consolidation (stated)
    assert scores["laterality_omission_n"] == 3 and scores["laterality_omission"] == pytest.approx(1 / 3)
    assert scores["laterality_confusion"] == {"left->right": 1, "right->right": 1}
    assert scores["severity_confusion"] == {"mild->mild": 2, "moderate->mild": 1}


def test_nothing_to_score_is_none_not_zero():
    scores = attribute_scores([{}, {"Edema": {"side": "bilateral"}}], [{"Edema": {"side": None}}, {}])
    for key in (
        "laterality_accuracy",
        "severity_accuracy",
        "attribute_hallucination_rate",
        "laterality_omission",
    ):
        assert scores[key] is None, key
    assert scores["laterality_n"] == scores["severity_n"] == scores["attribute_n"] == 0
    # asserted and true but nothing stated: scored for hallucination (none) but not for accuracy
    scores = attribute_scores([{"Edema": {}}], [{"Edema": {"side": "bilateral", "severity": "mild"}}])
    assert scores["attribute_hallucination_rate"] == 0.0 and scores["laterality_accuracy"] is None


def test_devices_and_heart_sides_are_not_scored():
    # SynthCXR gives midline findings and devices side "bilateral" by convention
    truths = [
        {
            "Support Devices": {"side": "bilateral", "severity": "moderate"},
            "Cardiomegaly": {"side": "bilateral"},
        }
    ]
    hypotheses = [
        {"Support Devices": {"side": "left", "severity": "large"}, "Cardiomegaly": {"side": "left"}}
    ]
    scores = attribute_scores(hypotheses, truths)
    assert scores["laterality_n"] == 0 and scores["severity_n"] == 0
    assert scores["attribute_n"] == 1 and scores["attribute_hallucination_rate"] == 0.0  # Cardiomegaly only


def test_mismatched_lengths_are_an_error():
    with pytest.raises(ValueError, match="one of each per report"):
        attribute_scores([{}], [])


def test_normalize_severity():
    assert [normalize_severity(w) for w in ("small", "Severe", "moderate", "", None, "borderline")] == [
        "mild",
        "large",
        "moderate",
        None,
        None,
        None,
    ]


def test_degenerate_outputs():
    reports = ["", "  ", ". . . . .", "No acute disease.", "no  acute disease.", "Small right effusion."]
    summary = degenerate_outputs(reports)
    assert summary == {
        "num_reports": 6,
        "num_empty": 2,
        "num_punctuation_only": 1,
        "most_common_report_count": 2,  # "" twice and "no acute disease." twice: 2 of 6
        "most_common_report_share": pytest.approx(2 / 6),
        "num_distinct_reports": 4,
    }
    assert (
        degenerate_warning(summary)
        == "degenerate outputs: 2 empty, 1 punctuation-only of 6 generated reports"
    )
    same = degenerate_outputs(["No acute disease."] * 9 + ["Small right effusion."])
    assert same["most_common_report_share"] == pytest.approx(0.9)
    assert degenerate_warning(same) == "degenerate outputs: 9 identical (90%) of 10 generated reports"
    # half the studies normal, written alike: the normal template of a normal-heavy data set is no warning
    assert (
        degenerate_warning(degenerate_outputs(["No acute disease."] * 6 + ["A.", "B.", "C.", "D."])) is None
    )
    assert degenerate_warning(degenerate_outputs(["A.", "B."])) is None
    empty = degenerate_outputs([])
    assert empty["most_common_report_share"] is None and degenerate_warning(empty) is None


def test_no_torch_import():
    import subprocess
    import sys

    code = "import sys, leadrrg.metrics.attributes, leadrrg.labeler.attributes; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
