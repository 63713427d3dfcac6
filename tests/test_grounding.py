"""Grounding switches: context balance, truth forcing, detached experts, expert-probability overrides, aux fusion."""

from __future__ import annotations

import pytest
import torch

from leadrrg.config import DecodeConfig, GroundingConfig
from leadrrg.errors import LeadrrgError
from leadrrg.inference.steps import decoding_context
from leadrrg.model.balance import ContextBalance
from leadrrg.model.grounding import drop_visual_tokens, with_derived_no_finding
from leadrrg.model.losses import expert_targets
from tests.test_model_helpers import (
    EXPERTS,
    build,
    grounded_model,
    perturb_zero_init,
    tiny_batch,
    tiny_config,
)


def _correlated_targets(n: int = 4000, seed: int = 0) -> torch.Tensor:
    """Three labels: A and B co-occur (B follows A 90% of the time), C independent."""
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(n, generator=g) < 0.3
    b = torch.where(a, torch.rand(n, generator=g) < 0.9, torch.rand(n, generator=g) < 0.05)
    c = torch.rand(n, generator=g) < 0.2
    return torch.stack([a, b, c], dim=1).float()


def _weighted_correlation(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> float:
    w = w / w.sum()
    mx, my = (w * x).sum(), (w * y).sum()
    cov = (w * (x - mx) * (y - my)).sum()
    return float(cov / ((w * (x - mx) ** 2).sum() * (w * (y - my) ** 2).sum()).sqrt())


def test_context_balance_decorrelates_each_label_from_the_others():
    targets = _correlated_targets()
    balance = ContextBalance(3, clip=10.0)
    assert torch.equal(balance(targets), torch.ones_like(targets))  # before fit: no reweighting
    balance.fit(targets)
    weights = balance(targets)  # (N, 3)
    assert torch.allclose(weights.mean(dim=0), torch.ones(3), atol=1e-4)
    # B's expert: B without its partner A (exclusive) counts more than B with A.
    exclusive = (targets[:, 1] == 1) & (targets[:, 0] == 0)
    together = (targets[:, 1] == 1) & (targets[:, 0] == 1)
    assert weights[exclusive, 1].mean() > 3 * weights[together, 1].mean()
    assert _weighted_correlation(targets[:, 0], targets[:, 1], torch.ones(len(targets))) > 0.7
    assert abs(_weighted_correlation(targets[:, 1], targets[:, 0], weights[:, 1])) < 0.05
    # An independent label keeps weights close to one.
    assert (weights[:, 2] - 1).abs().max() < 0.2
    assert weights.max() <= 10.0 * balance.scale.max() + 1e-6


def test_context_balance_fit_is_deterministic_and_respects_ignored_entries():
    targets = _correlated_targets(n=500)
    first, second = ContextBalance(3, 10.0), ContextBalance(3, 10.0)
    first.fit(targets)
    second.fit(targets.clone())
    assert torch.equal(first.coef, second.coef)
    ignored = torch.ones_like(targets)
    ignored[:, 1] = 0
    third = ContextBalance(3, 10.0)
    third.fit(targets, ignored)
    assert float(third.coef[1, 1]) == 0.0  # no labelled entries: nothing fitted for that expert


def test_grounding_config_validates():
    with pytest.raises(LeadrrgError, match="truth_forcing"):
        GroundingConfig(truth_forcing=1.5)
    with pytest.raises(LeadrrgError, match="truth_forcing"):
        GroundingConfig(truth_forcing=float("nan"))
    with pytest.raises(LeadrrgError, match="balance"):
        GroundingConfig(balance="inverse")


def test_truth_forcing_feeds_ground_truth_in_training_only():
    model = grounded_model(
        truth_forcing=1.0, hedge=False
    )  # the hedged Edema reads 1/2 with hedge: tests/test_hedge.py
    batch = tiny_batch()
    targets, _ = expert_targets(model.select_expert_labels(batch["expert_labels"]), "ones")
    model.train()
    context = model.encode_study(batch["images"], batch["view_mask"], expert_labels=batch["expert_labels"])
    assert torch.equal(context.expert_probs, targets)
    model.eval()
    context = model.encode_study(batch["images"], batch["view_mask"], expert_labels=batch["expert_labels"])
    assert torch.allclose(context.expert_probs, torch.sigmoid(context.expert_logits))
    paper = grounded_model(truth_forcing=0.0).train()
    context = paper.encode_study(batch["images"], batch["view_mask"], expert_labels=batch["expert_labels"])
    assert torch.allclose(context.expert_probs, torch.sigmoid(context.expert_logits))


def test_truth_jitter_keeps_the_threshold():
    model = grounded_model(truth_forcing=1.0, truth_jitter=0.5, hedge=False).train()
    batch = tiny_batch(batch=64)
    targets, _ = expert_targets(model.select_expert_labels(batch["expert_labels"]), "ones")
    probs = model.encode_study(
        batch["images"], batch["view_mask"], expert_labels=batch["expert_labels"]
    ).expert_probs
    assert ((probs > 0.5) == (targets == 1)).all() and probs.std() > 0.05
    assert ((probs - targets).abs() <= 0.5).all()


@pytest.mark.parametrize("detach", [True, False])
def test_detached_experts_get_no_lm_gradient(detach):
    model = grounded_model(truth_forcing=0.0, detach_experts=detach).train()
    model(**tiny_batch())["lm_loss"].backward()
    expert_grads = [p.grad for p in model.experts.parameters()]
    reached = any(g is not None and g.abs().sum() > 0 for g in expert_grads)
    assert reached is (not detach)
    assert model.expert_projections.up.grad.abs().sum() > 0  # the injection itself still trains


@pytest.mark.parametrize("detach", [True, False])
def test_detached_vision_learns_only_from_the_classification_loss(detach):
    model = grounded_model(truth_forcing=0.0, detach_vision=detach).train()
    out = model(**tiny_batch())
    out["lm_loss"].backward()
    vision_grads = [p.grad for p in model.vision.parameters() if p.requires_grad]
    reached = any(g is not None and g.abs().sum() > 0 for g in vision_grads)
    assert reached is (not detach)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.projector.parameters())
    model.zero_grad()
    model(**tiny_batch())["cls_loss"].backward()  # the experts' loss still trains the encoder
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.vision.parameters())


def test_expert_probability_override_reaches_the_decoder():
    model = grounded_model()
    batch = tiny_batch()
    own = model.encode_study(batch["images"], batch["view_mask"])
    forced = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    override = model.encode_study(batch["images"], batch["view_mask"], expert_probs=forced)
    assert torch.equal(override.expert_probs, forced) and torch.equal(
        override.expert_logits, own.expert_logits
    )
    assert not torch.allclose(override.expert_tokens, own.expert_tokens)
    with pytest.raises(LeadrrgError, match="expert_probs have shape"):
        model.encode_study(batch["images"], batch["view_mask"], expert_probs=forced[:, :2])


def test_aux_fusion_trains_experts_and_fuses_nothing():
    model = build(tiny_config(fusion="aux")).train()
    out = model(**tiny_batch())
    assert out["expert_logits"].shape == (2, len(EXPERTS)) and out["cls_loss"] > 0
    assert model.injected_layers() == [] and model.expert_projections is None
    context = model.encode_study(tiny_batch()["images"], tiny_batch()["view_mask"])
    assert context.expert_tokens is None and context.expert_probs.shape == (2, len(EXPERTS))
    out["loss"].backward()
    assert all(p.grad is not None for p in model.experts.parameters())


def test_visual_dropout_masks_whole_studies_in_training_only():
    model = grounded_model(visual_dropout=0.5)
    mask = torch.ones(400, 10, dtype=torch.bool)
    dropped = drop_visual_tokens(model.config.grounding, mask)
    rows = dropped.any(dim=1)
    assert torch.equal(dropped.all(dim=1), rows)  # a study keeps all its visual tokens or none
    assert 120 < int((~rows).sum()) < 280
    batch = tiny_batch()
    model.eval()
    before = model(**batch)["lm_loss"]
    assert torch.equal(before, model(**batch)["lm_loss"])  # eval: nothing dropped, deterministic
    with pytest.raises(LeadrrgError, match="visual_dropout"):
        GroundingConfig(visual_dropout=1.0)


def test_expert_threshold_binarizes_what_the_decoder_reads_and_keeps_the_soft_p():
    model = build(tiny_config())
    perturb_zero_init(model)
    batch = tiny_batch()
    soft = torch.tensor([[0.3, 0.8, 0.6], [0.75, 0.1, 0.69]])
    hard = (soft > 0.7).float()
    images, views = batch["images"], batch["view_mask"]
    with torch.no_grad():
        thresholded = decoding_context(model, images, views, DecodeConfig(expert_threshold=0.7), soft)
        # the side and severity are read as one-hot too (their most likely values)
        logits = model.encode_images(images, views).attribute_logits  # (B, K, 2, 3)
        one_hot = torch.nn.functional.one_hot(logits.argmax(dim=-1), 3).float()
        binary = model.encode_study(images, views, expert_probs=hard, attribute_probs=one_hot)
        plain = model.encode_study(images, views, expert_probs=soft)
    assert torch.equal(thresholded.expert_tokens, binary.expert_tokens)
    assert not torch.equal(thresholded.expert_tokens, plain.expert_tokens)
    assert torch.equal(thresholded.expert_probs, soft)  # reports carry the experts' own p
    with pytest.raises(LeadrrgError, match="expert_threshold"):
        DecodeConfig(expert_threshold=1.0)


def test_derive_no_finding_reads_no_finding_as_chexpert_defines_it():
    from leadrrg.config import ExpertConfig

    names = ["No Finding", "Cardiomegaly", "Edema", "Support Devices"]
    config = tiny_config()
    config.experts = ExpertConfig(names=names, hidden_size=16, num_heads=2)
    model = build(config)
    perturb_zero_init(model)
    read = torch.tensor(
        [[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 1.0, 1.0]]
    )
    derived = with_derived_no_finding(read, names)
    assert derived[:, 0].tolist() == [0.0, 1.0, 1.0, 0.0]  # devices alone are still "no finding"
    assert torch.equal(derived[:, 1:], read[:, 1:])
    batch = tiny_batch()
    images, views = batch["images"], batch["view_mask"]
    normal = torch.tensor([[0.9, 0.8, 0.1, 0.0], [0.9, 0.1, 0.1, 0.0]])  # a flip left No Finding high
    finding = torch.tensor([[0.1, 0.8, 0.1, 0.0], [0.9, 0.1, 0.1, 0.0]])
    with torch.no_grad():
        derive = DecodeConfig(expert_threshold=0.7, derive_no_finding=True)
        a = decoding_context(model, images, views, derive, normal)
        b = decoding_context(model, images, views, derive, finding)
        c = decoding_context(
            model, images, views, DecodeConfig(expert_threshold=0.7, derive_no_finding=False), normal
        )
    assert torch.equal(a.expert_tokens, b.expert_tokens)  # the No Finding expert's own p no longer counts
    assert not torch.equal(a.expert_tokens, c.expert_tokens)
    assert torch.equal(a.expert_probs, normal)  # reports keep the experts' own p
    # without a No Finding expert nothing changes
    assert torch.equal(with_derived_no_finding(read[:, :3], list(tiny_config().experts.names)), read[:, :3])
