"""Contracts of the attribute extraction: side, severity and zone of asserted observations, on hand-written
radiology sentences (no shared data)."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from leadrrg.constants import OBSERVATIONS
from leadrrg.labeler import (
    ATTRIBUTE_COLUMNS,
    attribute_columns,
    flatten_attributes,
    label_attributes,
    label_reports,
    write_chexpert_csv,
)


def attributes(report: str) -> dict[str, dict[str, str | None]]:
    return label_attributes([report])[0]


def side_severity(report: str, observation: str) -> tuple[str | None, str | None]:
    found = attributes(report)[observation]
    return found["side"], found["severity"]


@pytest.mark.parametrize(
    "report, observation, side, severity",
    [
        ("Large right pneumothorax.", "Pneumothorax", "right", "large"),
        ("Moderate cardiomegaly.", "Cardiomegaly", None, "moderate"),
        ("The heart is mildly enlarged.", "Cardiomegaly", None, "mild"),
        ("Left lower lobe consolidation.", "Consolidation", "left", None),
        ("Bibasilar atelectasis.", "Atelectasis", "bilateral", None),
        ("Possible small right effusion.", "Pleural Effusion", "right", "mild"),  # hedged: still asserted
        ("Trace bilateral pleural effusions.", "Pleural Effusion", "bilateral", "mild"),
        ("Pleural effusions bilaterally.", "Pleural Effusion", "bilateral", None),
        ("Opacities in both lung bases.", "Lung Opacity", "bilateral", None),
        ("There is a moderate-sized right-sided pleural effusion.", "Pleural Effusion", "right", "moderate"),
        ("Tiny left apical pneumothorax.", "Pneumothorax", "left", "mild"),
        ("Extensive consolidation in the right upper lobe.", "Consolidation", "right", "large"),
        ("Severe pulmonary edema.", "Edema", None, "large"),
        ("The left pleural effusion is small.", "Pleural Effusion", "left", "mild"),
        ("At the left base, there is atelectasis.", "Atelectasis", "left", None),
        ("Opacity in the lingula.", "Lung Opacity", "left", None),
        ("Right middle lobe pneumonia.", "Pneumonia", "right", None),
        # ranges and "moderately large" take the upper end
        ("Mild to moderate cardiomegaly.", "Cardiomegaly", None, "moderate"),
        ("Moderate to large left pleural effusion.", "Pleural Effusion", "left", "large"),
        ("Moderately large right pneumothorax.", "Pneumothorax", "right", "large"),
        # a change is no size; lung volumes are no finding's size
        ("Slightly increased right pleural effusion.", "Pleural Effusion", "right", None),
        ("Small lung volumes with left basilar atelectasis.", "Atelectasis", "left", None),
        # "large heart" means enlarged, not a grade
        ("The heart is large.", "Cardiomegaly", None, None),
        # comparison words name no side
        ("Opacity of the right base compared to the left.", "Lung Opacity", "right", None),
    ],
)
def test_side_and_severity(report, observation, side, severity):
    assert side_severity(report, observation) == (side, severity)


def test_negated_observations_have_no_attributes():
    assert attributes("No left effusion.") == {}
    assert attributes("No pneumothorax or large pleural effusion.") == {}
    # the negated mention keeps its side word to itself
    assert attributes("No right effusion. Small left pneumothorax.") == {
        "Pneumothorax": {"side": "left", "severity": "mild", "zone": None}
    }
    assert attributes("No pneumothorax on the right. Left pneumothorax.")["Pneumothorax"]["side"] == "left"


def test_right_greater_than_left_is_bilateral():
    # an asymmetric bilateral finding states both sides: bilateral (the larger side is not recorded)
    assert side_severity("Right greater than left pleural effusions.", "Pleural Effusion") == (
        "bilateral",
        None,
    )
    assert side_severity("Small right and moderate left pleural effusions.", "Pleural Effusion") == (
        "bilateral",
        "moderate",
    )


def test_sides_across_sentences_aggregate_to_bilateral_and_severity_to_the_largest():
    report = "Small right pleural effusion. Large left pleural effusion."
    assert side_severity(report, "Pleural Effusion") == ("bilateral", "large")
    # the same side twice stays that side; an unstated side in another sentence changes nothing
    assert side_severity("Right effusion. The effusion is moderate.", "Pleural Effusion") == (
        "right",
        "moderate",
    )
    # a negated sentence does not add its side
    assert side_severity("Right effusion. No left effusion.", "Pleural Effusion") == ("right", None)


def test_each_finding_of_a_sentence_keeps_its_own_words():
    found = attributes("Small right pleural effusion and left lower lobe atelectasis.")
    assert found["Pleural Effusion"] == {"side": "right", "severity": "mild", "zone": None}
    assert found["Atelectasis"] == {"side": "left", "severity": None, "zone": "lower"}
    found = attributes("Consolidation in the right upper lobe and left lower lobe atelectasis.")
    assert found["Consolidation"]["side"] == "right" and found["Consolidation"]["zone"] == "upper"
    assert found["Atelectasis"]["side"] == "left" and found["Atelectasis"]["zone"] == "lower"
    # a side inside another finding's mention ("elevated right hemidiaphragm") is not atelectasis's
    assert (
        attributes("Elevated right hemidiaphragm with adjacent atelectasis.")["Atelectasis"]["side"] is None
    )


def test_linked_interpretations_share_the_location():
    found = attributes("Right lower lobe opacity may represent atelectasis or pneumonia.")
    for name in ("Lung Opacity", "Atelectasis", "Pneumonia"):
        assert (found[name]["side"], found[name]["zone"]) == ("right", "lower"), name
    found = attributes("Atelectasis or consolidation in the left base.")
    assert found["Atelectasis"]["side"] == found["Consolidation"]["side"] == "left"
    found = attributes("Consolidation with air bronchograms in the left lung base, concerning for pneumonia.")
    assert found["Pneumonia"]["side"] == "left"
    # severity is not shared, and "and" does not link
    assert attributes("Small right effusion or atelectasis.")["Atelectasis"]["severity"] is None
    assert attributes("Right pleural effusion and atelectasis.")["Atelectasis"]["side"] is None


@pytest.mark.parametrize(
    "report, zone",
    [
        ("Left lower lobe consolidation.", "lower"),
        ("Right apical pneumothorax.", "upper"),
        ("Bibasilar atelectasis.", "lower"),
        ("Opacity in the right mid lung zone.", "middle"),
        ("Opacities in the right upper lobe and left base.", "upper+lower"),
        ("Large right pneumothorax.", None),
    ],
)
def test_zone(report, zone):
    (found,) = attributes(report).values()
    assert found["zone"] == zone


def test_cardiomegaly_has_no_side_and_devices_no_severity():
    assert side_severity("Severe cardiomegaly with left ventricular configuration.", "Cardiomegaly") == (
        None,
        "large",
    )
    assert side_severity("A large left internal jugular catheter is in place.", "Support Devices") == (
        "left",
        None,
    )


def test_keys_are_exactly_the_asserted_labels():
    reports = [
        "Possible small right effusion. No pneumothorax.",
        "Heart size is normal. Lungs are clear.",
        "",
        "Moderate cardiomegaly. Left basilar atelectasis, pneumonia cannot be excluded.",
    ]
    labels = label_reports(reports)
    for row, found in zip(labels, label_attributes(reports)):
        asserted = {name for name, v in zip(OBSERVATIONS, row) if v in (1.0, -1.0) and name != "No Finding"}
        assert set(found) == asserted
    assert label_attributes(["", "   "]) == [{}, {}]


def test_flat_columns_and_csv(tmp_path):
    assert len(ATTRIBUTE_COLUMNS) == 13 * 3 and ATTRIBUTE_COLUMNS[:3] == (
        "Enlarged Cardiomediastinum_side",
        "Enlarged Cardiomediastinum_severity",
        "Enlarged Cardiomediastinum_zone",
    )
    reports = ["Large right pneumothorax.", "No effusion."]
    found = label_attributes(reports)
    row = attribute_columns(found[0])
    assert row["Pneumothorax_side"] == "right" and row["Pneumothorax_severity"] == "large"
    assert row["Pneumothorax_zone"] == "" and row["Pleural Effusion_side"] == ""
    assert flatten_attributes(found)[1] == [""] * len(ATTRIBUTE_COLUMNS)

    path = tmp_path / "labels.csv"
    write_chexpert_csv(path, reports, label_reports(reports), attributes=found)
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["Reports", *OBSERVATIONS, *ATTRIBUTE_COLUMNS]
    assert rows[0]["Pneumothorax"] == "1.0" and rows[0]["Pneumothorax_side"] == "right"
    # without attributes the CheXpert format is unchanged
    write_chexpert_csv(path, reports, label_reports(reports))
    with open(path, newline="", encoding="utf-8") as handle:
        assert next(csv.reader(handle)) == ["Reports", *OBSERVATIONS]
    with pytest.raises(ValueError, match="one per report"):
        write_chexpert_csv(path, reports, label_reports(reports), attributes=found[:1])


def test_labels_unchanged_by_the_mention_refactor():
    # the mentions that feed attributes also feed the labels: a few polarity contracts stay as they were
    labels = label_reports(["No effusion, but a small pneumothorax.", "Pneumonia cannot be excluded."])
    assert labels[0, OBSERVATIONS.index("Pleural Effusion")] == 0.0
    assert labels[0, OBSERVATIONS.index("Pneumothorax")] == 1.0
    assert labels[1, OBSERVATIONS.index("Pneumonia")] == -1.0
    assert np.isnan(labels[1, OBSERVATIONS.index("Pleural Effusion")])
