"""LEAD's training losses: the experts' BCE on the CheXpert labels (L_cls) and the decoder's next-token loss (L_lm).

loss = L_lm + model.cls_loss_weight * L_cls
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from leadrrg.constants import IGNORE_INDEX, UNCERTAIN
from leadrrg.model.balance import ContextBalance


def expert_targets(labels: torch.Tensor, policy: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels (B, K) with 1/0/-1/NaN -> BCE targets and weights (B, K).

    positive 1 -> 1; negative 0 or not mentioned NaN -> 0; uncertain -1 -> 1 (`ones`) or weight 0 (`ignore`)."""
    uncertain = labels == UNCERTAIN
    positive = labels == 1
    targets = (positive | uncertain if policy == "ones" else positive).to(torch.float32)
    weights = (~uncertain).to(torch.float32) if policy == "ignore" else torch.ones_like(targets)
    return targets, weights


def classification_loss(
    logits: torch.Tensor, labels: torch.Tensor, policy: str, balance: ContextBalance | None = None
) -> torch.Tensor:
    """Weighted mean BCE-with-logits over the labelled (study, expert) pairs: (B, K), (B, K) -> scalar.
    `balance` multiplies each pair's loss by its context weight (see model/balance.py); those importance weights
    have mean 1 over the training set, so the normaliser stays the count of labelled pairs (and the mean over
    equal batches of DDP ranks is the mean of the global batch)."""
    targets, weights = expert_targets(labels, policy)
    losses = F.binary_cross_entropy_with_logits(logits.float(), targets, reduction="none")
    if balance is not None:
        losses = losses * balance(targets)
    return (losses * weights).sum() / weights.sum().clamp(min=1.0)


def attribute_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the experts' side and severity where the value is known, summed and divided by the number
    of (study, expert) pairs, as the BCE of L_cls is: logits (B, K, 2, 3), targets (B, K, 2) value indices or
    IGNORE_INDEX -> scalar. A fixed normaliser (not the count of known values, which differs between batches)
    keeps the mean over equal DDP batches equal to the global batch's."""
    losses = F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]),
        targets.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    return losses / max(1, targets.shape[0] * targets.shape[1])


def target_token_count(target_ids: torch.Tensor) -> torch.Tensor:
    """The report tokens a batch's next-token loss averages over: bos, prompt, padding (and the visual tokens the
    model inserts) are IGNORE_INDEX. Known before the forward, so a training step can weigh micro-batches."""
    return (target_ids != IGNORE_INDEX).sum()


def next_token_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of position t predicting target t+1: logits (B, S, V), targets (B, S) -> scalar."""
    shift_logits = logits[:, :-1].float()
    shift_targets = targets[:, 1:]
    losses = F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.shape[-1]),
        shift_targets.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    return losses / (shift_targets != IGNORE_INDEX).sum().clamp(min=1)


def report_token_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """`next_token_loss` with the ignored positions already left out: logits (N, V) of the N positions whose next
    token is a report token, targets (N,) those tokens -> their mean cross-entropy (0, still in the graph, for N = 0)."""
    losses = F.cross_entropy(logits.float(), targets, reduction="sum")
    return losses / max(targets.numel(), 1)
