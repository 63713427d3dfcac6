"""Expert module: K pathology experts read the vision tokens.

K learned queries attend over the vision tokens in one multi-head cross-attention; a per-expert MLP
(batched with per-expert weights) refines each expert's feature and a per-expert classifier gives its
logit: vision tokens (B, N, Dv) -> expert features e (B, K, De), logits s (B, K).

Readout (`ExpertConfig.readout`): `query` is the paper's expert (query + attended feature). `query_max` adds
the vision tokens' channel-wise max, projected to De, to every expert's input: the softmax of one
cross-attention averages over tokens and dilutes a finding that covers a few of them (a nodule, a rib
fracture, a thin tube); the max keeps it (multiple-instance pooling). Measured in docs/RESULTS.md.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from leadrrg.config import ExpertConfig


def _uniform_(tensor: torch.Tensor, fan_in: int) -> torch.Tensor:
    bound = 1.0 / math.sqrt(fan_in)
    return nn.init.uniform_(tensor, -bound, bound)


class PerExpertMLP(nn.Module):
    """Residual pre-norm MLP with separate weights per expert: (B, K, De) -> (B, K, De)."""

    def __init__(self, num_experts: int, width: int, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.w1 = nn.Parameter(_uniform_(torch.empty(num_experts, width, hidden), width))
        self.b1 = nn.Parameter(torch.zeros(num_experts, hidden))
        self.w2 = nn.Parameter(_uniform_(torch.empty(num_experts, hidden, width), hidden))
        self.b2 = nn.Parameter(torch.zeros(num_experts, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.einsum("bkd,kdh->bkh", self.norm(x), self.w1) + self.b1  # (B, K, H)
        y = torch.einsum("bkh,khd->bkd", F.gelu(y), self.w2) + self.b2  # (B, K, De)
        return x + y


class AttributeHeads(nn.Module):
    """Each expert's side (right / left / bilateral) and severity (mild / moderate / large) from its feature:
    e (B, K, De) -> logits (B, K, 2, 3), a per-expert linear map like the presence classifier."""

    def __init__(self, num_experts: int, width: int):
        super().__init__()
        self.weight = nn.Parameter(_uniform_(torch.empty(num_experts, width, 6), width))
        self.bias = nn.Parameter(torch.zeros(num_experts, 6))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        logits = torch.einsum("bkd,kdc->bkc", features, self.weight) + self.bias  # (B, K, 6)
        return logits.unflatten(-1, (2, 3))  # (B, K, 2 attributes, 3 values)


class ExpertModule(nn.Module):
    """K experts over the vision tokens -> (expert_features (B, K, De), expert_logits (B, K))."""

    def __init__(self, config: ExpertConfig, vision_size: int):
        super().__init__()
        k, width = config.num_experts, config.hidden_size
        self.queries = nn.Parameter(torch.randn(k, width) * 0.02)
        self.kv_norm = nn.LayerNorm(vision_size)
        self.max_projection = nn.Linear(vision_size, width) if config.readout == "query_max" else None
        self.attention = nn.MultiheadAttention(
            width, config.num_heads, kdim=vision_size, vdim=vision_size, batch_first=True
        )
        self.mlp = PerExpertMLP(k, width, max(1, int(round(config.mlp_ratio * width))))
        self.norm = nn.LayerNorm(width)
        self.classifier_weight = nn.Parameter(_uniform_(torch.empty(k, width), width))
        self.classifier_bias = nn.Parameter(torch.zeros(k))
        # side and severity of each expert's finding (`model.experts.attributes`), read by LeadModel
        self.attribute_heads = AttributeHeads(k, width) if config.attributes else None

    def forward(
        self, vision_tokens: torch.Tensor, token_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """vision_tokens (B, N, Dv), token_mask (B, N) bool (True: attend) -> e (B, K, De), s (B, K)."""
        batch = vision_tokens.shape[0]
        queries = self.queries.unsqueeze(0).expand(batch, -1, -1)  # (B, K, De)
        memory = self.kv_norm(vision_tokens)
        attended, _ = self.attention(
            queries, memory, memory, key_padding_mask=~token_mask, need_weights=False
        )
        inputs = queries + attended  # (B, K, De)
        if self.max_projection is not None:
            strongest = memory.masked_fill(~token_mask[..., None], float("-inf")).amax(dim=1)  # (B, Dv)
            strongest = strongest.masked_fill(
                ~token_mask.any(dim=1, keepdim=True), 0.0
            )  # a study without views
            inputs = (
                inputs + self.max_projection(strongest)[:, None, :]
            )  # the same evidence offered to every expert
        features = self.norm(self.mlp(inputs))  # (B, K, De)
        logits = torch.einsum("bkd,kd->bk", features, self.classifier_weight) + self.classifier_bias  # (B, K)
        return features, logits
