"""Counterfactual training studies (`model.grounding.counterfactual`): the report editor keeps the labeler's
reading consistent with the flipped labels, the decoder reads the flipped labels while the experts learn the true
ones, and a run trains with it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from leadrrg.config import GroundingConfig, load_run_config
from leadrrg.constants import OBSERVATIONS
from leadrrg.data.counterfactual import CounterfactualEditor, split_sentences
from leadrrg.errors import LeadrrgError
from leadrrg.labeler import label_reports

REPORTS = [
    "The heart is normal in size. No pleural effusion. The lungs are clear. No acute cardiopulmonary process.",
    "Moderate cardiomegaly. Small left pleural effusion. No pneumothorax.",
    "There is a small right pneumothorax. The heart is normal in size.",
    "Mild cardiomegaly with pulmonary edema. No pleural effusion.",
]


def labels_of(report: str) -> np.ndarray:
    return label_reports([report])[0]


def editor(names=OBSERVATIONS) -> CounterfactualEditor:
    return CounterfactualEditor(REPORTS, names)


def test_banks_hold_only_sentences_that_name_one_finding():
    bank = editor()
    effusion = OBSERVATIONS.index("Pleural Effusion")
    assert "Small left pleural effusion." in bank.positive[effusion]
    assert "No pleural effusion." in bank.negative[effusion]
    # "Mild cardiomegaly with pulmonary edema." names two findings: in no bank
    assert all("edema" not in s for k in bank.positive for s in bank.positive[k])


@pytest.mark.parametrize("seed", range(6))
def test_an_edit_asserts_the_flipped_finding_and_every_other_finding_as_before(seed):
    bank = editor(["Cardiomegaly", "Pleural Effusion", "Pneumothorax"])
    generator = torch.Generator().manual_seed(seed)
    for report in REPORTS:
        labels = labels_of(report)
        edited = bank.edit(report, labels, generator)
        if edited is None:
            continue
        text, flipped = edited
        changed = [OBSERVATIONS[i] for i in np.nonzero((flipped == 1) != (labels == 1))[0] if i != 0]
        assert len(changed) == 1 and changed[0] in ("Cardiomegaly", "Pleural Effusion", "Pneumothorax")
        k = OBSERVATIONS.index(changed[0])
        after, before = labels_of(text), labels_of(report)
        assert (after[k] == 1) == (flipped[k] == 1), (report, text)
        others = [i for i in range(1, len(OBSERVATIONS)) if i != k]
        assert np.array_equal(after[others] == 1, before[others] == 1), (report, text)
        # No Finding follows: a normal report with a finding switched on is no longer normal
        if flipped[k] == 1:
            assert flipped[0] != 1
            assert "No acute cardiopulmonary process." not in split_sentences(text)


def test_no_edit_when_no_checked_edit_exists():
    bank = CounterfactualEditor(["No pneumothorax."], ["Pneumothorax"])  # no positive statement to insert
    assert (
        bank.edit("No pneumothorax.", labels_of("No pneumothorax."), torch.Generator().manual_seed(0)) is None
    )


def test_only_a_decoder_that_reads_the_experts_gets_counterfactual_studies(tmp_path):
    from leadrrg.collectives import DistContext
    from leadrrg.data.synth.generate import synthesize
    from leadrrg.train.build import build_task
    from tests.test_train_helpers import tiny_config

    with pytest.raises(LeadrrgError, match=r"\[0, 1\)"):
        GroundingConfig(counterfactual=1.0)
    data = synthesize(tmp_path / "data", {"train": 8, "val": 2, "test": 2}, size=32, seed=0)
    for fusion, edits in (("layerwise", True), ("input", True), ("aux", False), ("none", False)):
        config = tiny_config(data, f"model.injection.fusion={fusion}", "model.grounding.counterfactual=0.5")
        dataset = build_task(config, DistContext()).train_dataset
        assert (dataset.counterfactual is not None) == edits
        assert dataset.counterfactual_rate == (0.5 if edits else 0.0)


def test_counterfactual_rows_read_their_flipped_labels_and_the_experts_learn_the_truth():
    from leadrrg.model.grounding import decoder_probs
    from tests.test_model_helpers import build, perturb_zero_init, tiny_batch, tiny_config

    config = tiny_config()
    config.grounding.truth_forcing = 0.0  # without truth forcing only counterfactual rows read labels
    model = build(config).train()
    perturb_zero_init(model)  # W^l starts at zero: make the injection count
    batch = tiny_batch(batch=3)
    k = config.experts.num_experts
    logits = torch.zeros(3, k)  # p = 0.5 everywhere
    truth = batch["expert_labels"]
    read = truth.clone()
    read[1, OBSERVATIONS.index("Pleural Effusion")] = 1.0  # study 1 is counterfactual
    labels, read_labels = model.select_expert_labels(truth), model.select_expert_labels(read)
    probs = decoder_probs(
        config.grounding, config.label_policy, logits, labels=labels, read_labels=read_labels
    )
    assert torch.equal(probs[0], torch.full((k,), 0.5)) and torch.equal(probs[2], torch.full((k,), 0.5))
    assert probs[1].tolist() == [
        1.0,
        0.5,
        1.0,
    ]  # Cardiomegaly 1, Edema uncertain (hedged: 1/2, model.grounding.hedge), Effusion flipped on
    # the experts learn the truth: the classification loss ignores decoder_labels
    torch.manual_seed(0)
    plain = model(**batch)
    torch.manual_seed(0)
    flipped = model(**batch, decoder_labels=read)
    assert torch.equal(plain["cls_loss"], flipped["cls_loss"])
    assert not torch.equal(plain["lm_loss"], flipped["lm_loss"])  # the decoder read something else


def test_training_items_are_edited_at_the_rate_and_nothing_else_is(tmp_path):
    from leadrrg.config import DataConfig, VisionConfig
    from leadrrg.data.dataset import StudyDataset
    from leadrrg.data.manifests import load_studies
    from leadrrg.data.synth.generate import synthesize

    root = synthesize(tmp_path / "data", {"train": 40, "val": 2, "test": 2}, size=32, seed=0)
    studies = load_studies(DataConfig(format="synth", root=str(root)), "train")
    bank = CounterfactualEditor([s.report for s in studies], OBSERVATIONS)
    vision = VisionConfig(image_size=32)

    def edited(dataset) -> int:
        torch.manual_seed(0)
        items = [dataset[i] for i in range(len(dataset))]
        for item, study in zip(items, studies):
            assert torch.equal(item["labels"].nan_to_num(7), torch.tensor(study.labels).float().nan_to_num(7))
        return sum(item["report"] != study.report for item, study in zip(items, studies))

    assert (
        edited(StudyDataset(studies, vision, 1, train=True, counterfactual=bank, counterfactual_rate=0.0))
        == 0
    )
    assert (
        edited(StudyDataset(studies, vision, 1, train=False, counterfactual=bank, counterfactual_rate=0.9))
        == 0
    )
    assert (
        edited(StudyDataset(studies, vision, 1, train=True, counterfactual=bank, counterfactual_rate=0.9))
        > 25
    )


def test_a_run_trains_with_counterfactual_studies(tmp_path):
    from leadrrg.cli import main
    from leadrrg.data.synth.generate import synthesize
    from tests.test_train_helpers import TINY_MODEL, TINY_TRAIN

    data = synthesize(tmp_path / "data", {"train": 8, "val": 4, "test": 2}, size=64, seed=0)
    sets = [
        a
        for item in [*TINY_MODEL, *TINY_TRAIN, "model.grounding.counterfactual=0.9"]
        for a in ("--set", item)
    ]
    run = tmp_path / "run"
    assert main(["train", "--preset", "demo", "--data", str(data), "--out", str(run), "--quiet", *sets]) == 0
    assert load_run_config(run / "config.json").model.grounding.counterfactual == 0.9
