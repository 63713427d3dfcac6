"""The model-based metrics papers report, from the local metrics directory (`metrics.local_models`):
``bertscore_f1`` (`metrics.bertscore`), ``radgraph_partial_f1`` (`metrics.radgraph`), ``ratescore``
(`metrics.ratescore`) and CheXbert's CE (``chexbert14_*``, `labeler.chexbert`). A metric whose package, Python
or weights are missing, or whose package fails, is reported in ``missing`` with the reason; none is guessed."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from leadrrg.errors import LeadrrgError
from leadrrg.metrics import bertscore, radgraph, ratescore
from leadrrg.metrics.local_models import PerStudyMean, folder_reason, model_folder, package_reason

FIELD_METRICS = ("bertscore_f1", "radgraph_partial_f1", "ratescore", "chexbert14_micro_f1")
PACKAGES = {"bertscore_f1": ("bert_score", "bert-score"), "radgraph_partial_f1": ("radgraph", "radgraph"),
            "ratescore": ("RaTEScore", "RaTEScore")}  # fmt: skip
FOLDER_KEYS = {
    "bertscore_f1": ("bertscore",),
    "radgraph_partial_f1": ("radgraph",),
    "ratescore": ("ratescore_ner", "ratescore_encoder"),
    "chexbert14_micro_f1": ("chexbert", "chexbert_bert"),
}


def unavailable(name: str, root: Path | None) -> str | None:
    """Why metric `name` cannot run (Python, package, weights), or None."""
    reasons = []
    if name == "ratescore":
        reasons.append(ratescore.python_reason())
    if name in PACKAGES and not any(reasons):
        reasons.append(package_reason(*PACKAGES[name]))
    reasons += [folder_reason(root, key) for key in FOLDER_KEYS[name]]
    return "; ".join(reason for reason in reasons if reason) or None


def chexbert_labeler(root: Path | None, device: str = "cpu"):
    """(CheXbertLabeler from ``chexbert/chexbert.pth`` and ``chexbert/bert-base-uncased``, None), or (None, reason)."""
    reason = unavailable("chexbert14_micro_f1", root)
    if reason is not None:
        return None, reason
    from leadrrg.labeler.chexbert import CheXbertLabeler

    checkpoint = model_folder(root, "chexbert") / "chexbert.pth"
    return CheXbertLabeler(checkpoint, model_folder(root, "chexbert_bert"), device=device), None


def _failed(name: str, exc: Exception) -> str:
    from importlib.metadata import PackageNotFoundError, version

    def package_version(package: str) -> str:
        try:
            return version(package)
        except PackageNotFoundError:
            return "(version unknown)"

    package = PACKAGES[name][1]
    message = " ".join(str(exc).split())[:300]
    return (
        f"{package} {package_version(package)} failed ({type(exc).__name__}: {message}); needs {package} "
        f"compatible with transformers {package_version('transformers')}"
    )


def _run(name: str, root: Path, references: list[str], hypotheses: list[str], device: str) -> dict:
    if name == "bertscore_f1":
        return bertscore.bertscore(
            references, hypotheses, model_dir=model_folder(root, "bertscore"), device=device
        )
    if name == "radgraph_partial_f1":
        annotate = radgraph.RadGraphAnnotator(model_folder(root, "radgraph"), device=device)
        return radgraph.radgraph_partial_f1(references, hypotheses, annotate=annotate)
    scorer = ratescore.RaTEScorer(
        model_folder(root, "ratescore_ner"), model_folder(root, "ratescore_encoder"), device=device
    )
    return scorer(references, hypotheses)


def field_metrics(
    references: Sequence[str], hypotheses: Sequence[str], *, root: Path | None, device: str = "cpu"
) -> dict:
    """{"scores": {metric: value}, "missing": {metric: reason}, "statistics": [bootstrap statistics]} of
    BERTScore, RadGraph-F1 (partial) and RaTEScore (CheXbert: `chexbert_labeler`)."""
    scores: dict = {}
    missing: dict[str, str] = {}
    statistics = []
    for name in FIELD_METRICS[:3]:
        reason = unavailable(name, root)
        if reason is not None:
            missing[name] = reason
            continue
        assert root is not None
        try:
            result = _run(name, root, list(references), list(hypotheses), device)
        except LeadrrgError:
            raise
        except Exception as exc:  # the package's own failure: report it, do not guess
            missing[name] = _failed(name, exc)
            continue
        statistics.append(PerStudyMean(result.pop("per_study")))
        scores.update(result)
    return {"scores": scores, "missing": missing, "statistics": statistics}
