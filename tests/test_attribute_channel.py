"""The experts' side and severity channel: targets from the image or the report, the side-flip counterfactual,
what the decoder reads (only for present findings), and the loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from leadrrg.config import DecodeConfig
from leadrrg.constants import IGNORE_INDEX, OBSERVATIONS, SEVERITIES, SIDES
from leadrrg.data.attributes import SEVERITY, SIDE, attribute_targets
from leadrrg.data.counterfactual import CounterfactualEditor
from leadrrg.errors import LeadrrgError
from leadrrg.inference.steps import decoding_context
from leadrrg.labeler.attributes import report_attributes
from leadrrg.model.losses import attribute_loss
from tests.test_model_helpers import EXPERTS, build, perturb_zero_init, tiny_batch, tiny_config

EFFUSION = OBSERVATIONS.index("Pleural Effusion")
CARDIOMEGALY = OBSERVATIONS.index("Cardiomegaly")


def test_targets_take_the_side_and_size_that_apply():
    targets = attribute_targets(
        {
            "Pleural Effusion": {"side": "right", "severity": "moderate"},
            "Cardiomegaly": {"side": "bilateral", "severity": "small"},  # the heart has no side
            "Support Devices": {"side": "bilateral", "severity": "mild"},  # nor a device a size
        }
    )
    assert targets.shape == (14, 2) and targets.dtype == np.int64
    assert targets[EFFUSION].tolist() == [SIDES.index("right"), SEVERITIES.index("moderate")]
    assert targets[CARDIOMEGALY].tolist() == [IGNORE_INDEX, SEVERITIES.index("mild")]
    assert (targets[OBSERVATIONS.index("Support Devices")] == IGNORE_INDEX).all()
    assert (attribute_targets(None) == IGNORE_INDEX).all()


def test_a_side_flip_swaps_one_finding_and_nothing_else():
    editor = CounterfactualEditor([], ["Pleural Effusion", "Consolidation", "Pneumothorax"])
    report = "Focal consolidation in the right upper lung zone. Small left pleural effusion. No pneumothorax."
    seen = set()
    for seed in range(8):
        edited = editor.flip_side(report, torch.Generator().manual_seed(seed))
        before, after = report_attributes(report), report_attributes(edited)
        changed = [n for n in before if before[n].get("side") != after[n].get("side")]
        assert len(changed) == 1 and after.keys() == before.keys()
        seen.add(changed[0])
    assert seen == {"Consolidation", "Pleural Effusion"}
    # one sentence naming two findings on two sides: swapping it would swap both, so there is no checked edit
    assert editor.flip_side("Small left pneumothorax and right effusion.") is None
    assert editor.flip_side("The heart is normal. No effusion.") is None


def test_the_decoder_reads_side_and_size_only_for_present_findings():
    model = build(tiny_config())  # experts: EXPERTS, attribute experts on by default
    perturb_zero_init(model)
    batch = tiny_batch()
    images, views = batch["images"], batch["view_mask"]
    k = len(EXPERTS)
    right = torch.zeros(2, k, 2, 3)
    right[:, :, SIDE, SIDES.index("right")] = 1.0
    left = torch.zeros(2, k, 2, 3)
    left[:, :, SIDE, SIDES.index("left")] = 1.0
    present, absent = torch.ones(2, k), torch.zeros(2, k)
    with torch.no_grad():
        z = {
            (p, side): model.encode_study(
                images, views, expert_probs=probs, attribute_probs=attrs
            ).expert_tokens
            for p, probs in (("present", present), ("absent", absent))
            for side, attrs in (("right", right), ("left", left))
        }
    assert not torch.allclose(z["present", "right"], z["present", "left"])  # the side reaches the layers
    assert torch.equal(z["absent", "right"], z["absent", "left"])  # ... but not for an absent finding
    with pytest.raises(LeadrrgError, match="expert attributes have shape"):
        model.encode_study(images, views, attribute_probs=right[:, :2])


def test_decoding_reads_the_most_likely_values_one_hot():
    model = build(tiny_config())
    perturb_zero_init(model)
    batch = tiny_batch()
    images, views = batch["images"], batch["view_mask"]
    soft = torch.full((2, len(EXPERTS), 2, 3), 0.1)
    soft[..., 1] = 0.8  # left, moderate most likely
    hard = torch.zeros_like(soft)
    hard[..., 1] = 1.0
    probs = torch.ones(2, len(EXPERTS))
    with torch.no_grad():
        thresholded = decoding_context(model, images, views, DecodeConfig(expert_threshold=0.7), probs, soft)
        one_hot = model.encode_study(images, views, expert_probs=probs, attribute_probs=hard)
    assert torch.equal(thresholded.expert_tokens, one_hot.expert_tokens)


def test_attribute_loss_counts_known_values_over_a_fixed_normaliser():
    logits = torch.zeros(2, 3, 2, 3)  # uniform: every known value costs ln 3
    targets = torch.full((2, 3, 2), IGNORE_INDEX)
    assert attribute_loss(logits, targets).item() == 0.0
    targets[0, 1, SIDE] = 0
    targets[1, 2, SEVERITY] = 2
    assert attribute_loss(logits, targets).item() == pytest.approx(2 * np.log(3) / (2 * 3))


def test_training_items_carry_the_image_truth_for_the_experts_and_the_report_for_the_decoder(tmp_path):
    from leadrrg.config import DataConfig, VisionConfig
    from leadrrg.data.dataset import StudyDataset
    from leadrrg.data.manifests import load_studies
    from leadrrg.data.synth.generate import synthesize

    root = synthesize(tmp_path / "data", {"train": 12}, size=32, seed=3)
    studies = load_studies(DataConfig(root=str(root), format="synth"), "train")
    dataset = StudyDataset(studies, VisionConfig(image_size=32), 1, train=False, attributes=True)
    lateral = 0
    for index, study in enumerate(studies):
        item = dataset[index]
        assert torch.equal(item["attributes"], torch.from_numpy(attribute_targets(study.attributes)))
        stated = torch.from_numpy(attribute_targets(report_attributes(study.report)))
        assert torch.equal(item["decoder_attributes"], stated)
        lateral += int((item["attributes"][:, SIDE] >= 0).sum())
    assert lateral > 0


def test_side_flip_test_scores_a_follower_and_a_decoder_that_ignores_the_side():
    from types import SimpleNamespace

    from leadrrg.evaluation.attribute_diagnosis import side_flip_test

    names = ["Pleural Effusion", "Pneumothorax", "Cardiomegaly"]
    studies = [
        SimpleNamespace(id="a", attributes={"Pleural Effusion": {"side": "right", "severity": "mild"}}),
        SimpleNamespace(id="b", attributes={"Cardiomegaly": {"side": "bilateral", "severity": "moderate"}}),
        SimpleNamespace(
            id="c",
            attributes={
                "Pneumothorax": {"side": "left", "severity": "large"},
                "Pleural Effusion": {"side": "left", "severity": "mild"},
            },
        ),
    ]
    oracle = np.array([[1, 0, 0], [0, 0, 1], [1, 1, 0]], dtype=np.float32)
    words = {"Pleural Effusion": "pleural effusion", "Pneumothorax": "pneumothorax"}

    def follower(probs, subset, attributes):
        texts = []
        for row_p, row_a in zip(probs, attributes):
            parts = [
                f"{SIDES[int(row_a[k, SIDE].argmax())]} {words[n]}."
                for k, n in enumerate(names)
                if row_p[k] > 0.5 and n in words
            ]
            texts.append(" ".join(parts) or "Normal.")
        return [{"generated": t} for t in texts]

    result = side_flip_test(follower, studies, oracle, names, limit=5, seed=0)
    assert result["side_flip_studies"] == 2  # study b has no one-sided finding
    assert result["side_flip_follow_rate"] == 1.0 and result["side_flip_others_unchanged_rate"] == 1.0
    unflipped = {}

    def ignorer(probs, subset, attributes):
        if not unflipped:
            unflipped["attributes"] = attributes.copy()
        return follower(probs, subset, unflipped["attributes"])

    result = side_flip_test(ignorer, studies, oracle, names, limit=5, seed=0)
    assert result["side_flip_follow_rate"] == 0.0 and result["side_flip_stated_rate"] == 1.0
