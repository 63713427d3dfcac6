"""Hallucination and omission rates, hand-computed, over the 13 findings (No Finding excluded)."""

from __future__ import annotations

import pytest

from leadrrg.metrics.hallucination import FINDINGS, hallucination_scores

# The studies of test_metrics_clinical.py.
from tests.test_metrics_clinical import HYP, REF, label_rows


def test_hand_computed_values():
    # Findings generated positive: r0 {Cardiomegaly, Edema}, r1 {} (No Finding does not count),
    # r2 {Atelectasis, Pleural Effusion} -> 4. Hallucinated: Edema (reference 0) and Atelectasis
    # (reference -1, uncertain is not positive) -> 2, in reports 0 and 2.
    # Reference positives: r0 {Cardiomegaly, Pleural Effusion}, r2 {Pleural Effusion, Support Devices}
    # -> 4; omitted: Pleural Effusion in r0, Support Devices in r2 -> 2.
    scores = hallucination_scores(REF, HYP)
    assert scores["hallucination_rate"] == pytest.approx(2 / 4)
    assert scores["reports_with_hallucination"] == pytest.approx(2 / 3)
    assert scores["omission_rate"] == pytest.approx(2 / 4)
    assert (scores["num_generated_positives"], scores["num_hallucinated"]) == (4, 2)
    assert (scores["num_reference_positives"], scores["num_omitted"]) == (4, 2)
    per_finding = scores["hallucination_per_observation"]
    assert list(per_finding) == list(FINDINGS) and "No Finding" not in per_finding
    assert per_finding["Edema"] == {"hallucinated": 1, "generated_positives": 1, "rate": 1.0}
    assert per_finding["Cardiomegaly"] == {"hallucinated": 0, "generated_positives": 1, "rate": 0.0}


def test_not_mentioned_in_reference_counts_as_hallucinated():
    scores = hallucination_scores(label_rows({}, {}), label_rows({"Pneumothorax": 1}, {"Fracture": 0}))
    assert scores["hallucination_rate"] == 1.0
    assert scores["reports_with_hallucination"] == 0.5
    assert scores["omission_rate"] == 0.0  # no reference positives: 0, not a division by zero


def test_no_finding_is_not_a_finding():
    scores = hallucination_scores(label_rows({}), label_rows({"No Finding": 1}))
    assert scores["num_generated_positives"] == 0
    assert scores["hallucination_rate"] == 0.0  # nothing asserted, nothing invented
    assert scores["reports_with_hallucination"] == 0.0


def test_everything_omitted():
    scores = hallucination_scores(label_rows({"Edema": 1, "Fracture": 1}), label_rows({"Edema": 0}))
    assert scores["omission_rate"] == 1.0
    assert scores["hallucination_rate"] == 0.0


def test_shape_mismatch():
    with pytest.raises(ValueError, match="same shape"):
        hallucination_scores(REF, HYP[:1])
