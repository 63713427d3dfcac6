"""Report metrics as pure functions ``(references, hypotheses) -> dict``: NLG (`nlg`), clinical efficacy
(`clinical`) and hallucination (`hallucination`). `leadrrg.evaluation.evaluate` runs them all on a preds.jsonl."""

from leadrrg.metrics.clinical import ce_scores
from leadrrg.metrics.hallucination import hallucination_scores
from leadrrg.metrics.nlg import NORMALIZATION, nlg_scores, normalize_report

__all__ = ["NORMALIZATION", "ce_scores", "hallucination_scores", "nlg_scores", "normalize_report"]
