"""Context balancing of the experts' classification loss: each expert learns its finding, not its partners.

Trained with plain BCE on correlated labels over shared vision tokens, an expert fires on the features of the
findings its finding usually comes with (the co-occurrence prior: an effusion expert that reads heart size).
`ContextBalance` removes that shortcut by inverse propensity weighting. For every expert k it fits, once, on the
training labels, a logistic model of k's label given the other experts' labels (its "context"):

    q_k(c) = P(y_k = 1 | y_-k = c)           (K logistic regressions, fitted jointly)
    w_k    = P(y_k) / q_k(c)                 for a positive,
             (1 - P(y_k)) / (1 - q_k(c))     for a negative,      clipped to [1 / clip, clip]

Under these weights y_k is independent of the other labels, so the co-occurring findings stop predicting y_k:
a positive without its usual partners (an exclusive sample) and a negative with them count more, as in
exclusive-sample weighting (Singh et al., CVPR 2020) and bias-balanced losses. The fit uses training labels
only and is repeated deterministically when a run resumes; the buffers are not part of checkpoints.
"""

from __future__ import annotations

import torch
from torch import nn


class ContextBalance(nn.Module):
    """Per-(study, expert) BCE weights from the labels: targets (B, K) in {0, 1} -> weights (B, K)."""

    def __init__(self, num_experts: int, clip: float):
        super().__init__()
        self.clip = clip
        # coef[k, j]: weight of label j in expert k's context model; coef[k, k] is its bias.
        self.register_buffer("coef", torch.zeros(num_experts, num_experts), persistent=False)
        self.register_buffer("prior", torch.full((num_experts,), 0.5), persistent=False)
        self.register_buffer("scale", torch.ones(num_experts), persistent=False)
        self.fitted = False

    def context_probability(self, targets: torch.Tensor) -> torch.Tensor:
        """q (B, K): P(y_k = 1 | the other labels of the same study), targets (B, K) in {0, 1}."""
        eye = torch.eye(targets.shape[1], device=targets.device, dtype=targets.dtype)
        return torch.sigmoid(_context_logits(targets, self.coef.to(targets), eye))

    @torch.no_grad()
    def fit(self, targets: torch.Tensor, weights: torch.Tensor | None = None, l2: float = 1e-5) -> None:
        """Fit the K context models on the training targets (N, K) in {0, 1}; `weights` (N, K) marks the labelled
        entries (0: ignored, e.g. uncertain labels under label_policy=ignore)."""
        targets = targets.double()
        weights = torch.ones_like(targets) if weights is None else weights.double()
        num_experts = targets.shape[1]
        eye = torch.eye(num_experts, dtype=targets.dtype)
        coef = torch.zeros(num_experts, num_experts, dtype=targets.dtype, requires_grad=True)
        optimizer = torch.optim.LBFGS([coef], lr=1.0, max_iter=200, line_search_fn="strong_wolfe")
        total = weights.sum(dim=0).clamp(min=1.0)  # (K,)

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            logits = _context_logits(targets, coef, eye)  # (N, K)
            nll = nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
            loss = ((nll * weights).sum(dim=0) / total).sum() + l2 * (coef * (1.0 - eye)).pow(2).sum()
            loss.backward()
            return loss

        with torch.enable_grad():
            optimizer.step(closure)
        self.coef.copy_(coef.detach().to(self.coef))
        self.prior.copy_(((targets * weights).sum(dim=0) / total).to(self.prior))
        self.fitted = True
        self.scale.fill_(1.0)
        raw = self(targets.to(self.coef), apply_scale=False).double()  # (N, K)
        mean = (raw * weights).sum(dim=0) / total
        self.scale.copy_((1.0 / mean.clamp(min=1e-6)).to(self.scale))  # mean weight 1 per expert

    def forward(self, targets: torch.Tensor, apply_scale: bool = True) -> torch.Tensor:
        """targets (B, K) in {0, 1} -> weights (B, K); all ones before `fit`."""
        if not self.fitted:
            return torch.ones_like(targets)
        q = self.context_probability(targets).clamp(1e-6, 1 - 1e-6)  # (B, K)
        prior = self.prior.to(targets)
        weights = torch.where(targets > 0.5, prior / q, (1.0 - prior) / (1.0 - q))
        weights = weights.clamp(1.0 / self.clip, self.clip)
        return weights * self.scale.to(targets) if apply_scale else weights


def _context_logits(targets: torch.Tensor, coef: torch.Tensor, eye: torch.Tensor) -> torch.Tensor:
    """logit_k = sum_{j != k} y_j coef[k, j] + coef[k, k]: targets (N, K) -> (N, K)."""
    return targets @ (coef * (1.0 - eye)).T + torch.diagonal(coef)
