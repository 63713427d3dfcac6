"""Expert accuracy: AUROC (Mann-Whitney, ties averaged) and F1 of expert scores against binary targets.

Pure functions of numpy arrays, shared by validation during training and `leadrrg diagnose`.
"""

from __future__ import annotations

import numpy as np


def binary_auroc(scores: np.ndarray, targets: np.ndarray) -> float | None:
    """Area under the ROC curve (Mann-Whitney, ties averaged); None unless both classes occur."""
    positives = targets == 1
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores), dtype=np.float64)
    start = 0
    while start < len(scores):
        end = start
        while end + 1 < len(scores) and sorted_scores[end + 1] == sorted_scores[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def expert_scores(logits: np.ndarray, targets: np.ndarray, weights: np.ndarray) -> dict[str, float | None]:
    """Macro AUROC and macro F1 (threshold p = 0.5) of expert logits (N, K) against binary targets
    (N, K), over the experts with both classes (AUROC) or at least one positive (F1) among weighted pairs."""
    aurocs, f1s = [], []
    for k in range(logits.shape[1]):
        keep = weights[:, k] > 0
        scores, target = logits[keep, k], targets[keep, k]
        auroc = binary_auroc(scores, target)
        if auroc is not None:
            aurocs.append(auroc)
        if target.sum() > 0:
            predicted = scores > 0
            tp = float((predicted & (target == 1)).sum())
            f1s.append(2 * tp / (predicted.sum() + target.sum()))
    return {
        "expert_macro_auroc": float(np.mean(aurocs)) if aurocs else None,
        "expert_macro_f1": float(np.mean(f1s)) if f1s else None,
    }
