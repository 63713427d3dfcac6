"""RaTEScore (Zhao et al., 2024) through the `RaTEScore` package (0.6.0): entities found by the RaTE-NER model,
embedded by BioLORD-2023-C, matched across the two reports with the package's "long" type-affinity matrix;
0.5 when either report has no entity. Both models are read from local folders (`metrics.local_models`,
``ratescore/RaTE-NER-Deberta`` and ``ratescore/BioLORD-2023-C``): nothing is downloaded.

The package splits sentences with medspacy, whose spaCy needs numpy < 2 on Python < 3.12; leadrrg needs
numpy >= 2, so the package (and this metric) is only available on Python >= 3.12 (`AVAILABILITY`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from leadrrg.errors import LeadrrgError

AVAILABILITY = (
    "needs the package RaTEScore on Python >= 3.12 (its medspacy -> spaCy < 3.8 -> thinc needs numpy < 2 on "
    "older Pythons, and leadrrg needs numpy >= 2)"
)


def python_reason() -> str | None:
    """Why RaTEScore cannot run on this Python, or None."""
    return None if sys.version_info >= (3, 12) else f"{AVAILABILITY}; this is Python {sys.version.split()[0]}"


class RaTEScorer:
    """``scorer(references, hypotheses) -> dict``: the RaTEScore package with local model folders."""

    def __init__(
        self, ner_dir: str | Path, encoder_dir: str | Path, *, device: str = "cpu", batch_size: int = 8
    ):
        from RaTEScore import RaTEScore

        self.scorer = RaTEScore(
            bert_model=str(ner_dir),
            eval_model=str(encoder_dir),
            batch_size=batch_size,
            use_gpu=device.startswith("cuda"),
            affinity_matrix="long",
        )

    def __call__(self, references: Sequence[str], hypotheses: Sequence[str]) -> dict:
        return ratescore(references, hypotheses, score=self.scorer.compute_score)


def ratescore(references: Sequence[str], hypotheses: Sequence[str], *, score) -> dict:
    """``ratescore`` (mean) and its ``per_study`` values; `score(candidates, references) -> [float]` is the
    package's ``RaTEScore.compute_score``."""
    if len(references) != len(hypotheses):
        raise LeadrrgError(f"{len(references)} references but {len(hypotheses)} generated reports")
    values = np.asarray(score(list(hypotheses), list(references)), dtype=np.float64)
    return {"ratescore": float(values.mean()), "per_study": {"ratescore": values}}
