"""Clinical efficacy: hand-computed micro / macro / example-based P, R, F1 over the 14 and the common 5."""

from __future__ import annotations

import math

import numpy as np
import pytest

from leadrrg.constants import NUM_OBSERVATIONS, OBSERVATIONS
from leadrrg.metrics.clinical import ce_scores

NAN = math.nan


def label_rows(*rows: dict[str, float]) -> np.ndarray:
    """(N, 14) float32 labeler-style array: NaN (not mentioned) except the given observations."""
    labels = np.full((len(rows), NUM_OBSERVATIONS), NAN, dtype=np.float32)
    for i, row in enumerate(rows):
        for name, value in row.items():
            labels[i, OBSERVATIONS.index(name)] = value
    return labels


# Three studies. Positive means exactly 1: the uncertain reference Atelectasis (-1) and the negative
# reference Edema (0) are not positives, so generating them positive is a false positive.
REF = label_rows(
    {"Cardiomegaly": 1, "Pleural Effusion": 1, "Edema": 0},
    {"No Finding": 1},
    {"Atelectasis": -1, "Pleural Effusion": 1, "Support Devices": 1},
)
HYP = label_rows(
    {"Cardiomegaly": 1, "Edema": 1},
    {"No Finding": 1},
    {"Atelectasis": 1, "Pleural Effusion": 1, "Support Devices": 0},
)

# Worked out by hand.
# Per report over 14: r0 TP1 (Card) FP1 (Edema) FN1 (PE); r1 TP1 (NF); r2 TP1 (PE) FP1 (Atel) FN1 (SD).
# Per observation over 14: NF, Card P=R=F1=1; PE P=1 R=1/2 F1=2/3; Edema, Atel, SD and the rest 0.
# Over the 5: r0 TP1 FP1 FN1; r1 nothing (0/0 -> 0); r2 TP1 (PE) FP1 (Atel) -> P=1/2 R=1 F1=2/3.
EXPECTED = {
    "ce14_micro_precision": 3 / 5,
    "ce14_micro_recall": 3 / 5,
    "ce14_micro_f1": 6 / 10,
    "ce14_macro_precision": 3 / 14,
    "ce14_macro_recall": 2.5 / 14,
    "ce14_macro_f1": (2 + 2 / 3) / 14,
    "ce14_example_precision": (1 / 2 + 1 + 1 / 2) / 3,
    "ce14_example_recall": (1 / 2 + 1 + 1 / 2) / 3,
    "ce14_example_f1": (1 / 2 + 1 + 1 / 2) / 3,
    "ce5_micro_precision": 2 / 4,
    "ce5_micro_recall": 2 / 3,
    "ce5_micro_f1": 4 / 7,
    "ce5_macro_precision": 2 / 5,
    "ce5_macro_recall": 1.5 / 5,
    "ce5_macro_f1": (1 + 2 / 3) / 5,
    "ce5_example_precision": (1 / 2 + 0 + 1 / 2) / 3,
    "ce5_example_recall": (1 / 2 + 0 + 1) / 3,
    "ce5_example_f1": (1 / 2 + 0 + 2 / 3) / 3,
}


def test_hand_computed_values():
    scores = ce_scores(REF, HYP)
    for name, value in EXPECTED.items():
        assert scores[name] == pytest.approx(value, abs=1e-12), name
    assert set(EXPECTED) | {"ce_per_observation"} == set(scores)


def test_per_observation():
    per_observation = ce_scores(REF, HYP)["ce_per_observation"]
    assert list(per_observation) == list(OBSERVATIONS)
    assert per_observation["Pleural Effusion"] == pytest.approx(
        {"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2}
    )
    assert per_observation["Edema"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert per_observation["Support Devices"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert per_observation["Cardiomegaly"]["f1"] == 1.0


def test_macro_averages_over_all_observations_even_without_support():
    labels = label_rows({"Cardiomegaly": 1}, {"Cardiomegaly": 1})
    scores = ce_scores(labels, labels)
    assert scores["ce14_micro_f1"] == 1.0
    assert scores["ce14_example_f1"] == 1.0
    assert scores["ce14_macro_f1"] == pytest.approx(1 / 14)
    assert scores["ce5_macro_f1"] == pytest.approx(1 / 5)


def test_nothing_positive_scores_zero():
    nothing = label_rows({"Edema": 0, "Atelectasis": -1}, {})
    scores = ce_scores(nothing, nothing)
    assert all(value == 0.0 for name, value in scores.items() if name != "ce_per_observation")


def test_input_checks():
    with pytest.raises(ValueError, match="same shape"):
        ce_scores(REF, HYP[:2])
    with pytest.raises(ValueError, match=r"shape \(N, 14\)"):
        ce_scores(REF[:, :5], HYP[:, :5])
    with pytest.raises(ValueError, match="N = 0"):
        ce_scores(REF[:0], HYP[:0])
