"""`leadrrg diagnose`: the flip and oracle measures as contracts (fake decoders), and the command on a tiny run."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from leadrrg.cli import main
from leadrrg.evaluation.diagnose import FINDINGS, flip_plan, flip_test, micro_f1, truth_probs
from tests.fixtures_data import make_jsonl
from tests.test_generate_cli import write_tiny_run

NAMES = ["No Finding", *FINDINGS]
SENTENCES = {  # one sentence the labeler reads as positive, per finding
    "Enlarged Cardiomediastinum": "The mediastinum is widened.",
    "Cardiomegaly": "There is cardiomegaly.",
    "Lung Opacity": "There is an opacity in the right lung.",
    "Lung Lesion": "There is a nodule in the left lung.",
    "Edema": "There is pulmonary edema.",
    "Consolidation": "There is consolidation in the left lower lobe.",
    "Pneumonia": "There is pneumonia.",
    "Atelectasis": "There is atelectasis at the left base.",
    "Pneumothorax": "There is a right pneumothorax.",
    "Pleural Effusion": "There is a left pleural effusion.",
    "Pleural Other": "There is pleural thickening.",
    "Fracture": "There is a rib fracture.",
    "Support Devices": "A pacemaker is present.",
}


def _follower(probs: np.ndarray, studies) -> list[dict]:
    """A decoder that writes exactly the findings with p > 0.5."""
    texts = [
        " ".join(SENTENCES[f] for f, p in zip(FINDINGS, row[1:]) if p > 0.5) or "Normal." for row in probs
    ]
    return [{"generated": t} for t in texts]


def test_flip_test_scores_a_perfect_follower_and_a_decoder_that_ignores_p():
    rng = np.random.default_rng(0)
    probs = (rng.random((26, len(NAMES))) < 0.2).astype(np.float32)
    studies = [SimpleNamespace(id=str(i)) for i in range(26)]
    said = np.array([[p > 0.5 for p in row[1:]] for row in probs])

    def follower(flipped, subset):
        return _follower(flipped, subset)

    result = flip_test(follower, studies, probs, said, NAMES, seed=0)
    assert result["flip_follow_rate"] == 1.0 and result["flip_others_unchanged_rate"] == 1.0
    assert sorted(set(result["flip_findings"])) == sorted(FINDINGS)  # 26 studies cycle through all 13
    assert result["flip_follow_by_finding"] == {f: 1.0 for f in FINDINGS}

    def ignorer(flipped, subset):
        return _follower(probs[: len(subset)], subset)  # writes the unflipped findings

    result = flip_test(ignorer, studies, probs, said, NAMES, seed=0)
    assert result["flip_follow_rate"] == 0.0 and result["flip_others_unchanged_rate"] == 1.0
    assert set(result["flip_follow_by_finding"].values()) == {0.0}


def test_flip_plan_is_seeded_and_helpers():
    assert flip_plan(13, 0) == flip_plan(13, 0) and flip_plan(13, 0) != flip_plan(13, 1)
    assert micro_f1(np.array([True, False]), np.array([True, True])) == pytest.approx(2 / 3)
    assert micro_f1(np.zeros(3, bool), np.zeros(3, bool)) is None
    labels = np.full((1, 14), np.nan, dtype=np.float32)
    labels[0, NAMES.index("Edema")] = 1
    assert truth_probs(labels, ["Edema", "Cardiomegaly"]).tolist() == [[1.0, 0.0]]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    data = make_jsonl(tmp_path_factory.mktemp("data"), counts={"train": 2, "test": 4}, views=2)
    return write_tiny_run(tmp_path_factory.mktemp("run"), data, max_new_tokens=6)


def test_diagnose_command_writes_every_measure(tiny_run, tmp_path, capsys):
    out = tmp_path / "diag.json"
    args = ["diagnose", "--run", str(tiny_run), "--split", "test", "--limit", "3", "--oracle", "--flip", "2"]
    assert main(args + ["--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert (
        "report findings micro-F1 vs truth (oracle experts)" in printed
        and "expert AUROC per finding" in printed
    )
    result = json.loads(out.read_text())
    keys = {"report_f1_vs_truth", "oracle_report_f1_vs_truth", "expert_macro_auroc", "expert_auroc"}
    keys |= {"flip_follow_rate", "flip_others_unchanged_rate", "mean_gate_per_layer"}
    assert keys <= set(result) and result["studies"] == 3 and result["flip_studies"] == 2
    assert len(result["mean_gate_per_layer"]) == 2 and all(0 < g < 1 for g in result["mean_gate_per_layer"])
    assert 0.0 <= result["flip_follow_rate"] <= 1.0
    assert set(result["expert_auroc"]) == set(FINDINGS) and result["expert_auroc"]["Fracture"] is None
    assert result["truth_source"] == "labels" and "truth: labels" in printed


def test_diagnose_errors(tiny_run, tmp_path, capsys):
    assert main(["diagnose", "--run", str(tmp_path / "none"), "--split", "test"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["diagnose", "--run", str(tiny_run), "--split", "test", "--limit", "2", "--flip", "5"]) == 2
    assert "--flip 5 exceeds" in capsys.readouterr().err
    assert main(["diagnose", "--run", str(tiny_run), "--split", "test", "--limit", "0"]) == 2


def test_diagnose_reads_another_data_root_with_data(tiny_run, tmp_path, capsys):
    other = make_jsonl(tmp_path / "selection", counts={"shift_test": 5}, views=2)
    out = tmp_path / "diag.json"
    args = ["diagnose", "--run", str(tiny_run), "--data", str(other), "--split", "shift_test", "--limit", "9"]
    assert main([*args, "--json", str(out)]) == 0
    assert json.loads(out.read_text())["studies"] == 5  # the run's own data has no shift_test split
    capsys.readouterr()
    assert main(["diagnose", "--run", str(tiny_run), "--split", "shift_test", "--limit", "9"]) == 2
    assert "shift_test" in capsys.readouterr().err


def test_diagnose_takes_decoding_settings_and_refuses_model_ones(tiny_run, tmp_path, capsys):
    out = tmp_path / "diag.json"
    args = ["diagnose", "--run", str(tiny_run), "--split", "test", "--limit", "2", "--json", str(out)]
    assert main([*args, "--set", "decode.expert_threshold=0.5"]) == 0
    assert main([*args, "--set", "model.decoder.num_layers=9"]) == 2
    assert "only decode.* can be changed in diagnose" in capsys.readouterr().err


def test_diagnose_runs_on_a_data_root_without_labels_with_a_marked_proxy_truth(tiny_run, tmp_path, capsys):
    unlabeled = make_jsonl(tmp_path / "unlabeled", counts={"train": 1, "test": 6}, views=2, labels=False)
    out = tmp_path / "diag.json"
    args = ["diagnose", "--run", str(tiny_run), "--data", str(unlabeled), "--limit", "6", "--oracle"]
    assert main([*args, "--flip", "2", "--flip-side", "3", "--json", str(out)]) == 0  # default split: test
    printed = capsys.readouterr().out
    assert "on test:" in printed and "truth: reference (labeler)" in printed and "a proxy" in printed
    result = json.loads(out.read_text())
    assert result["split"] == "test" and result["studies"] == 6
    assert result["truth_source"] == "reference (labeler)"
    # side flips on the side the reference report states (the studies carry no image attributes)
    assert result["attribute_truth_source"] == "reference (labeler)" and result["side_flip_studies"] >= 1
    keys = {
        "report_f1_vs_truth",
        "oracle_report_f1_vs_truth",
        "expert_macro_auroc",
        "report_agrees_with_experts_f1",
    }
    assert keys | {"flip_follow_rate", "flip_others_unchanged_rate"} <= set(result)
    assert result["flip_studies"] == 2 and 0.0 <= result["flip_follow_rate"] <= 1.0


def test_proxy_truth_is_the_labelers_reading_and_side_comes_from_the_reference():
    from leadrrg.data.records import Study
    from leadrrg.evaluation.attribute_diagnosis import with_truth_attributes
    from leadrrg.evaluation.diagnose import study_truth

    reports = [
        "There is a small right pleural effusion. No pneumothorax.",
        "Possible left lower lobe pneumonia.",
    ]
    studies = [Study(str(i), "test", [], text) for i, text in enumerate(reports)]
    labels, source = study_truth(studies)
    assert source == "reference (labeler)" and labels.shape == (2, 14)
    assert labels[0, NAMES.index("Pleural Effusion")] == 1 and labels[0, NAMES.index("Pneumothorax")] == 0
    sided, attribute_source = with_truth_attributes(studies, labels)
    assert attribute_source == "reference (labeler)" and studies[0].attributes is None  # copies
    assert sided[0].attributes["Pleural Effusion"]["side"] == "right"
    assert "Pneumonia" not in sided[1].attributes  # uncertain in the reference: not part of the truth
    labelled = [Study("a", "test", [], "Normal.", np.zeros(14, np.float32), {"Edema": {"side": None}})]
    assert (
        study_truth(labelled)[1] == "labels"
        and with_truth_attributes(labelled, np.zeros((1, 14)))[1] == "image"
    )
