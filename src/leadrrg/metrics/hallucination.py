"""Hallucination and omission of findings.

Inputs are (N, 14) label arrays in CheXpert order, as in `metrics.clinical`: the reference labels (the
labeler on the reference report or, on synthetic data, the image's ground truth) and the labeler's labels
of the generated reports. Positive means exactly 1. The scores count over the **13 findings**, i.e. every
observation except No Finding, which is the absence of findings rather than a finding one can invent.

- A generated positive finding is **hallucinated** when the reference does not have it as positive
  (reference 0, -1 uncertain, or NaN not mentioned).
- ``hallucination_rate`` = hallucinated findings / all positive findings asserted by the generated
  reports (FP / (TP + FP), pooled over reports and findings). 0 when the generated reports assert no
  positive finding at all (nothing asserted, nothing invented).
- ``reports_with_hallucination`` = share of reports with at least one hallucinated finding.
- ``omission_rate`` = reference positives the generated report does not assert as positive / all
  reference positives (FN / (TP + FN)); 0 when the references have no positive finding.
- ``num_generated_positives``, ``num_hallucinated``, ``num_reference_positives``, ``num_omitted``: the
  counts behind the rates.
- ``hallucination_per_observation``: ``{finding: {"hallucinated", "generated_positives", "rate"}}``.

Hedged mentions (the labeler's -1: "possible small left effusion") are neither asserted nor hallucinated above, so
a hedged true finding counts as omitted there. `hedge_scores` separates what a report hedges from what it leaves
out: ``silent_omission_rate`` = reference positives the generated report does not mention at all (neither
positive nor uncertain) / reference positives; ``hedged_share`` = hedged mentions / all positive or hedged
mentions of findings; ``hedged_absent_rate`` = hedged mentions of findings the reference does not have as positive
/ hedged mentions (0 when nothing is hedged).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from leadrrg.constants import OBSERVATIONS
from leadrrg.metrics.clinical import check_pair, safe_divide

FINDINGS: tuple[str, ...] = tuple(name for name in OBSERVATIONS if name != "No Finding")
FINDING_INDICES: tuple[int, ...] = tuple(OBSERVATIONS.index(name) for name in FINDINGS)


def _rate(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 0.0


def hallucination_scores(ref_labels: np.ndarray, hyp_labels: np.ndarray) -> dict[str, Any]:
    """Hallucination rate, share of reports with a hallucination, and omission rate of the generated
    reports (`hyp_labels`, (N, 14)) against the reference (`ref_labels`, (N, 14)); see the module
    docstring for the definitions."""
    ref, hyp = check_pair(ref_labels, hyp_labels)
    ref = ref[:, FINDING_INDICES]  # (N, 13)
    hyp = hyp[:, FINDING_INDICES]
    hallucinated = hyp & ~ref
    omitted = ref & ~hyp

    num_generated = int(hyp.sum())
    num_hallucinated = int(hallucinated.sum())
    num_reference = int(ref.sum())
    num_omitted = int(omitted.sum())
    per_finding_generated = hyp.sum(0)
    per_finding_hallucinated = hallucinated.sum(0)
    return {
        "hallucination_rate": _rate(num_hallucinated, num_generated),
        "reports_with_hallucination": float(hallucinated.any(axis=1).mean()),
        "omission_rate": _rate(num_omitted, num_reference),
        "num_generated_positives": num_generated,
        "num_hallucinated": num_hallucinated,
        "num_reference_positives": num_reference,
        "num_omitted": num_omitted,
        "hallucination_per_observation": {
            name: {
                "hallucinated": int(per_finding_hallucinated[k]),
                "generated_positives": int(per_finding_generated[k]),
                "rate": _rate(int(per_finding_hallucinated[k]), int(per_finding_generated[k])),
            }
            for k, name in enumerate(FINDINGS)
        },
    }


def hedge_scores(ref_labels: np.ndarray, hyp_labels: np.ndarray) -> dict[str, Any]:
    """Silent omission, hedged share and hedged-absent rate (module docstring) of `hyp_labels` (N, 14, with -1
    for hedged mentions) against `ref_labels` (N, 14)."""
    ref, _ = check_pair(ref_labels, hyp_labels)
    ref = ref[:, FINDING_INDICES]  # (N, 13)
    raw = np.asarray(hyp_labels, dtype=np.float64)[:, FINDING_INDICES]
    positive, hedged = raw == 1.0, raw == -1.0
    silent = ref & ~positive & ~hedged
    num_hedged = int(hedged.sum())
    return {
        "silent_omission_rate": _rate(int(silent.sum()), int(ref.sum())),
        "hedged_share": _rate(num_hedged, int((positive | hedged).sum())),
        "hedged_absent_rate": _rate(int((hedged & ~ref).sum()), num_hedged),
        "num_hedged": num_hedged,
        "num_silently_omitted": int(silent.sum()),
    }


class HallucinationStatistics:
    """Per-study counts of `hallucination_scores`, for the bootstrap (`metrics.bootstrap`):
    `scores(weights)` gives ``hallucination_rate``, ``reports_with_hallucination`` and ``omission_rate``
    of every study weighting (all weights 1: `hallucination_scores` itself), each name prefixed by
    `prefix` (``gt_`` for the scores against ground-truth labels)."""

    def __init__(self, ref_labels: np.ndarray, hyp_labels: np.ndarray, prefix: str = ""):
        ref, hyp = check_pair(ref_labels, hyp_labels)
        self.prefix = prefix
        ref, hyp = ref[:, FINDING_INDICES], hyp[:, FINDING_INDICES]  # (N, 13)
        hallucinated = hyp & ~ref
        self.counts = np.stack(
            [hyp.sum(1), hallucinated.sum(1), ref.sum(1), (ref & ~hyp).sum(1), hallucinated.any(1)], axis=1
        ).astype(np.float64)  # (N, 5): generated, hallucinated, reference, omitted, any hallucinated

    def scores(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        generated, hallucinated, reference, omitted, any_hallucinated = (weights @ self.counts).T  # (B,) each
        return {
            f"{self.prefix}hallucination_rate": safe_divide(hallucinated, generated),
            f"{self.prefix}reports_with_hallucination": any_hallucinated / weights.sum(axis=1),
            f"{self.prefix}omission_rate": safe_divide(omitted, reference),
        }
