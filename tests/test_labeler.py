"""Contracts of the rule-based labeler: polarity rules on tiny sentences, CSV format, CLI, bad input."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from leadrrg.cli import main
from leadrrg.constants import OBSERVATIONS
from leadrrg.errors import LeadrrgError
from leadrrg.labeler import label_reports, read_reports, write_chexpert_csv


def label(report: str) -> dict[str, float | None]:
    row = label_reports([report])[0]
    return {name: (None if math.isnan(v) else float(v)) for name, v in zip(OBSERVATIONS, row)}


def test_shape_dtype_and_values():
    labels = label_reports(["Small left pleural effusion.", "", "No pneumothorax."])
    assert labels.shape == (3, 14) and labels.dtype == np.float32
    finite = labels[~np.isnan(labels)]
    assert set(finite.tolist()) <= {1.0, 0.0, -1.0}


@pytest.mark.parametrize(
    "report, observation, expected",
    [
        # positive mentions and synonyms
        ("Moderate cardiomegaly.", "Cardiomegaly", 1.0),
        ("The heart is enlarged.", "Cardiomegaly", 1.0),
        ("Heart size is enlarged.", "Cardiomegaly", 1.0),
        ("Enlarged heart.", "Cardiomegaly", 1.0),
        ("Cardiac enlargement is stable.", "Cardiomegaly", 1.0),
        ("Patchy airspace disease in the left base.", "Lung Opacity", 1.0),
        ("Right upper lobe infiltrate.", "Lung Opacity", 1.0),
        ("A 1 cm nodule in the right upper lobe.", "Lung Lesion", 1.0),
        ("Mild pulmonary vascular congestion.", "Edema", 1.0),
        ("Left lower lobe consolidation.", "Consolidation", 1.0),
        ("Right lower lobe pneumonia.", "Pneumonia", 1.0),
        ("Bibasilar subsegmental atelectasis.", "Atelectasis", 1.0),
        ("Small right apical pneumothorax.", "Pneumothorax", 1.0),
        ("Bilateral pleural effusions.", "Pleural Effusion", 1.0),
        ("Right apical pleural thickening.", "Pleural Other", 1.0),
        ("Healed left rib fractures.", "Fracture", 1.0),
        ("Left-sided pacemaker with leads in the right ventricle.", "Support Devices", 1.0),
        ("Right PICC line tip in the SVC.", "Support Devices", 1.0),
        ("Widened mediastinum.", "Enlarged Cardiomediastinum", 1.0),
        # pre-negation
        ("No pleural effusion.", "Pleural Effusion", 0.0),
        ("There is no pneumothorax.", "Pneumothorax", 0.0),
        ("Lungs are without focal consolidation.", "Consolidation", 0.0),
        ("Negative for pneumothorax.", "Pneumothorax", 0.0),
        ("Lungs are free of infiltrate.", "Lung Opacity", 0.0),
        ("No evidence of pneumonia.", "Pneumonia", 0.0),
        ("No focal consolidation, pleural effusion, or pneumothorax.", "Pneumothorax", 0.0),
        ("No focal consolidation, suspicious opacity or definite pleural effusion.", "Pleural Effusion", 0.0),
        ("Resolution of the left basilar atelectasis.", "Atelectasis", 0.0),
        # post-negation
        ("The effusion has resolved.", "Pleural Effusion", 0.0),
        ("Pneumothorax is not seen.", "Pneumothorax", 0.0),
        ("Heart size is normal.", "Cardiomegaly", 0.0),
        ("Normal heart size.", "Cardiomegaly", 0.0),
        ("The heart is not enlarged.", "Cardiomegaly", 0.0),
        ("The cardiomediastinal silhouette is within normal limits.", "Enlarged Cardiomediastinum", 0.0),
        ("Lungs are clear.", "Lung Opacity", 0.0),
        # uncertainty
        ("Possible small left effusion.", "Pleural Effusion", -1.0),
        ("Findings may represent atelectasis.", "Atelectasis", -1.0),
        ("Opacity concerning for pneumonia.", "Pneumonia", -1.0),
        ("Questionable right apical pneumothorax.", "Pneumothorax", -1.0),
        ("Atelectasis versus pneumonia.", "Atelectasis", -1.0),
        ("Atelectasis versus pneumonia.", "Pneumonia", -1.0),
        ("Suggestion of mild interstitial edema.", "Edema", -1.0),
        # double negation
        ("Pneumonia cannot be excluded.", "Pneumonia", -1.0),
        ("Cannot exclude a small pneumothorax.", "Pneumothorax", -1.0),
        ("Early pneumonia is not excluded.", "Pneumonia", -1.0),
        # pseudo-negation
        ("No change in the small calcified right upper lobe nodule.", "Lung Lesion", 1.0),
        # not mentioned
        ("Heart size is normal.", "Pneumothorax", None),
        # IU X-Ray indexing conventions (see labeler.phrases): borderline enlargement is enlargement
        ("Borderline heart size.", "Cardiomegaly", 1.0),
        ("Borderline cardiomegaly without acute disease.", "Cardiomegaly", 1.0),
        ("Borderline enlargement of the cardiac silhouette.", "Cardiomegaly", 1.0),
        # "probable" is the radiologist's more-likely-than-not: positive; weaker hedges stay uncertain
        ("Probable small left pleural effusion.", "Pleural Effusion", 1.0),
        ("Opacity probably represents consolidation.", "Consolidation", 1.0),
        ("Left base opacity, likely atelectasis.", "Atelectasis", -1.0),
        # a nodule stays a lesion when it is explained as a granuloma
        ("Dense left lower lobe nodule suggests a previous granulomatous process.", "Lung Lesion", 1.0),
        ("Scattered calcified pulmonary nodules, likely calcified granulomas.", "Lung Lesion", 1.0),
        ("Calcified granuloma in the right upper lobe.", "Lung Lesion", None),
        # pleural thickening (fissures included) is Pleural Other; pleural scarring is an other finding
        ("There is thickening of the minor fissure.", "Pleural Other", 1.0),
        ("Interlobar fissural thickening.", "Pleural Other", 1.0),
        ("Bilateral apical pleural scarring.", "Pleural Other", None),
        ("Opacities compatible with pleural-parenchymal scarring.", "Pleural Other", None),
        ("Minimal apical capping.", "Pleural Other", 1.0),
        # infection names a process, not the diagnosis: at most uncertain pneumonia
        ("Findings most consistent with atypical infectious process.", "Pneumonia", -1.0),
        ("Right basal chest infection.", "Pneumonia", -1.0),
        ("No evidence of infection.", "Pneumonia", 0.0),
        ("Remote granulomatous infection.", "Pneumonia", None),
        # a sentence-level hedge qualifies every finding of its sentence
        (
            "In the appropriate clinical setting this appearance is compatible with pneumonia.",
            "Pneumonia",
            -1.0,
        ),
        ("Airspace disease compatible with pneumonia in the correct clinical setting.", "Pneumonia", -1.0),
        (
            "Airspace disease compatible with pneumonia. In the appropriate clinical setting, follow up.",
            "Pneumonia",
            1.0,
        ),
        # de-identification took "likely" from "most likely"
        ("Opacities most XXXX representing pneumonia.", "Pneumonia", -1.0),
        # the age of a fracture is uncertain, not the fracture
        ("An age-indeterminate compression fracture of T8.", "Fracture", 1.0),
        (
            "Small rounded densities not seen on the previous exam, healed right 10th rib fracture noted.",
            "Fracture",
            1.0,
        ),
    ],
)
def test_polarity(report, observation, expected):
    assert label(report)[observation] == expected


def test_clause_scope():
    labels = label("No effusion, but a small pneumothorax.")
    assert labels["Pleural Effusion"] == 0.0 and labels["Pneumothorax"] == 1.0
    labels = label("There is no pneumothorax. Small left effusion.")
    assert labels["Pneumothorax"] == 0.0 and labels["Pleural Effusion"] == 1.0
    labels = label("No pneumothorax, pneumonia cannot be excluded.")
    assert labels["Pneumothorax"] == 0.0 and labels["Pneumonia"] == -1.0


def test_aggregation_positive_beats_uncertain_beats_negative():
    assert label("No effusion on the right. Small left effusion.")["Pleural Effusion"] == 1.0
    assert label("No right effusion. Possible left effusion.")["Pleural Effusion"] == -1.0


def test_deidentification_headers_and_numbered_lists():
    report = "FINDINGS: XXXX sternotomy XXXX. No pneumothorax. IMPRESSION: 1. Cardiomegaly. 2. No effusion."
    labels = label(report)
    assert labels["Cardiomegaly"] == 1.0
    assert labels["Pleural Effusion"] == 0.0 and labels["Pneumothorax"] == 0.0
    # list numbers end the previous item's scope: "2. Effusion" is not negated by item 1
    labels = label("1. No pneumothorax 2. Small effusion")
    assert labels["Pneumothorax"] == 0.0 and labels["Pleural Effusion"] == 1.0


def test_no_finding_rule():
    assert label("Heart size normal. Lungs are clear. No effusion.")["No Finding"] == 1.0
    assert (
        label("Right PICC line in good position. Lungs clear.")["No Finding"] == 1.0
    )  # devices do not count
    assert label("Possible right lower lobe pneumonia.")["No Finding"] is None  # uncertain counts
    assert label("Mild cardiomegaly.")["No Finding"] is None
    assert label("Calcified granuloma in the right upper lobe.")["No Finding"] is None  # other finding
    assert label("Dextroscoliosis of the thoracic spine. Lungs are clear.")["No Finding"] is None
    assert label("Probable DISH of the thoracic spine. Lungs are clear.")["No Finding"] is None
    assert label("Bilateral apical pleural scarring. Lungs are clear.")["No Finding"] is None
    assert label("No emphysema. Lungs are clear.")["No Finding"] == 1.0
    assert label("")["No Finding"] is None  # empty report: nothing mentioned
    assert all(v is None for v in label("   ").values())


def test_write_chexpert_csv_exact(tmp_path):
    reports = ["No effusion, but a small pneumothorax.", "", 'A "quoted", text']
    labels = label_reports(reports)
    path = tmp_path / "out.csv"
    write_chexpert_csv(path, reports, labels)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "Reports," + ",".join(OBSERVATIONS)
    assert lines[1] == '"No effusion, but a small pneumothorax.",,,,,,,,,,1.0,0.0,,,'
    assert lines[2] == "," * 14
    rows = list(csv.reader(path.open(encoding="utf-8")))
    assert [r[0] for r in rows[1:]] == reports
    assert rows[3][1] == "1.0"  # No Finding
    with pytest.raises(ValueError):
        write_chexpert_csv(path, reports, labels[:2])


def test_write_chexpert_csv_uncertain_value(tmp_path):
    path = tmp_path / "out.csv"
    write_chexpert_csv(path, ["Possible pneumonia."], label_reports(["Possible pneumonia."]))
    row = list(csv.DictReader(path.open(encoding="utf-8")))[0]
    assert row["Pneumonia"] == "-1.0" and row["No Finding"] == ""


def _read_out(path):
    return list(csv.DictReader(path.open(encoding="utf-8")))


def test_cli_csv_with_text_columns(tmp_path, capsys):
    src = tmp_path / "in.csv"
    with src.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["uid", "findings", "impression"])
        writer.writerow(["1", "Heart is enlarged.", "No effusion."])
        writer.writerow(["2", "", "Small right pneumothorax."])
    out = tmp_path / "out.csv"
    assert main(["label", str(src), "--out", str(out), "--text-columns", "findings,impression"]) == 0
    rows = _read_out(out)
    assert [r["Reports"] for r in rows] == ["Heart is enlarged. No effusion.", "Small right pneumothorax."]
    assert rows[0]["Cardiomegaly"] == "1.0" and rows[0]["Pleural Effusion"] == "0.0"
    assert rows[1]["Pneumothorax"] == "1.0"
    assert "labelled 2 reports" in capsys.readouterr().out
    # default columns: findings + impression
    assert main(["label", str(src), "--out", str(out)]) == 0
    assert _read_out(out)[0]["Reports"] == "Heart is enlarged. No effusion."


def test_cli_jsonl_and_txt(tmp_path):
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text(
        json.dumps({"report": "Possible pneumonia."}) + "\n\n" + json.dumps({"report": ""}) + "\n"
    )
    out = tmp_path / "out.csv"
    assert main(["label", str(jsonl), "--out", str(out)]) == 0
    rows = _read_out(out)
    assert len(rows) == 2 and rows[0]["Pneumonia"] == "-1.0" and rows[1]["No Finding"] == ""

    txt = tmp_path / "in.txt"
    txt.write_text("Small left effusion.\nNo pneumothorax.\n", encoding="utf-8")
    assert main(["label", str(txt), "--out", str(out)]) == 0
    rows = _read_out(out)
    assert [r["Pleural Effusion"] for r in rows] == ["1.0", ""]
    assert rows[1]["Pneumothorax"] == "0.0"


def test_cli_bad_input(tmp_path, capsys):
    out = tmp_path / "out.csv"
    assert main(["label", str(tmp_path / "missing.csv"), "--out", str(out)]) == 2
    assert "no such file" in capsys.readouterr().err
    src = tmp_path / "in.csv"
    src.write_text("uid,text_a\n1,Effusion.\n", encoding="utf-8")
    assert main(["label", str(src), "--out", str(out)]) == 2
    assert "columns present: uid, text_a" in capsys.readouterr().err
    assert main(["label", str(src), "--out", str(out), "--text-columns", "report"]) == 2
    assert "report not found" in capsys.readouterr().err
    bad = tmp_path / "in.jsonl"
    bad.write_text('{"report": "ok"}\nnot json\n', encoding="utf-8")
    assert main(["label", str(bad), "--out", str(out)]) == 2
    assert "line 2" in capsys.readouterr().err
    assert main(["label", str(tmp_path), "--out", str(out)]) == 2
    assert not out.exists()  # no partial output


def test_non_utf8_is_replaced_with_a_warning(tmp_path, caplog):
    src = tmp_path / "in.txt"
    src.write_bytes(b"Small caf\xe9 effusion.\n")
    with caplog.at_level("WARNING", logger="leadrrg.labeler"):
        reports = read_reports(src)
    assert reports == ["Small caf\ufffd effusion."]
    assert "not valid UTF-8" in caplog.text
    out = tmp_path / "out.csv"
    assert main(["label", str(src), "--out", str(out)]) == 0
    assert _read_out(out)[0]["Pleural Effusion"] == "1.0"


def test_read_reports_text_columns_on_text_file_is_an_error(tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("Effusion.\n", encoding="utf-8")
    with pytest.raises(LeadrrgError):
        read_reports(src, text_columns="report")


def test_no_torch_import():
    import subprocess
    import sys

    code = "import sys, leadrrg.labeler, leadrrg.commands.label; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_kerley_b_lines_are_not_a_support_device():
    labels = label_reports(["Moderate interstitial pulmonary edema with Kerley B lines."])
    assert labels[0, OBSERVATIONS.index("Edema")] == 1.0
    assert np.isnan(labels[0, OBSERVATIONS.index("Support Devices")])


def test_a_sentence_is_labelled_alone_and_from_the_cache_the_same_as_afresh():
    from leadrrg.labeler import rules

    # no cue reaches across a sentence end, in either direction
    assert label("No effusion. Pneumothorax.")["Pneumothorax"] == 1.0
    assert label("Pneumothorax. Not excluded.")["Pneumothorax"] == 1.0
    reports = [
        "FINDINGS: No pleural effusion. Small left pneumothorax. IMPRESSION: 1. Pneumonia cannot be excluded.",
        "Small left pneumothorax. No pleural effusion or consolidation.",
        "Heart size is normal. No pleural effusion.",
    ] * 3
    rules._sentence_ranks.cache_clear()
    cached = label_reports(reports)
    assert rules._sentence_ranks.cache_info().hits > 0  # repeated sentences came from the cache
    bypass = rules._sentence_ranks
    rules._sentence_ranks = bypass.__wrapped__
    try:
        afresh = label_reports(reports)
    finally:
        rules._sentence_ranks = bypass
    np.testing.assert_array_equal(cached, afresh)
    assert rules._sentence_ranks.cache_info().maxsize == rules.SENTENCE_CACHE_SIZE  # bounded
