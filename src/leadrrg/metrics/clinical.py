"""Clinical efficacy (CE): how well the observations found in generated reports match those found in the
references, both labelled by the same labeler.

Inputs are label arrays of shape (N, 14) in CheXpert order (`constants.OBSERVATIONS`), with the labeler's
values 1 / 0 / -1 / NaN. **Positive means exactly 1**: negative (0), uncertain (-1) and not mentioned
(NaN) all count as "not positive", as in the CE scripts of R2Gen-era work (``fillna(0)``, ``-1 -> 0``).

Every score is reported over the 14 observations (``ce14_*``, No Finding included) and over the common
five (``ce5_*``, `constants.CE5_OBSERVATIONS`), in three averages:

- **micro**: TP, FP and FN summed over all reports and observations, then P = TP / (TP + FP),
  R = TP / (TP + FN), F1 = 2TP / (2TP + FP + FN).
- **macro**: P, R and F1 computed per observation, then averaged over *all* observations of the set,
  including observations that never occur (they score 0). This is scikit-learn's ``average="macro"``
  with ``zero_division=0``, the convention of R2Gen-era CE scripts.
- **example** (example-based): P, R and F1 computed per report over its observations, then averaged
  over all reports, with 0/0 -> 0 -- the convention of PromptMRG / R2GenGPT-era CE code (``nan_to_num``
  of per-report ratios), equal to scikit-learn's ``average="samples"`` with ``zero_division=0``. A report
  whose reference and generated text both assert no positive observation therefore scores 0, not 1.

Zero division gives 0 everywhere (scikit-learn's ``zero_division=0``). F1 is always computed from counts
(2TP / (2TP + FP + FN)), never as the harmonic mean of averaged P and R.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from leadrrg.constants import CE5_OBSERVATIONS, NUM_OBSERVATIONS, OBSERVATIONS, POSITIVE

CE5_INDICES: tuple[int, ...] = tuple(OBSERVATIONS.index(name) for name in CE5_OBSERVATIONS)


def positive_mask(labels: np.ndarray, name: str = "labels") -> np.ndarray:
    """(N, 14) labeler output -> (N, 14) bool, True where the label is exactly 1 (NaN is not positive)."""
    labels = np.asarray(labels, dtype=np.float64)
    if labels.ndim != 2 or labels.shape[1] != NUM_OBSERVATIONS:
        raise ValueError(f"{name}: expected shape (N, {NUM_OBSERVATIONS}), got {labels.shape}")
    return labels == POSITIVE


def check_pair(ref_labels: np.ndarray, hyp_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both label arrays as (N, 14) positive masks; ValueError when the shapes differ or N is 0."""
    ref = positive_mask(ref_labels, "ref_labels")
    hyp = positive_mask(hyp_labels, "hyp_labels")
    if ref.shape != hyp.shape:
        raise ValueError(f"ref_labels {ref.shape} and hyp_labels {hyp.shape} must have the same shape")
    if ref.shape[0] == 0:
        raise ValueError("no reports to score (N = 0)")
    return ref, hyp


def safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Elementwise numerator / denominator with 0 where the denominator is 0."""
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    out = np.zeros(np.broadcast(numerator, denominator).shape)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


def _prf(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return safe_divide(tp, tp + fp), safe_divide(tp, tp + fn), safe_divide(2 * tp, 2 * tp + fp + fn)


def _set_scores(ref: np.ndarray, hyp: np.ndarray, prefix: str) -> dict[str, float]:
    """Micro, macro and example-based P/R/F1 of the (N, K) positive masks `hyp` against `ref`."""
    tp = ref & hyp  # (N, K)
    fp = ~ref & hyp
    fn = ref & ~hyp
    scores: dict[str, float] = {}
    averages = {
        "micro": _prf(tp.sum(), fp.sum(), fn.sum()),
        "macro": tuple(values.mean() for values in _prf(tp.sum(0), fp.sum(0), fn.sum(0))),
        "example": tuple(values.mean() for values in _prf(tp.sum(1), fp.sum(1), fn.sum(1))),
    }
    for average, (precision, recall, f1) in averages.items():
        scores[f"{prefix}_{average}_precision"] = float(precision)
        scores[f"{prefix}_{average}_recall"] = float(recall)
        scores[f"{prefix}_{average}_f1"] = float(f1)
    return scores


def ce_scores(ref_labels: np.ndarray, hyp_labels: np.ndarray) -> dict[str, Any]:
    """Clinical efficacy of generated reports (`hyp_labels`, (N, 14)) against references (`ref_labels`,
    (N, 14)); see the module docstring for the conventions.

    Returns ``ce14_{micro,macro,example}_{precision,recall,f1}``, the same nine under ``ce5_``, and
    ``ce_per_observation``: ``{observation: {"precision", "recall", "f1", "support"}}`` for the 14, where
    support is the number of reference positives."""
    ref, hyp = check_pair(ref_labels, hyp_labels)
    scores = _set_scores(ref, hyp, "ce14")
    scores.update(_set_scores(ref[:, CE5_INDICES], hyp[:, CE5_INDICES], "ce5"))

    precision, recall, f1 = _prf((ref & hyp).sum(0), (~ref & hyp).sum(0), (ref & ~hyp).sum(0))
    support = ref.sum(0)
    scores["ce_per_observation"] = {
        name: {
            "precision": float(precision[k]),
            "recall": float(recall[k]),
            "f1": float(f1[k]),
            "support": int(support[k]),
        }
        for k, name in enumerate(OBSERVATIONS)
    }
    return scores


class ClinicalStatistics:
    """Per-study TP / FP / FN of `ce_scores`, for the bootstrap (`metrics.bootstrap`): `scores(weights)`
    gives the 18 ``{prefix}{14,5}_{micro,macro,example}_{precision,recall,f1}`` of every study weighting,
    equal to `ce_scores` on the resampled set (all weights 1: `ce_scores` itself). ``prefix`` names the
    labeler (``ce`` for ours, ``chexbert`` for CheXbert's)."""

    def __init__(self, ref_labels: np.ndarray, hyp_labels: np.ndarray, prefix: str = "ce"):
        ref, hyp = check_pair(ref_labels, hyp_labels)
        self.prefix = prefix
        self.counts = np.stack([ref & hyp, ~ref & hyp, ref & ~hyp]).astype(np.float64)  # (3, N, 14)

    def _set_scores(self, counts: np.ndarray, weights: np.ndarray, name: str) -> dict[str, np.ndarray]:
        tp, fp, fn = counts  # each (N, K)
        total = weights.sum(axis=1)  # (B,)
        per_report = _prf(tp.sum(1), fp.sum(1), fn.sum(1))  # 3 x (N,)
        per_observation = _prf(weights @ tp, weights @ fp, weights @ fn)  # 3 x (B, K)
        averages = {
            "micro": _prf(weights @ tp.sum(1), weights @ fp.sum(1), weights @ fn.sum(1)),
            "macro": tuple(values.mean(axis=1) for values in per_observation),
            "example": tuple(weights @ values / total for values in per_report),
        }
        return {
            f"{name}_{average}_{part}": values
            for average, triple in averages.items()
            for part, values in zip(("precision", "recall", "f1"), triple)
        }

    def scores(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        scores = self._set_scores(self.counts, weights, f"{self.prefix}14")
        scores.update(self._set_scores(self.counts[:, :, CE5_INDICES], weights, f"{self.prefix}5"))
        return scores
