"""Paired comparison of two systems' predictions on the same studies (`leadrrg compare`): per bootstrapped
metric of `leadrrg.evaluation.evaluate` the difference B - A, its 95% percentile interval over paired study-level
replicates and a two-sided paired-bootstrap p-value (`metrics.bootstrap.paired_bootstrap`); CheXbert's CE
beside ours when a local CheXbert is given."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from leadrrg.errors import LeadrrgError
from leadrrg.evaluation.evaluate import (
    LabelFn,
    bootstrap_statistics,
    ground_truth_labels,
    label_with,
    report_texts,
)
from leadrrg.metrics.bootstrap import paired_bootstrap, point_scores


def _names(ids: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(repr(i) for i in ids[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


def _by_id(records: Sequence[dict], name: str) -> dict[str, dict]:
    """`records` keyed by study id; LeadrrgError for a record without an id or an id given twice."""
    by_id: dict[str, dict] = {}
    for index, record in enumerate(records):
        if "id" not in record:
            raise LeadrrgError(f"{name}: record {index + 1} has no 'id'; compare pairs studies by id")
        key = str(record["id"])
        if key in by_id:
            raise LeadrrgError(f"{name}: study {key!r} appears twice; compare needs one prediction per study")
        by_id[key] = record
    return by_id


def pair_records(
    records_a: Sequence[dict], records_b: Sequence[dict], names: tuple[str, str] = ("A", "B")
) -> tuple[list[dict], list[dict]]:
    """The records of both systems in the same study order (A's). LeadrrgError naming the studies present
    in only one file, or the first study whose reference report differs between the files."""
    by_a, by_b = _by_id(records_a, names[0]), _by_id(records_b, names[1])
    only_a = [key for key in by_a if key not in by_b]
    only_b = [key for key in by_b if key not in by_a]
    if only_a or only_b:
        parts = [
            f"{len(ids)} only in {name} ({_names(ids)})"
            for ids, name in ((only_a, names[0]), (only_b, names[1]))
            if ids
        ]
        raise LeadrrgError(
            f"the two prediction files must hold the same studies, but {len(only_a) + len(only_b)} differ: "
            + "; ".join(parts)
        )
    for key, record in by_a.items():
        if record.get("reference") != by_b[key].get("reference"):
            raise LeadrrgError(
                f"study {key!r} has a different reference report in {names[0]} and {names[1]}; "
                "compare needs predictions for the same references"
            )
    return list(by_a.values()), [by_b[key] for key in by_a]


def compare_predictions(
    records_a: Sequence[dict],
    records_b: Sequence[dict],
    *,
    bootstrap: int = 1000,
    seed: int = 0,
    label_fn: LabelFn | None = None,
    chexbert_fn: LabelFn | None = None,
    names: tuple[str, str] = ("A", "B"),
    field_fn=None,
) -> dict[str, dict[str, Any]]:
    """Paired comparison of two systems' predictions on the same studies (matched by id).

    Returns ``{metric: {"difference": B - A, "ci": [low, high], "p_value": p, "a": A, "b": B}}`` for every
    bootstrapped metric of `evaluate_predictions` (NLG but METEOR, CE and hallucination, ``gt_`` ones
    when both files carry the same ground-truth labels): the 95% percentile interval of the difference
    over `bootstrap` paired study-level replicates and its two-sided paired-bootstrap p-value
    (`metrics.bootstrap.paired_bootstrap`). With `chexbert_fn` (a `CheXbertLabeler`) CheXbert's CE metrics
    (``chexbert14_*``, ``chexbert5_*``) are compared too, and with `field_fn` (`metrics.field.field_metrics` bound to
    its folder) BERTScore, RadGraph-F1 and RaTEScore, where available."""
    if bootstrap < 1:
        raise LeadrrgError(f"--bootstrap must be a positive number of replicates, got {bootstrap}")
    records_a, records_b = pair_records(records_a, records_b, names)
    references, generated_a = report_texts(records_a)
    _, generated_b = report_texts(records_b)
    ground_truth = ground_truth_labels(records_a)
    ground_truth_b = ground_truth_labels(records_b)
    if (ground_truth is None) != (ground_truth_b is None) or (
        ground_truth is not None and not np.array_equal(ground_truth, ground_truth_b, equal_nan=True)
    ):
        raise LeadrrgError(
            f"{names[0]} and {names[1]} carry different ground-truth 'labels'; give the same labels in both or none"
        )
    n = len(references)
    labels = label_with(label_fn, references + generated_a + generated_b)
    ref_labels, hyp_a, hyp_b = labels[:n], labels[n : 2 * n], labels[2 * n :]
    cider = any(text.strip() for text in references)

    def pairs(hyp_labels: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        out = {"": (ref_labels, hyp_labels)}
        if ground_truth is not None:
            out["gt_"] = (ground_truth, hyp_labels)
        return out

    chexbert_a = chexbert_b = None
    if chexbert_fn is not None:
        read = label_with(chexbert_fn, references + generated_a + generated_b)
        chexbert_a, chexbert_b = (read[:n], read[n : 2 * n]), (read[:n], read[2 * n :])
    statistics_a = bootstrap_statistics(
        references, generated_a, pairs(hyp_a), cider=cider, chexbert_pair=chexbert_a
    )
    statistics_b = bootstrap_statistics(
        references, generated_b, pairs(hyp_b), cider=cider, chexbert_pair=chexbert_b
    )
    if field_fn is not None:
        statistics_a += field_fn(references, generated_a)["statistics"]
        statistics_b += field_fn(references, generated_b)["statistics"]
    result = paired_bootstrap(statistics_a, statistics_b, n, bootstrap, seed)
    values_a, values_b = point_scores(statistics_a, n), point_scores(statistics_b, n)
    for name, entry in result.items():
        entry["a"], entry["b"] = values_a[name], values_b[name]
    return result


# The rows `leadrrg compare` prints by default (`--all`: every metric): the metrics papers report, each also as
# its ground-truth (`gt_`) and CheXbert variant when the result has them, and any model-based score.
HEADLINE = (
    "bleu_4",
    "rouge_l",
    "cider",
    "ce14_micro_f1",
    "ce14_macro_f1",
    "ce5_micro_f1",
    "ce5_macro_f1",
    "hallucination_rate",
    "reports_with_hallucination",
    "chexbert14_micro_f1",
    "chexbert14_macro_f1",
    "chexbert5_micro_f1",
    "chexbert5_macro_f1",
)
HEADLINE_PREFIXES = ("radgraph", "bertscore", "ratescore", "green", "radcliq", "semb")


def is_headline(metric: str) -> bool:
    name = metric.removeprefix("gt_")
    return name in HEADLINE or name.startswith(HEADLINE_PREFIXES)


def system_names(path_a: str | Path, path_b: str | Path) -> tuple[str, str]:
    """Column labels for two prediction files: their file names when those differ, else the last path part
    that tells them apart (the run folder in `RUN/preds_test.jsonl`), else "A" and "B"."""
    a, b = Path(path_a), Path(path_b)
    if a.name != b.name:
        return a.name, b.name
    parts_a, parts_b = a.resolve().parts[::-1], b.resolve().parts[::-1]
    for part_a, part_b in zip(parts_a, parts_b):
        if part_a != part_b:
            return part_a, part_b
    return "A", "B"


def format_comparison(
    result: dict[str, dict[str, Any]], names: tuple[str, str] = ("A", "B"), everything: bool = True
) -> str:
    """The result of `compare_predictions` as a plain-text table for the console: every metric, or with
    `everything=False` the headline ones (`is_headline`) and a line saying how many rows `--all` adds."""
    rows = {name: entry for name, entry in result.items() if everything or is_headline(name)}
    width = max(11, *(len(name) + 1 for name in names))
    lines = [f"  {'metric':<30}{names[0]:>{width}}{names[1]:>{width}}{'B - A':>10}{'95% CI':>22}{'p':>8}"]
    for name, entry in rows.items():
        low, high = entry["ci"]
        lines.append(
            f"  {name:<30}{entry['a']:>{width}.4f}{entry['b']:>{width}.4f}{entry['difference']:>+10.4f}"
            f"{f'[{low:+.4f}, {high:+.4f}]':>22}{entry['p_value']:>8.3f}"
        )
    if len(rows) < len(result):
        lines.append(f"  ({len(rows)} of {len(result)} metrics; --all shows every one)")
    lines.append("  p: per metric, not corrected for multiple comparisons")
    return "\n".join(lines)
