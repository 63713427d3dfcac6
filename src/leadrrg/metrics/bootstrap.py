"""Study-level bootstrap: confidence intervals of a metric and paired comparisons of two systems.

A bootstrap replicate draws N studies with replacement from the N studies of a test set; a replicate is
therefore a vector of **study weights** ``w`` (how often each study was drawn, summing to N). Every
metric here is a function of per-study statistics that are computed once (BLEU's clipped n-gram counts
and lengths, ROUGE-L's per-study scores, CIDEr's n-gram counts, CE's TP/FP/FN, hallucination counts);
a replicate re-aggregates them with its weights, which gives exactly the number the metric would give
on the resampled test set (duplicated studies counted as often as drawn), without re-running the
metric's implementation. See `metrics.nlg_stats`, `metrics.clinical.ClinicalStatistics` and
`metrics.hallucination.HallucinationStatistics`.

- **Resampling**: ``numpy.random.default_rng(seed)``, replicates drawn in batches; the same seed gives
  the same replicates for a given number of studies, so two metrics files are reproducible.
- **Interval**: the percentile interval, ``[2.5th, 97.5th]`` percentile of the replicate values (numpy's
  linear interpolation).
- **Paired comparison** (`paired_bootstrap`): both systems are scored on the *same* replicates; the
  interval is that of the replicate differences B - A, and the two-sided p-value is
  ``min(1, 2 * (1 + k) / (1 + R))`` where R is the number of replicates and k the number of replicate
  differences on the far side of zero (``<= 0`` when the observed difference is positive, ``>= 0``
  otherwise): the share of replicates in which the sign of the difference does not hold, with the +1
  correction so that p is never 0.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

import numpy as np

CI_LEVEL = 0.95
BATCH = 64


class StudyStatistics(Protocol):
    """Per-study statistics of some metrics, aggregated under study weights."""

    def scores(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        """(B, N) study weights -> {metric: (B,) values}; all-ones weights give the metric itself."""
        ...


def replicate_weights(num_studies: int, num_samples: int, seed: int) -> Iterator[np.ndarray]:
    """(b, N) float64 study weights (draw counts) of `num_samples` bootstrap replicates, in batches."""
    if num_studies < 1:
        raise ValueError("the bootstrap needs at least one study")
    rng = np.random.default_rng(seed)
    done = 0
    while done < num_samples:
        size = min(BATCH, num_samples - done)
        drawn = rng.integers(0, num_studies, size=(size, num_studies))  # (b, N) study indices
        flat = (drawn + num_studies * np.arange(size)[:, None]).ravel()
        yield np.bincount(flat, minlength=size * num_studies).reshape(size, num_studies).astype(np.float64)
        done += size


def replicate_scores(
    statistics: Sequence[StudyStatistics], num_studies: int, num_samples: int, seed: int
) -> dict[str, np.ndarray]:
    """{metric: (num_samples,) values} of every metric of `statistics` on the same bootstrap replicates."""
    chunks: dict[str, list[np.ndarray]] = {}
    for weights in replicate_weights(num_studies, num_samples, seed):
        for stats in statistics:
            for name, values in stats.scores(weights).items():
                chunks.setdefault(name, []).append(values)
    return {name: np.concatenate(values) for name, values in chunks.items()}


def point_scores(statistics: Sequence[StudyStatistics], num_studies: int) -> dict[str, float]:
    """The metrics of `statistics` on the test set itself (every study weighted 1)."""
    weights = np.ones((1, num_studies))
    return {name: float(values[0]) for stats in statistics for name, values in stats.scores(weights).items()}


def percentile_interval(values: np.ndarray) -> list[float]:
    """[low, high]: the central `CI_LEVEL` percentile interval of bootstrap replicate values."""
    tail = 100 * (1 - CI_LEVEL) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return [float(low), float(high)]


def paired_p_value(differences: np.ndarray, observed: float) -> float:
    """Two-sided paired-bootstrap p-value of an observed difference (see the module docstring)."""
    if observed > 0:
        against = int((differences <= 0).sum())
    elif observed < 0:
        against = int((differences >= 0).sum())
    else:
        return 1.0
    return min(1.0, 2 * (1 + against) / (1 + len(differences)))


def paired_bootstrap(
    statistics_a: Sequence[StudyStatistics],
    statistics_b: Sequence[StudyStatistics],
    num_studies: int,
    num_samples: int,
    seed: int,
) -> dict[str, dict[str, float | list[float]]]:
    """{metric: {"difference", "ci", "p_value"}} of system B minus system A, both scored on the same
    replicates of the same studies; "difference" is B - A on the test set itself."""
    observed_a = point_scores(statistics_a, num_studies)
    observed_b = point_scores(statistics_b, num_studies)
    samples_a = replicate_scores(statistics_a, num_studies, num_samples, seed)
    samples_b = replicate_scores(statistics_b, num_studies, num_samples, seed)
    result = {}
    for name in observed_a:
        difference = observed_b[name] - observed_a[name]
        differences = samples_b[name] - samples_a[name]
        result[name] = {
            "difference": difference,
            "ci": percentile_interval(differences),
            "p_value": paired_p_value(differences, difference),
        }
    return result
