"""Per-study statistics of BLEU-1..4, ROUGE-L and CIDEr, for the bootstrap (`metrics.bootstrap`).

Each class is built once from the normalised reports (`nlg.normalize_report`) and then scores any study
weighting, giving what pycocoevalcap 1.2 gives on the resampled test set (a study drawn k times counts
k times, as k copies under distinct ids would); with all weights 1 it gives `nlg.nlg_scores`' numbers
(tested to 1e-9, the differences are float summation order):

- **BLEU** is a corpus statistic: per study the hypothesis length, the reference length (one reference,
  so pycocoevalcap's "closest" length is that reference's) and, for n = 1..4, the number of hypothesis
  n-grams ("guess") and of clipped matches ("correct"). Weighted sums of these go through
  pycocoevalcap's formula (its 1e-9 / 1e-15 smoothing and brevity penalty included).
- **ROUGE-L** is the mean of per-study scores, computed once by pycocoevalcap's ``Rouge``.
- **CIDEr** (CIDEr-D's sibling that pycocoevalcap calls CIDEr) weighs n-grams by an idf taken from the
  references *of the scored set*, so a replicate changes every study's score. With one reference per
  study the score of study i is ``10 * mean_n pen_i * sum_g min(h,r) r idf^2 / sqrt(sum_g h^2 idf^2 *
  sum_g r^2 idf^2)`` (h, r: the n-gram counts of hypothesis and reference, idf = log(sum w) -
  log(max(1, df_w)), df_w the weighted number of references containing g, pen_i the length penalty
  of pycocoevalcap, which counts bigrams), so the counts are stored once as flat arrays and each
  replicate recomputes only the idf and three weighted sums per study and order.

- **METEOR** is a corpus aggregate that meteor-1.5.jar computes from per-segment statistics, and
  reproducing it outside the jar would not be exact. So the jar does both halves: each study's statistics
  line (its ``SCORE`` answer) is computed once, and a replicate sends the jar one ``EVAL`` with every study's
  line repeated as often as it was drawn; the jar's aggregate is the replicate's METEOR, with all weights 1
  exactly pycocoevalcap's number (the same request it makes). `MeteorStatistics` needs the process's
  METEOR JVM (`nlg`); an ``EVAL`` costs a few milliseconds, no alignment is redone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from leadrrg.metrics.nlg import normalize_report

MAX_N = 4
SIGMA = 6.0  # pycocoevalcap's CIDEr length-penalty width


def _ngram_counts(words: list[str], n_max: int = MAX_N) -> dict[tuple[str, ...], int]:
    counts: dict[tuple[str, ...], int] = {}
    for n in range(1, n_max + 1):
        for i in range(len(words) - n + 1):
            gram = tuple(words[i : i + n])
            counts[gram] = counts.get(gram, 0) + 1
    return counts


def _normalised(
    references: Sequence[str], hypotheses: Sequence[str]
) -> tuple[list[list[str]], list[list[str]]]:
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    return (
        [normalize_report(text).split() for text in references],
        [normalize_report(text).split() for text in hypotheses],
    )


class BleuStatistics:
    """BLEU-1..4 (pycocoevalcap ``Bleu(4)``, option "closest") from per-study counts."""

    def __init__(self, references: Sequence[str], hypotheses: Sequence[str]):
        refs, hyps = _normalised(references, hypotheses)
        # columns: hypothesis length, reference length, guess_1..4, correct_1..4
        stats = np.zeros((len(refs), 2 + 2 * MAX_N), dtype=np.float64)
        for i, (ref, hyp) in enumerate(zip(refs, hyps)):
            ref_counts = _ngram_counts(ref)
            stats[i, 0], stats[i, 1] = len(hyp), len(ref)
            for n in range(1, MAX_N + 1):
                stats[i, 1 + n] = max(0, len(hyp) - n + 1)
            for gram, count in _ngram_counts(hyp).items():
                stats[i, 1 + MAX_N + len(gram)] += min(count, ref_counts.get(gram, 0))
        self.stats = stats  # (N, 10)

    def scores(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        totals = weights @ self.stats  # (B, 10)
        testlen, reflen = totals[:, 0], totals[:, 1]
        guess, correct = totals[:, 2 : 2 + MAX_N], totals[:, 2 + MAX_N :]
        log_precision = np.log((correct + 1e-15) / (guess + 1e-9))  # (B, 4)
        bleus = np.exp(np.cumsum(log_precision, axis=1) / np.arange(1, MAX_N + 1))
        ratio = (testlen + 1e-15) / (reflen + 1e-9)
        penalty = np.where(ratio < 1, np.exp(1 - 1 / np.minimum(ratio, 1)), 1.0)
        bleus = bleus * penalty[:, None]
        return {f"bleu_{n}": bleus[:, n - 1] for n in range(1, MAX_N + 1)}


class RougeStatistics:
    """ROUGE-L (pycocoevalcap ``Rouge``): the weighted mean of per-study scores."""

    def __init__(self, references: Sequence[str], hypotheses: Sequence[str]):
        from pycocoevalcap.rouge.rouge import Rouge

        refs, hyps = _normalised(references, hypotheses)
        rouge = Rouge()
        self.per_study = np.array(
            [rouge.calc_score([" ".join(h)], [" ".join(r)]) for r, h in zip(refs, hyps)], dtype=np.float64
        )

    def scores(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        return {"rouge_l": weights @ self.per_study / weights.sum(axis=1)}


class CiderStatistics:
    """CIDEr (pycocoevalcap ``Cider``, n = 4, sigma = 6) with the idf recomputed per replicate."""

    def __init__(self, references: Sequence[str], hypotheses: Sequence[str]):
        refs, hyps = _normalised(references, hypotheses)
        self.num_studies = len(refs)
        vocabulary: dict[tuple[str, ...], int] = {}
        ref_rows, ref_cols, ref_vals = [], [], []  # (study, n-gram) of every reference n-gram, count r
        hyp_rows, hyp_cols, hyp_vals, match_vals = [], [], [], []  # hypothesis n-grams: h, min(h, r) * r
        penalty = np.empty(len(refs))
        for i, (ref, hyp) in enumerate(zip(refs, hyps)):
            ref_counts = _ngram_counts(ref)
            for gram, count in ref_counts.items():
                ref_rows.append(i)
                ref_cols.append(vocabulary.setdefault(gram, len(vocabulary)))
                ref_vals.append(count)
            for gram, count in _ngram_counts(hyp).items():
                r = ref_counts.get(gram, 0)
                hyp_rows.append(i)
                hyp_cols.append(vocabulary.setdefault(gram, len(vocabulary)))
                hyp_vals.append(count)
                match_vals.append(min(count, r) * r)
            # pycocoevalcap's "length" counts bigrams (its n == 1 is the 2-gram slot)
            delta = max(0, len(hyp) - 1) - max(0, len(ref) - 1)
            penalty[i] = math.e ** (-(delta**2) / (2 * SIGMA**2))
        orders = np.array([len(gram) for gram in vocabulary], dtype=np.int64)  # (G,)
        self.vocabulary_size = len(vocabulary)
        self.ref_rows = np.array(ref_rows, dtype=np.int64)
        self.ref_cols = np.array(ref_cols, dtype=np.int64)
        self.ref_sq = np.array(ref_vals, dtype=np.float64) ** 2
        self.ref_keys = self.ref_rows * MAX_N + orders[self.ref_cols] - 1  # (study, order) slot
        self.hyp_cols = np.array(hyp_cols, dtype=np.int64)
        self.hyp_sq = np.array(hyp_vals, dtype=np.float64) ** 2
        self.match = np.array(match_vals, dtype=np.float64)
        self.hyp_keys = np.array(hyp_rows, dtype=np.int64) * MAX_N + orders[self.hyp_cols] - 1
        self.penalty = penalty

    def _per_study(self, weights: np.ndarray) -> np.ndarray:
        """(N,) weights of one replicate -> (N,) CIDEr of every study under that replicate's idf."""
        slots = self.num_studies * MAX_N
        document_frequency = np.bincount(
            self.ref_cols, weights=weights[self.ref_rows], minlength=self.vocabulary_size
        )
        idf_sq = (math.log(weights.sum()) - np.log(np.maximum(1.0, document_frequency))) ** 2  # (G,)
        dot = np.bincount(self.hyp_keys, weights=self.match * idf_sq[self.hyp_cols], minlength=slots)
        hyp_norm = np.sqrt(
            np.bincount(self.hyp_keys, weights=self.hyp_sq * idf_sq[self.hyp_cols], minlength=slots)
        )
        ref_norm = np.sqrt(
            np.bincount(self.ref_keys, weights=self.ref_sq * idf_sq[self.ref_cols], minlength=slots)
        )
        both = (hyp_norm != 0) & (ref_norm != 0)
        similarity = np.where(both, dot / np.where(both, hyp_norm * ref_norm, 1.0), dot)
        return similarity.reshape(self.num_studies, MAX_N).mean(axis=1) * self.penalty * 10.0

    def scores(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        values = np.array([w @ self._per_study(w) / w.sum() for w in weights])
        return {"cider": values}


class MeteorStatistics:
    """METEOR under study weights, aggregated by meteor-1.5.jar itself (see the module docstring). Raises
    OSError / ValueError when the jar cannot answer (the caller reports the interval as missing)."""

    def __init__(self, references: Sequence[str], hypotheses: Sequence[str]):
        from leadrrg.metrics.nlg import meteor_scorer

        self.scorer = meteor_scorer()
        with self.scorer.lock:
            self.lines = [  # the jar's statistics line of each study, as pycocoevalcap's compute_score asks
                self.scorer._stat(normalize_report(h), [normalize_report(r)])
                for r, h in zip(references, hypotheses, strict=True)
            ]

    def aggregate(self, counts: np.ndarray) -> float:
        """The jar's corpus METEOR with study i's statistics counted counts[i] times."""
        lines = [line for line, k in zip(self.lines, counts.astype(int)) for _ in range(k)]
        process = self.scorer.meteor_p
        with self.scorer.lock:
            process.stdin.write(("EVAL" + "".join(f" ||| {line}" for line in lines) + "\n").encode())
            process.stdin.flush()
            for _ in lines:  # per-segment scores, then the aggregate
                process.stdout.readline()
            return float(process.stdout.readline().strip())

    def scores(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        return {"meteor": np.array([self.aggregate(row) for row in weights])}


def nlg_statistics(
    references: Sequence[str], hypotheses: Sequence[str], *, cider: bool = True
) -> list[BleuStatistics | RougeStatistics | CiderStatistics]:
    """The per-study statistics of the NLG metrics but METEOR (`MeteorStatistics`, which needs Java): BLEU and
    ROUGE-L; CIDEr unless ``cider=False`` (e.g. when it is undefined because every reference is empty)."""
    statistics: list = [BleuStatistics(references, hypotheses), RougeStatistics(references, hypotheses)]
    if cider:
        statistics.append(CiderStatistics(references, hypotheses))
    return statistics
