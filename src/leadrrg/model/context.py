"""What the images give the decoder, computed once per study: `EncodedStudy` (before the decoder is told p) and
`StudyContext` (what decoding reads; `LeadModel.encode_study`)."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch


@dataclass
class StudyContext:
    """Everything decoding needs from the images, computed once per study.

    visual_tokens: (B, P, D) prompt tokens inserted after BOS (visual tokens, then K expert tokens with
    fusion=input); visual_mask: (B, P) bool, False for tokens of missing views; expert_logits: (B, K) or None
    (fusion=none); expert_probs: (B, K) the p reported for the study (the experts' own unless overridden;
    what the decoder read may be a thresholded copy, see `LeadModel.fuse_experts`); expert_tokens: Z (B, L, K, D)
    for fusion=layerwise, else None; attribute_logits: (B, K, 2, 3) each expert's side and severity logits, None
    without attribute experts."""

    visual_tokens: torch.Tensor
    visual_mask: torch.Tensor
    expert_logits: torch.Tensor | None = None
    expert_probs: torch.Tensor | None = None
    expert_tokens: torch.Tensor | None = None
    attribute_logits: torch.Tensor | None = None

    @property
    def num_prompt_tokens(self) -> int:
        return self.visual_tokens.shape[1]

    def index_select(self, batch_indices: torch.Tensor) -> StudyContext:
        """Reorder / repeat studies along the batch (beam search): every tensor indexed on dim 0."""
        values = {}
        for f in fields(self):
            value = getattr(self, f.name)
            values[f.name] = None if value is None else value.index_select(0, batch_indices.to(value.device))
        return StudyContext(**values)


@dataclass
class EncodedStudy:
    """What the images give, before the decoder is told p (`LeadModel.encode_images`).

    visual_tokens: (B, V*N', D) visual prompt tokens; visual_mask: (B, V*N') bool, False for tokens of missing
    views; expert_features: e (B, K, De) and expert_logits: s (B, K), None for fusion=none; attribute_logits
    (B, K, 2, 3): side and severity, None without attribute experts."""

    visual_tokens: torch.Tensor
    visual_mask: torch.Tensor
    expert_features: torch.Tensor | None = None
    expert_logits: torch.Tensor | None = None
    attribute_logits: torch.Tensor | None = None
