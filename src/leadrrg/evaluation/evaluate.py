"""Score generated reports: NLG metrics on the text, clinical efficacy and hallucination on the labels
that `leadrrg.labeler` finds in the reference and generated reports, and -- when the predictions carry
the image's ground-truth labels (synthetic data) -- clinical efficacy and hallucination against those
under ``gt_`` names.

A prediction record is one line of preds.jsonl: ``{"id": str, "reference": str, "generated": str,
"labels": [14 x 0/1] (optional), "evidence": ... (optional, ignored here)}``.
"""

from __future__ import annotations

import math
import platform
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from leadrrg import __version__, labeler
from leadrrg.constants import NUM_OBSERVATIONS
from leadrrg.errors import LeadrrgError
from leadrrg.labeler.attributes import label_attributes
from leadrrg.metrics.attributes import attribute_scores, degenerate_outputs, degenerate_warning
from leadrrg.metrics.bootstrap import CI_LEVEL, percentile_interval, replicate_scores
from leadrrg.metrics.clinical import ClinicalStatistics, ce_scores
from leadrrg.metrics.hallucination import HallucinationStatistics, hallucination_scores, hedge_scores
from leadrrg.metrics.nlg import NORMALIZATION, java_version, nlg_scores
from leadrrg.metrics.nlg_stats import MeteorStatistics, nlg_statistics
from leadrrg.runs.provenance import package_version

LabelFn = Callable[[Sequence[str]], np.ndarray]


def _record_name(record: dict, index: int) -> str:
    return f"record {index + 1} (id {record['id']!r})" if "id" in record else f"record {index + 1}"


LABEL_VALUES = (1, 0, -1)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def ground_truth_labels(records: Sequence[dict]) -> np.ndarray | None:
    """(N, 14) float ground-truth labels (null -> NaN) when every record has ``labels``; None when none
    has; LeadrrgError when only some have, or a row is not 14 numbers."""
    with_labels = [i for i, record in enumerate(records) if record.get("labels") is not None]
    if not with_labels:
        return None
    if len(with_labels) != len(records):
        without = next(i for i, record in enumerate(records) if record.get("labels") is None)
        raise LeadrrgError(
            f"{len(with_labels)} of {len(records)} predictions carry 'labels' but {_record_name(records[without], without)} "
            "does not; give ground-truth labels for every study or for none"
        )
    rows = []
    for index, record in enumerate(records):
        labels = record["labels"]
        valid = isinstance(labels, list) and len(labels) == NUM_OBSERVATIONS
        valid = valid and all(
            value is None or (_is_number(value) and value in LABEL_VALUES) for value in labels
        )
        if not valid:
            raise LeadrrgError(
                f"{_record_name(record, index)}: 'labels' must be a list of {NUM_OBSERVATIONS} values, each 1, 0, -1 "
                f"or null (CheXpert order: positive, negative, uncertain, not mentioned), got {labels!r}"
            )
        rows.append([math.nan if value is None else float(value) for value in labels])
    return np.asarray(rows, dtype=np.float32)


def _versions(java: str | None, meteor_missing: str | None) -> dict[str, str | None]:
    return {
        "leadrrg": __version__,
        "pycocoevalcap": package_version("pycocoevalcap"),
        "numpy": np.__version__,
        "python": platform.python_version(),
        "java": java if java is not None else f"missing ({meteor_missing or 'java not found on PATH'})",
    }


def report_texts(records: Sequence[dict]) -> tuple[list[str], list[str]]:
    """The reference and generated reports of `records`; LeadrrgError when there are none or one is not
    a string."""
    if not records:
        raise LeadrrgError("no predictions to evaluate (the predictions are empty)")
    for index, record in enumerate(records):
        for key in ("reference", "generated"):
            if not isinstance(record.get(key), str):
                raise LeadrrgError(f"{_record_name(record, index)}: '{key}' must be a string")
    return [record["reference"] for record in records], [record["generated"] for record in records]


def label_with(label_fn: LabelFn | None, reports: list[str]) -> np.ndarray:
    """(len(reports), 14) labels of `reports` by `label_fn` (default: `leadrrg.labeler.label_reports`)."""
    labels = np.asarray((label_fn or labeler.label_reports)(reports), dtype=np.float32)
    if labels.shape != (len(reports), NUM_OBSERVATIONS):
        raise RuntimeError(f"the labeler returned shape {labels.shape} for {len(reports)} reports")
    return labels


def _label_scores(ref_labels: np.ndarray, hyp_labels: np.ndarray, prefix: str = "") -> dict[str, Any]:
    """CE and hallucination metrics of one pair of label arrays, names prefixed by `prefix`."""
    scores = {
        **ce_scores(ref_labels, hyp_labels),
        **hallucination_scores(ref_labels, hyp_labels),
        **hedge_scores(ref_labels, hyp_labels),
    }
    return {f"{prefix}{name}": value for name, value in scores.items()}


def bootstrap_statistics(
    references: list[str],
    generated: list[str],
    label_pairs: dict[str, tuple[np.ndarray, np.ndarray]],
    *,
    cider: bool,
    chexbert_pair: tuple[np.ndarray, np.ndarray] | None = None,
) -> list:
    """Per-study statistics of every bootstrapped metric: NLG (METEOR: `meteor_replicates`); for every
    ``prefix -> (reference labels, generated labels)``, CE and hallucination under that prefix; and
    CheXbert's CE (``chexbert14_*``) when `chexbert_pair` is given."""
    statistics = nlg_statistics(references, generated, cider=cider)
    for prefix, (ref_labels, hyp_labels) in label_pairs.items():
        statistics.append(ClinicalStatistics(ref_labels, hyp_labels, prefix=f"{prefix}ce"))
        statistics.append(HallucinationStatistics(ref_labels, hyp_labels, prefix=prefix))
    if chexbert_pair is not None:
        statistics.append(ClinicalStatistics(*chexbert_pair, prefix="chexbert"))
    return statistics


def _chexbert_scores(chexbert_fn: LabelFn, references: list[str], generated: list[str]) -> tuple[dict, tuple]:
    """CheXbert's CE metrics (``chexbert14_*``, ``chexbert5_*``, ``chexbert_per_observation``) and the
    (reference, generated) label pair they come from."""
    labels = label_with(chexbert_fn, references + generated)
    pair = (labels[: len(references)], labels[len(references) :])
    scores = {f"chexbert{name.removeprefix('ce')}": value for name, value in ce_scores(*pair).items()}
    return scores, pair


def meteor_replicates(
    references: list[str], generated: list[str], bootstrap: int, seed: int
) -> tuple[np.ndarray | None, str | None]:
    """METEOR on the same `bootstrap` replicates as the other metrics (meteor-1.5.jar aggregates each one,
    `metrics.nlg_stats.MeteorStatistics`): (values, None), or (None, reason) when the jar fails."""
    try:
        statistics = MeteorStatistics(references, generated)
        return replicate_scores([statistics], len(references), bootstrap, seed)["meteor"], None
    except (OSError, ValueError) as exc:
        return None, f"METEOR jar failed during the bootstrap ({type(exc).__name__}: {exc})"


def _with_intervals(metrics: dict[str, Any], intervals: dict[str, list[float]]) -> dict[str, Any]:
    """`metrics` with ``<metric>_ci`` inserted right after each metric that has an interval."""
    out: dict[str, Any] = {}
    for name, value in metrics.items():
        out[name] = value
        if name in intervals:
            out[f"{name}_ci"] = intervals[name]
        elif name == "meteor":
            out["meteor_ci"] = None
    return out


def evaluate_predictions(
    records: Sequence[dict],
    *,
    split: str | None = None,
    section: str = "findings",
    meteor: bool = True,
    label_fn: LabelFn | None = None,
    bootstrap: int = 0,
    seed: int = 0,
    chexbert_fn: LabelFn | None = None,
    field_fn: Callable[[list[str], list[str]], dict] | None = None,
) -> dict[str, Any]:
    """All metrics of one set of predictions.

    `label_fn` labels reports ((N,) texts -> (N, 14) float 1/0/-1/NaN); default
    `leadrrg.labeler.label_reports`. Returns a flat dict of named metrics (`metrics.nlg`,
    `metrics.clinical`, `metrics.hallucination`; the same CE and hallucination metrics prefixed ``gt_``
    when records carry ground-truth ``labels``), the nested per-observation dicts, ``missing``
    (metric -> reason) and ``meta`` (split, section, normalisation, number of studies, tool versions).

    With ``bootstrap=R`` > 0, every scalar rate and score gains ``<metric>_ci`` = [low, high],
    its 95% percentile interval over R study-level bootstrap replicates drawn with `seed`
    (`metrics.bootstrap`); METEOR's replicates are aggregated by its jar, and ``meteor_ci`` is None (the
    reason in ``missing``) when METEOR was not computed.

    `chexbert_fn` (e.g. `labeler.chexbert.CheXbertLabeler`) adds CE metrics from CheXbert's labels of
    the same reports, named ``chexbert14_*`` / ``chexbert5_*`` beside ours (never mixed into them).

    `field_fn` (`metrics.field.field_metrics` with its directory bound) adds BERTScore, RadGraph-F1 and RaTEScore
    (``{"scores", "missing", "statistics"}``); what it cannot compute lands in ``missing`` with the reason."""
    references, generated = report_texts(records)
    ground_truth = ground_truth_labels(records)
    labels = label_with(label_fn, references + generated)
    label_pairs = {"": (labels[: len(records)], labels[len(records) :])}
    if ground_truth is not None:
        label_pairs["gt_"] = (ground_truth, label_pairs[""][1])

    metrics: dict[str, Any] = {}
    nlg = nlg_scores(references, generated, meteor=meteor)
    missing: dict[str, str] = nlg.pop("missing")
    metrics.update(nlg)
    for prefix, (ref_labels, hyp_labels) in label_pairs.items():
        metrics.update(_label_scores(ref_labels, hyp_labels, prefix))
    metrics.update(attribute_metrics(records, references, generated))
    chexbert_pair = None
    if chexbert_fn is not None:
        chexbert_scores, chexbert_pair = _chexbert_scores(chexbert_fn, references, generated)
        metrics.update(chexbert_scores)
    field = field_fn(references, generated) if field_fn is not None else None
    if field is not None:
        metrics.update(field["scores"])
        missing.update(field["missing"])
    if bootstrap > 0:
        statistics = bootstrap_statistics(
            references,
            generated,
            label_pairs,
            cider=metrics["cider"] is not None,
            chexbert_pair=chexbert_pair,
        ) + (field["statistics"] if field is not None else [])
        metrics = _bootstrapped(metrics, missing, statistics, references, generated, bootstrap, seed)

    metrics["missing"] = missing
    metrics["meta"] = {
        "split": split,
        "section": section,
        "num_studies": len(records),
        "predictions_weights_sha256": predictions_weights(records),
        "normalization": NORMALIZATION,
        "reference_labels": "leadrrg.labeler on the reference reports",
        "ground_truth_labels": ground_truth is not None,
        "chexbert": getattr(chexbert_fn, "provenance", {}) if chexbert_fn is not None else None,
        "field_metrics": field is not None,
        "bootstrap": _bootstrap_meta(bootstrap, seed),
        "versions": _versions(java_version(), missing.get("meteor")),
    }
    return metrics


def _bootstrap_meta(bootstrap: int, seed: int) -> dict[str, Any] | None:
    if bootstrap <= 0:
        return None
    return {"replicates": bootstrap, "seed": seed, "level": CI_LEVEL, "method": BOOTSTRAP_METHOD}


def predictions_weights(records: Sequence[dict]) -> list[str]:
    """The weights checksums the predictions say they were made with (`made_by` of `leadrrg generate`), sorted;
    empty when they do not say. An export uses it to keep another run's scores out of this run's model card."""
    found = {r["made_by"].get("weights_sha256") for r in records if isinstance(r.get("made_by"), dict)}
    return sorted(str(checksum) for checksum in found if checksum)


def attribute_truths(records: Sequence[dict]) -> list[dict] | None:
    """The image's findings with their attributes (`findings`, SynthCXR) when every record carries them, else None."""
    truths = [record.get("findings") for record in records]
    return truths if truths and all(isinstance(truth, dict) for truth in truths) else None


def attribute_metrics(records: Sequence[dict], references: list[str], generated: list[str]) -> dict[str, Any]:
    """Side and severity of the findings the reports assert (`metrics.attributes`): against the reference
    report's extraction, and ``gt_``-prefixed against the image's findings when the records carry them; plus
    ``degenerate`` (empty, punctuation-only and identical reports) and ``warnings``."""
    hypotheses = label_attributes(generated)
    metrics = attribute_scores(hypotheses, label_attributes(references))
    truths = attribute_truths(records)
    if truths is not None:
        metrics.update({f"gt_{name}": value for name, value in attribute_scores(hypotheses, truths).items()})
    metrics["degenerate"] = degenerate_outputs(generated)
    warning = degenerate_warning(metrics["degenerate"])
    metrics["warnings"] = [warning] if warning else []
    return metrics


def _bootstrapped(
    metrics: dict[str, Any],
    missing: dict[str, str],
    statistics: list,
    references: list[str],
    generated: list[str],
    bootstrap: int,
    seed: int,
) -> dict[str, Any]:
    """`metrics` with the 95% interval of every bootstrapped metric (METEOR's from its jar, its reason in
    `missing` when there is none)."""
    samples = replicate_scores(statistics, len(references), bootstrap, seed)
    if metrics["meteor"] is not None:
        values, reason = meteor_replicates(references, generated, bootstrap, seed)
        if values is not None:
            samples["meteor"] = values
        else:
            missing["meteor_ci"] = reason
    else:
        missing["meteor_ci"] = f"no METEOR score: {missing['meteor']}"
    return _with_intervals(metrics, {name: percentile_interval(v) for name, v in samples.items()})


BOOTSTRAP_METHOD = (
    "study-level resampling with replacement (numpy default_rng(seed)); percentile interval; "
    "per-study statistics re-aggregated per replicate (leadrrg.metrics.bootstrap)"
)


def _value(metrics: dict[str, Any], name: str) -> str:
    value = metrics.get(name)
    if value is None:
        reason = metrics.get("missing", {}).get(name)
        return f"missing ({reason})" if reason else "missing"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _interval(metrics: dict[str, Any], name: str) -> str:
    """ "  [low, high]" when `name` has a bootstrap interval, else ""."""
    interval = metrics.get(f"{name}_ci")
    return f"  [{interval[0]:.4f}, {interval[1]:.4f}]" if interval else ""


def _ce_rows(metrics: dict[str, Any], prefix: str, labeler: str = "ce") -> list[str]:
    rows = [f"  {'':<18}{'precision':>10}{'recall':>10}{'f1':>10}"]
    for subset in (f"{labeler}14", f"{labeler}5"):
        for average in ("micro", "macro", "example"):
            key = f"{prefix}{subset}_{average}"
            cells = "".join(
                f"{_value(metrics, f'{key}_{part}'):>10}" for part in ("precision", "recall", "f1")
            )
            rows.append(f"  {subset + '_' + average:<18}{cells}{_interval(metrics, f'{key}_f1')}")
    return rows


def _hallucination_rows(metrics: dict[str, Any], prefix: str) -> list[str]:
    names = ("hallucination_rate", "reports_with_hallucination", "omission_rate")
    return [
        f"  {name:<28}{_value(metrics, prefix + name):>10}{_interval(metrics, prefix + name)}"
        for name in names
    ]


def _attribute_rows(metrics: dict[str, Any], prefix: str) -> list[str]:
    rows = []
    for name in (
        "laterality_accuracy",
        "severity_accuracy",
        "attribute_hallucination_rate",
        "laterality_omission",
    ):
        count = metrics.get(prefix + {"attribute_hallucination_rate": "attribute_n"}.get(name, name + "_n"))
        rows.append(f"  {name:<28}{_value(metrics, prefix + name):>10}  (n {count})")
    return rows


def format_table(metrics: dict[str, Any]) -> str:
    """The metrics of `evaluate_predictions` as a plain-text table for the console."""
    meta = metrics.get("meta", {})
    header = f"{meta.get('num_studies', '?')} studies"
    if meta.get("split"):
        header += f", split {meta['split']}"
    if meta.get("section"):
        header += f", section {meta['section']}"
    lines = [header, "NLG (R2Gen-normalised text, pycocoevalcap)"]
    for name in ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider"):
        lines.append(f"  {name:<28}{_value(metrics, name):>10}{_interval(metrics, name)}")
    lines.append("Clinical efficacy (labeler: reference vs generated)")
    lines += _ce_rows(metrics, "")
    lines.append("Hallucination (vs reference labels, 13 findings)")
    lines += _hallucination_rows(metrics, "")
    if "chexbert14_micro_f1" in metrics:
        lines.append("Clinical efficacy (CheXbert: reference vs generated)")
        lines += _ce_rows(metrics, "", labeler="chexbert")
    if "gt_ce14_micro_f1" in metrics:
        lines.append("Clinical efficacy (ground-truth labels vs generated)")
        lines += _ce_rows(metrics, "gt_")
        lines.append("Hallucination (vs ground-truth labels, 13 findings)")
        lines += _hallucination_rows(metrics, "gt_")
    if meta.get("field_metrics"):
        lines.append("Metrics papers report (local models; docs/METRICS.md)")
        for name in ("bertscore_f1", "radgraph_partial_f1", "ratescore", "chexbert14_micro_f1"):
            lines.append(f"  {name:<28}{_value(metrics, name):>10}{_interval(metrics, name)}")
    lines.append("Side and size of asserted findings (vs the reference report's)")
    lines += _attribute_rows(metrics, "")
    if "gt_laterality_accuracy" in metrics:
        lines.append("Side and size of asserted findings (vs the image's findings)")
        lines += _attribute_rows(metrics, "gt_")
    lines += [f"warning: {warning}" for warning in metrics.get("warnings", [])]
    return "\n".join(lines)
