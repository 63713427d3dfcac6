"""What the decoder reads as the experts' p while training (`model.grounding`, docs/FAITHFULNESS.md).

Pure functions of a `GroundingConfig` and tensors; `LeadModel` calls them, so its `forward` stays the data flow.

- `decoder_probs`: given probabilities (an oracle, a flip, a user's override), else the experts' own; in training
  ground truth for a `truth_forcing` share of the studies, and always for counterfactual studies.
- `decoder_attribute_probs`: the side and severity the decoder reads with p: given ones, in training the ones the target
  report states, else the experts' own.
- `drop_visual_tokens`: modality dropout, a `visual_dropout` share of the studies loses its visual prompt.
- `with_derived_no_finding`: No Finding as CheXpert defines it, from the other findings' 0/1 evidence.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from leadrrg.config import GroundingConfig
from leadrrg.constants import IGNORE_INDEX, UNCERTAIN
from leadrrg.errors import LeadrrgError
from leadrrg.model.losses import expert_targets


def decoder_probs(
    grounding: GroundingConfig,
    label_policy: str,
    expert_logits: torch.Tensor,
    expert_probs: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    read_labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """The probabilities p (B, K) the decoder reads: `expert_probs` when given, else sigmoid(expert_logits)
    (detached with grounding.detach_experts). `labels` (B, K, in the experts' order) are given in training only:
    then a `grounding.truth_forcing` share of the studies (rows) reads the ground-truth targets of `read_labels`
    (default `labels`) instead, softened by `grounding.truth_jitter`. A row whose `read_labels` differ from its
    `labels` (a counterfactual study, whose report was edited to match them) always reads them. With
    `grounding.hedge` a finding `read_labels` mark uncertain (-1: the target report hedges it) reads 1/2, exactly
    (jitter leaves it), and differs from a present label only in how it is stated, not in what is there."""
    if expert_probs is not None:
        if expert_probs.shape != expert_logits.shape:
            raise LeadrrgError(
                f"expert_probs have shape {tuple(expert_probs.shape)}; expected {tuple(expert_logits.shape)} "
                "(studies, experts)"
            )
        return expert_probs.to(expert_logits)
    probs = torch.sigmoid(expert_logits)  # (B, K)
    if grounding.detach_experts:
        probs = probs.detach()
    if labels is None:
        return probs
    read = labels if read_labels is None else read_labels
    edited = (read.abs() != labels.abs()) & ~(read.isnan() & labels.isnan())  # (B, K); hedged is not edited
    counterfactual = edited.any(dim=1, keepdim=True)  # (B, 1)
    if grounding.truth_forcing <= 0 and not bool(counterfactual.any()):
        return probs
    targets, _ = expert_targets(read, label_policy)
    targets = targets.to(probs)
    if grounding.truth_jitter > 0:  # p ~ U(1 - j, 1) when present, U(0, j) when absent
        shift = torch.rand_like(targets) * grounding.truth_jitter
        targets = targets + shift * (1.0 - 2.0 * targets)
    if grounding.hedge:
        targets = torch.where(read == UNCERTAIN, 0.5, targets)
    forced = torch.rand(probs.shape[0], 1, device=probs.device) < grounding.truth_forcing  # (B, 1)
    return torch.where(forced | counterfactual, targets, probs)


def decoder_attribute_probs(
    grounding: GroundingConfig,
    attribute_logits: torch.Tensor,
    attributes: torch.Tensor | None = None,
    read_targets: torch.Tensor | None = None,
) -> torch.Tensor:
    """The side and severity (B, K, 2, 3) the decoder reads: `attributes` when given (an override, a side flip),
    in training the values the target report states (`read_targets` (B, K, 2) value indices, IGNORE_INDEX where it
    states none: a zero row, nothing read), else the experts' own softmax (detached with detach_experts). Training
    always reads the report's own attributes (attribute truth forcing): side words must come from this channel."""
    if attributes is not None:
        if attributes.shape != attribute_logits.shape:
            raise LeadrrgError(
                f"expert attributes have shape {tuple(attributes.shape)}; expected {tuple(attribute_logits.shape)} "
                "(studies, experts, side and severity, 3 values)"
            )
        return attributes.to(attribute_logits)
    if read_targets is not None:
        known = (read_targets != IGNORE_INDEX).unsqueeze(-1)  # (B, K, 2, 1)
        values = F.one_hot(read_targets.clamp(min=0), attribute_logits.shape[-1]).to(attribute_logits)
        return values * known
    probs = attribute_logits.softmax(dim=-1)
    return probs.detach() if grounding.detach_experts else probs


def drop_visual_tokens(
    grounding: GroundingConfig, visual_mask: torch.Tensor, num_expert_tokens: int = 0
) -> torch.Tensor:
    """Training-time modality dropout: for a `grounding.visual_dropout` share of the studies (rows) the visual
    prompt tokens are masked out of attention; the last `num_expert_tokens` prompt tokens (the expert input
    tokens of fusion=input) stay: (B, P) -> (B, P)."""
    num_visual = visual_mask.shape[1] - num_expert_tokens
    drop = torch.rand(visual_mask.shape[0], 1, device=visual_mask.device) < grounding.visual_dropout
    keep = torch.ones_like(visual_mask)
    keep[:, :num_visual] = ~drop
    return visual_mask & keep


def with_derived_no_finding(read: torch.Tensor, names: list[str]) -> torch.Tensor:
    """0 / 1/2 / 1 evidence (B, K) of the experts `names` -> the same with No Finding = 1 iff no expert other than
    No Finding and Support Devices reads more than 0 (a hedged finding, 1/2, is not a normal study: CheXpert's No
    Finding is negative when a finding is present or uncertain); unchanged when the experts have no No Finding."""
    if "No Finding" not in names:
        return read
    column = names.index("No Finding")
    findings = [i for i, name in enumerate(names) if name not in ("No Finding", "Support Devices")]
    read = read.clone()
    read[:, column] = (read[:, findings].amax(dim=1) <= 0).to(read) if findings else 1.0
    return read
