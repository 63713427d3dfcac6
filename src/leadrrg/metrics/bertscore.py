"""BERTScore (Zhang et al., 2020) as ReXrank computes it, through the `bert-score` package (0.3.13): the
CXR-Report-Metric settings ``BERTScorer(model_type="distilroberta-base", lang="en", rescale_with_baseline=True,
idf=False)``, i.e. layer 5 of distilroberta-base, greedy cosine matching of token embeddings, and the package's
own English baseline for distilroberta-base (``rescale_baseline/en/distilroberta-base.tsv``). The model is read
from a local folder (`metrics.local_models`, ``bertscore/distilroberta-base``); nothing is downloaded.
``bertscore_f1`` is the mean of the per-report rescaled F1."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from leadrrg.errors import LeadrrgError

NUM_LAYERS = 5  # bert-score's model2layers["distilroberta-base"]
BASELINE = "rescale_baseline/en/distilroberta-base.tsv"


def bertscore(
    references: Sequence[str],
    hypotheses: Sequence[str],
    *,
    model_dir: str | Path,
    num_layers: int = NUM_LAYERS,
    device: str = "cpu",
    batch_size: int = 32,
) -> dict:
    """Rescaled BERTScore precision, recall and F1 (means over reports) and ``per_study`` values of each."""
    import bert_score

    if len(references) != len(hypotheses):
        raise LeadrrgError(f"{len(references)} references but {len(hypotheses)} generated reports")
    baseline = Path(bert_score.__file__).parent / BASELINE
    if not baseline.is_file():
        raise LeadrrgError(
            f"bert-score {baseline}: the package's distilroberta-base baseline is missing; reinstall bert-score"
        )
    scorer = bert_score.BERTScorer(
        model_type=str(model_dir),
        num_layers=num_layers,
        lang="en",
        rescale_with_baseline=True,
        baseline_path=str(baseline),
        idf=False,
        batch_size=batch_size,
        device=device,
    )
    # bert-score asks `encode(..., add_prefix_space=True)`, which transformers 5 ignores: without this the first
    # word would lose its leading-space token and scores would differ from transformers 4's (ReXrank's)
    from transformers import AutoTokenizer

    scorer._tokenizer = AutoTokenizer.from_pretrained(str(model_dir), add_prefix_space=True)
    precision, recall, f1 = (
        t.numpy().astype(np.float64) for t in scorer.score(list(hypotheses), list(references))
    )
    per_study = {"bertscore_precision": precision, "bertscore_recall": recall, "bertscore_f1": f1}
    scores: dict = {name: float(values.mean()) for name, values in per_study.items()}
    scores["per_study"] = per_study
    return scores
