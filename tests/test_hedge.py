"""The uncertainty band: hedged findings read 1/2 in training, p in the band reads 1/2 at decoding, and the
metrics and contradictions tell a hedge from a silent omission."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from leadrrg.config import DecodeConfig
from leadrrg.constants import OBSERVATIONS
from leadrrg.data.dataset import hedged_labels
from leadrrg.errors import LeadrrgError
from leadrrg.inference.evidence import contradictions, hedge_floors
from leadrrg.inference.steps import decoding_context
from leadrrg.metrics.hallucination import hedge_scores
from leadrrg.model.grounding import with_derived_no_finding
from leadrrg.serve.render import expert_table
from tests.test_model_helpers import grounded_model, tiny_batch

EDEMA = 1  # tiny_batch's labels: Cardiomegaly 1, Edema -1 (hedged), Pleural Effusion 0, in the experts' order


@pytest.mark.parametrize("hedge", [True, False])
def test_a_hedged_finding_reads_one_half_in_training(hedge):
    model = grounded_model(truth_forcing=1.0, truth_jitter=0.3, hedge=hedge).train()
    batch = tiny_batch()
    context = model.encode_study(batch["images"], batch["view_mask"], expert_labels=batch["expert_labels"])
    probs = context.expert_probs  # (B, 3)
    if hedge:
        assert (probs[:, EDEMA] == 0.5).all()  # exactly: the jitter leaves it
    else:
        assert (probs[:, EDEMA] >= 0.7).all()  # the label policy's "ones": read present
    assert (probs[:, 0] >= 0.7).all() and (probs[:, 2] <= 0.3).all()  # present and absent keep their jitter


def test_a_hedge_is_not_a_counterfactual_edit():
    model = grounded_model(truth_forcing=0.0, hedge=True).train()
    batch = tiny_batch()
    labels = batch["expert_labels"].clone()
    labels[:, OBSERVATIONS.index("Edema")] = 1.0
    hedged = labels.clone()
    hedged[:, OBSERVATIONS.index("Edema")] = -1.0
    images, views = batch["images"], batch["view_mask"]
    context = model.encode_study(images, views, expert_labels=labels, decoder_labels=hedged)
    assert torch.allclose(context.expert_probs, torch.sigmoid(context.expert_logits))  # its own p, not forced
    flipped = labels.clone()
    flipped[:, OBSERVATIONS.index("Edema")] = 0.0  # a real edit: always read
    context = model.encode_study(images, views, expert_labels=labels, decoder_labels=flipped)
    assert (context.expert_probs[:, EDEMA] == 0.0).all()


def test_the_band_reads_one_half_and_only_for_a_decoder_trained_to_hedge():
    batch = tiny_batch()
    images, views = batch["images"], batch["view_mask"]
    soft = torch.tensor([[0.3, 0.8, 0.6], [0.75, 0.1, 0.45]])
    band = DecodeConfig(expert_threshold=0.7, hedge_band=0.2)
    for hedge, expected in (
        (True, [[0.0, 1.0, 0.5], [1.0, 0.0, 0.0]]),
        (False, [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]),
    ):
        model = grounded_model(hedge=hedge)
        with torch.no_grad():
            banded = decoding_context(model, images, views, band, soft)
            logits = model.encode_images(images, views).attribute_logits
            one_hot = F.one_hot(logits.argmax(dim=-1), 3).float()
            reference = model.encode_study(
                images, views, expert_probs=torch.tensor(expected), attribute_probs=one_hot
            )
        assert torch.equal(banded.expert_tokens, reference.expert_tokens)
        assert torch.equal(banded.expert_probs, soft)  # reports keep the experts' own p


def test_band_config_and_floors():
    decode = DecodeConfig(expert_threshold=0.7, hedge_band=0.25)
    assert decode.hedge_floor("Edema") == pytest.approx(0.45)
    assert decode.hedge_floor("No Finding") == 0.7  # not a finding one hedges
    assert DecodeConfig(expert_threshold=0.7).hedge_floor("Edema") == 0.7
    assert hedge_floors(decode, ["Edema"], hedges=False) == {}
    assert hedge_floors(DecodeConfig(expert_threshold=0.0, hedge_band=0.2), ["Edema"], hedges=True) == {}
    assert hedge_floors(decode, ["Edema"], hedges=True) == {"Edema": pytest.approx(0.45)}
    for bad in (-0.1, 1.0, float("nan")):
        with pytest.raises(LeadrrgError, match="decode.hedge_band"):
            DecodeConfig(hedge_band=bad)


def test_no_finding_is_derived_negative_beside_a_hedged_finding():
    names = ["No Finding", "Cardiomegaly", "Support Devices"]
    read = torch.tensor([[1.0, 0.5, 0.0], [1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    assert with_derived_no_finding(read, names)[:, 0].tolist() == [0.0, 1.0, 0.0]


def test_hedged_labels_mark_what_the_report_hedges():
    labels = torch.full((14,), float("nan"))
    for name in ("Pneumonia", "Pleural Effusion", "Cardiomegaly"):
        labels[OBSERVATIONS.index(name)] = 1.0
    report = "Possible right lower lobe pneumonia. Small right pleural effusion. No pneumothorax."
    out = hedged_labels(labels, report)
    assert out[OBSERVATIONS.index("Pneumonia")] == -1.0
    assert out[OBSERVATIONS.index("Pleural Effusion")] == 1.0
    assert out[OBSERVATIONS.index("Cardiomegaly")] == 1.0  # not mentioned: stays as the truth has it


def test_contradictions_with_a_band():
    thresholds = {
        name: 0.7 for name in ("Edema", "Cardiomegaly", "Pneumonia", "Atelectasis", "Pleural Effusion")
    }
    floors = {name: 0.5 for name in thresholds}
    probs = {"Edema": 0.6, "Cardiomegaly": 0.6, "Pneumonia": 0.6, "Atelectasis": 0.4, "Pleural Effusion": 0.9}
    findings = {"Edema": -1, "Cardiomegaly": 1, "Pneumonia": None, "Atelectasis": -1, "Pleural Effusion": -1}
    kinds = {item["expert"]: item["kind"] for item in contradictions(probs, thresholds, findings, floors)}
    # Edema hedged in its band agrees; Pleural Effusion hedged above its threshold is stated, so it agrees too
    assert kinds == {"Cardiomegaly": "overstated", "Pneumonia": "omitted", "Atelectasis": "unsupported"}
    no_band = {item["expert"]: item["kind"] for item in contradictions(probs, thresholds, findings)}
    assert no_band == {"Edema": "unsupported", "Cardiomegaly": "unsupported", "Atelectasis": "unsupported"}
    table = expert_table(probs, thresholds, contradictions(probs, thresholds, findings, floors), floors)
    assert "threshold 0.70 (hedged above 0.50)" in table and "without a hedge" in table


def test_hedge_scores_tell_a_hedge_from_a_silent_omission():
    nan = float("nan")
    ref = np.full((2, 14), nan)
    hyp = np.full((2, 14), nan)
    edema, effusion, pneumonia = (OBSERVATIONS.index(n) for n in ("Edema", "Pleural Effusion", "Pneumonia"))
    ref[0, [edema, effusion]] = 1.0
    ref[1, pneumonia] = 1.0
    hyp[0, edema] = -1.0  # hedged, true
    hyp[1, pneumonia] = 1.0  # stated, true
    hyp[1, edema] = -1.0  # hedged, absent
    scores = hedge_scores(ref, hyp)
    assert scores["silent_omission_rate"] == pytest.approx(1 / 3)  # effusion, never mentioned
    assert scores["hedged_share"] == pytest.approx(2 / 3)
    assert scores["hedged_absent_rate"] == pytest.approx(1 / 2)
    assert scores["num_hedged"] == 2 and scores["num_silently_omitted"] == 1


def test_a_hedge_edit_restates_one_finding_as_the_reports_hedge_it():
    from leadrrg.data.counterfactual import CounterfactualEditor
    from leadrrg.labeler import label_reports

    reports = [
        "Possible small left pleural effusion. The heart is normal in size.",
        "Moderate cardiomegaly. Small right pleural effusion. No pneumothorax.",
        "Mild cardiomegaly. Right lower lobe consolidation.",
    ]
    editor = CounterfactualEditor(reports, OBSERVATIONS)
    effusion, heart = OBSERVATIONS.index("Pleural Effusion"), OBSERVATIONS.index("Cardiomegaly")
    assert editor.hedged[effusion] == ["Possible small left pleural effusion."]
    assert not editor.hedged[heart]  # no report hedges it: never hedged by an edit
    before = label_reports([reports[1]])[0]
    edited = editor.hedge(reports[1], before, torch.Generator().manual_seed(0))
    assert edited == "Moderate cardiomegaly. Possible small left pleural effusion. No pneumothorax."
    after = label_reports([edited])[0]
    assert after[effusion] == -1 and after[heart] == 1
    # the labels must have the finding present: an absent one is never hedged into the report
    absent = before.copy()
    absent[effusion] = 0.0
    assert editor.hedge(reports[1], absent) is None
    assert editor.hedge(reports[2], label_reports([reports[2]])[0]) is None  # nothing hedgeable stated
