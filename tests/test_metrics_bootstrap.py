"""Bootstrap: per-study statistics reproduce the metrics (on the test set and on a resampled one, against
pycocoevalcap itself), seeded replicates, percentile intervals and paired p-values."""

from __future__ import annotations

import numpy as np
import pytest

from leadrrg.constants import NUM_OBSERVATIONS
from leadrrg.metrics.bootstrap import (
    paired_bootstrap,
    paired_p_value,
    percentile_interval,
    point_scores,
    replicate_scores,
    replicate_weights,
)
from leadrrg.metrics.clinical import ClinicalStatistics, ce_scores
from leadrrg.metrics.hallucination import HallucinationStatistics, hallucination_scores
from leadrrg.metrics.nlg import nlg_scores
from leadrrg.metrics.nlg_stats import nlg_statistics
from tests.test_metrics_nlg import GOLDEN, GOLDEN_EMPTY_LAST, HAVE_JAVA, HYPOTHESES, REFERENCES

NLG_NAMES = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l", "cider")

# More varied raw text (normalised inside), with repeated n-grams, an empty hypothesis and a short one.
RAW_REFERENCES = REFERENCES + [
    "Heart size is normal. The lungs are clear. The lungs are clear.",
    "Small bilateral effusions; no pneumothorax.",
    "No acute disease.",
]
RAW_HYPOTHESES = HYPOTHESES + ["", "Small effusions, no pneumothorax, the lungs are clear.", "Normal."]


def scores_of(statistics, weights):
    return {name: float(v[0]) for stats in statistics for name, v in stats.scores(weights[None]).items()}


@pytest.mark.parametrize(
    ("hypotheses", "golden"),
    [(HYPOTHESES, GOLDEN), (HYPOTHESES[:3] + [""], GOLDEN_EMPTY_LAST)],
)
def test_unit_weights_give_pycocoevalcap_golden_values(hypotheses, golden):
    scores = point_scores(nlg_statistics(REFERENCES, hypotheses), len(REFERENCES))
    assert set(scores) == set(NLG_NAMES)
    for name in NLG_NAMES:
        assert scores[name] == pytest.approx(golden[name], rel=1e-12, abs=1e-15)


def test_a_replicate_equals_pycocoevalcap_on_the_resampled_set():
    weights = np.array([3, 0, 1, 0, 2, 1, 0], dtype=np.float64)  # study 0 drawn three times, ...
    assert weights.sum() == len(RAW_REFERENCES)
    drawn = np.repeat(np.arange(len(weights)), weights.astype(int))
    expected = nlg_scores(
        [RAW_REFERENCES[i] for i in drawn], [RAW_HYPOTHESES[i] for i in drawn], meteor=False
    )
    scores = scores_of(nlg_statistics(RAW_REFERENCES, RAW_HYPOTHESES), weights)
    for name in NLG_NAMES:
        assert scores[name] == pytest.approx(expected[name], rel=1e-12, abs=1e-15), name


@pytest.mark.skipif(not HAVE_JAVA, reason="METEOR needs java on PATH")
def test_meteor_replicates_are_the_jars_own_score_of_the_resampled_set():
    from leadrrg.metrics.nlg_stats import MeteorStatistics

    statistics = MeteorStatistics(RAW_REFERENCES, RAW_HYPOTHESES)
    ones = np.ones(len(RAW_REFERENCES))
    assert scores_of([statistics], ones)["meteor"] == nlg_scores(RAW_REFERENCES, RAW_HYPOTHESES)["meteor"]
    weights = np.array([3, 0, 1, 0, 2, 1, 0], dtype=np.float64)
    drawn = np.repeat(np.arange(len(weights)), weights.astype(int))
    expected = nlg_scores([RAW_REFERENCES[i] for i in drawn], [RAW_HYPOTHESES[i] for i in drawn])["meteor"]
    assert scores_of([statistics], weights)["meteor"] == pytest.approx(expected, abs=1e-12)


@pytest.mark.skipif(not HAVE_JAVA, reason="METEOR needs java on PATH")
def test_evaluate_bootstraps_meteor_beside_the_other_metrics():
    from leadrrg.evaluation.evaluate import evaluate_predictions

    records = [
        {"id": f"s{i}", "reference": r, "generated": h}
        for i, (r, h) in enumerate(zip(RAW_REFERENCES, RAW_HYPOTHESES))
    ]
    metrics = evaluate_predictions(
        records,
        bootstrap=40,
        seed=0,
        label_fn=lambda texts: np.full((len(texts), NUM_OBSERVATIONS), np.nan, dtype=np.float32),
    )
    low, high = metrics["meteor_ci"]
    assert low <= metrics["meteor"] <= high and low < high
    assert "meteor_ci" not in metrics["missing"]


def random_labels(rng, n):
    return rng.choice(np.array([1.0, 0.0, -1.0, np.nan], dtype=np.float32), size=(n, NUM_OBSERVATIONS))


@pytest.mark.parametrize("resampled", [False, True])
def test_label_statistics_equal_the_label_metrics(resampled):
    rng = np.random.default_rng(3)
    ref, hyp = random_labels(rng, 40), random_labels(rng, 40)
    weights = next(replicate_weights(40, 1, seed=5))[0] if resampled else np.ones(40)
    drawn = np.repeat(np.arange(40), weights.astype(int))
    expected = {**ce_scores(ref[drawn], hyp[drawn]), **hallucination_scores(ref[drawn], hyp[drawn])}
    statistics = [ClinicalStatistics(ref, hyp), HallucinationStatistics(ref, hyp, prefix="gt_")]
    scores = scores_of(statistics, weights)
    assert len(scores) == 18 + 3
    for name, value in scores.items():
        assert value == pytest.approx(expected[name.removeprefix("gt_")], abs=1e-12), name
    assert "gt_hallucination_rate" in scores and "ce5_example_f1" in scores


def test_replicate_weights_are_seeded_draw_counts():
    first = np.concatenate(list(replicate_weights(10, 150, seed=1)))
    again = np.concatenate(list(replicate_weights(10, 150, seed=1)))
    other = np.concatenate(list(replicate_weights(10, 150, seed=2)))
    assert first.shape == (150, 10)
    assert (first.sum(axis=1) == 10).all() and (first >= 0).all()
    assert np.array_equal(first, again) and not np.array_equal(first, other)
    assert len({tuple(row) for row in first}) > 100  # replicates differ from one another


def test_percentile_interval_and_p_value():
    values = np.arange(1001, dtype=np.float64)
    assert percentile_interval(values) == pytest.approx([25.0, 975.0])
    assert paired_p_value(np.zeros(99), 0.0) == 1.0
    assert paired_p_value(np.full(99, 0.5), 0.5) == pytest.approx(2 / 100)  # never 0
    # 10 of 99 replicates on the far side of zero
    differences = np.concatenate([np.full(10, -0.1), np.full(89, 0.2)])
    assert paired_p_value(differences, 0.2) == pytest.approx(2 * 11 / 100)
    assert paired_p_value(-differences, -0.2) == pytest.approx(2 * 11 / 100)


def test_paired_bootstrap_of_a_system_against_itself_and_a_better_one():
    n = 60
    references = [RAW_REFERENCES[i % 7] for i in range(n)]
    weak = ["The lungs are clear." for _ in range(n)]
    statistics = nlg_statistics(references, weak)
    same = paired_bootstrap(statistics, statistics, n, 200, seed=0)
    assert all(
        entry["difference"] == 0 and entry["ci"] == [0.0, 0.0] and entry["p_value"] == 1.0
        for entry in same.values()
    )
    better = paired_bootstrap(statistics, nlg_statistics(references, references), n, 200, seed=0)
    assert set(better) == set(NLG_NAMES)
    for name, entry in better.items():
        low, high = entry["ci"]
        assert entry["difference"] > 0 and 0 < low <= high, name
        assert entry["p_value"] < 0.05, name


def test_replicate_scores_spread_around_the_point_value():
    rng = np.random.default_rng(0)
    ref, hyp = random_labels(rng, 200), random_labels(rng, 200)
    statistics = [ClinicalStatistics(ref, hyp)]
    samples = replicate_scores(statistics, 200, 300, seed=0)
    point = point_scores(statistics, 200)["ce14_micro_f1"]
    low, high = percentile_interval(samples["ce14_micro_f1"])
    assert samples["ce14_micro_f1"].shape == (300,)
    assert low < point < high and high - low < 0.2
