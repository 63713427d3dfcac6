"""Projector: vision tokens (B, V*N, Dv) -> visual prompt tokens for the LLM (B, V*N', D)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def pool_view_grids(
    tokens: torch.Tensor, token_mask: torch.Tensor, num_views: int, grid: tuple[int, int], factor: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Average-pool each view's token grid by `factor` (ceil mode).

    tokens (B, V*N, Dv), token_mask (B, V*N) -> (B, V*N', Dv), (B, V*N') with N' = ceil(h/f) * ceil(w/f)."""
    if factor == 1:
        return tokens, token_mask
    batch, _, width = tokens.shape
    h, w = grid
    x = tokens.reshape(batch * num_views, h, w, width).permute(0, 3, 1, 2)  # (B*V, Dv, h, w)
    x = F.avg_pool2d(x, factor, ceil_mode=True)  # (B*V, Dv, h', w')
    pooled_n = x.shape[-2] * x.shape[-1]
    x = x.flatten(2).transpose(1, 2).reshape(batch, num_views * pooled_n, width)  # (B, V*N', Dv)
    view_mask = token_mask.reshape(batch, num_views, h * w)[:, :, 0]  # (B, V)
    mask = view_mask[:, :, None].expand(batch, num_views, pooled_n).reshape(batch, num_views * pooled_n)
    return x, mask


class Projector(nn.Module):
    """2-layer MLP Dv -> D applied per token: (B, M, Dv) -> (B, M, D)."""

    def __init__(self, in_size: int, out_size: int):
        super().__init__()
        self.fc1 = nn.Linear(in_size, out_size)
        self.fc2 = nn.Linear(out_size, out_size)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(tokens)))
