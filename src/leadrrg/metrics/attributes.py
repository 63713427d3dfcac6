"""Side and severity of asserted findings against the truth, and degenerate outputs (pure functions, no torch).

Inputs, one entry per report, CheXpert-style dicts `{observation: {"side": ..., "severity": ...}}`:
- `hypotheses`: the generated reports' extraction (`leadrrg.labeler.attributes.label_attributes`), whose
  keys are the observations the report asserts (positive or uncertain);
- `truths`: the findings the image has with their attributes: on SynthCXR the manifest's `findings`
  (sides are the PATIENT's, as reports state them), on real data the reference report's extraction.
Sides are `right` / `left` / `bilateral`; severities `mild` / `moderate` / `large` (size words such as
"small" or "severe" are mapped by `normalize_severity`). None, a missing key or "" is "not stated".

A finding counts when the report asserts it and the truth has it ("asserted and true"), and only for
`SIDE_OBSERVATIONS` / `SEVERITY_OBSERVATIONS`: Cardiomegaly, Enlarged Cardiomediastinum and Support
Devices have no side of their own (SynthCXR's truth gives them "bilateral" by convention), and a device
has no severity.

- ``laterality_accuracy``: stated side == truth side, over asserted-and-true findings where both state a
  side (``laterality_n`` of them); None when there are none.
- ``severity_accuracy``, ``severity_n``: the same for severity.
- ``attribute_hallucination_rate``: share of asserted-and-true findings whose stated side or severity
  contradicts the truth (both stated, different), over all asserted-and-true findings (``attribute_n``).
- ``laterality_omission``: share of asserted-and-true findings with a one-sided truth (`right` / `left`)
  whose report states no side (``laterality_omission_n`` findings with a one-sided truth). Bilateral truths
  are left out: SynthCXR marks midline findings (edema) bilateral by convention and reports rarely say so.
- ``laterality_confusion`` / ``severity_confusion``: ``{"truth->stated": count}`` over the scored findings.
Every rate is None (never 0) when nothing can be scored.

`degenerate_outputs(reports)` counts empty reports, punctuation-only reports (no letter or digit) and the
share of the most common report (after lower-casing and collapsing white space); `degenerate_warning`
turns those counts into one sentence, or None.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from leadrrg.constants import SEVERITY_OBSERVATIONS, SIDE_OBSERVATIONS

_SEVERITY_WORDS = {
    "mild": "mild", "small": "mild", "tiny": "mild", "minimal": "mild", "trace": "mild", "slight": "mild",
    "moderate": "moderate",
    "large": "large", "severe": "large", "marked": "large", "extensive": "large", "massive": "large",
}  # fmt: skip
_SIDE_WORDS = {"right": "right", "left": "left", "bilateral": "bilateral", "both": "bilateral"}

Attributes = Mapping[str, Mapping[str, Any]]


def normalize_side(value: Any) -> str | None:
    """`right` / `left` / `bilateral`, or None for anything unstated or unknown."""
    return _SIDE_WORDS.get(str(value).strip().lower()) if value else None


def normalize_severity(value: Any) -> str | None:
    """`mild` / `moderate` / `large` from a severity or size word ("small" -> mild), or None."""
    return _SEVERITY_WORDS.get(str(value).strip().lower()) if value else None


def _rate(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def attribute_scores(hypotheses: Sequence[Attributes], truths: Sequence[Attributes]) -> dict[str, Any]:
    """Laterality and severity accuracy, attribute hallucination and laterality omission of the asserted
    findings in `hypotheses` against `truths` (one dict per report each); definitions in the module docstring."""
    if len(hypotheses) != len(truths):
        raise ValueError(
            f"{len(hypotheses)} hypotheses but {len(truths)} truths; expected one of each per report"
        )
    side_confusion: Counter = Counter()
    severity_confusion: Counter = Counter()
    attribute_n = contradicted = one_sided = side_omitted = 0
    for hypothesis, truth in zip(hypotheses, truths):
        for name in hypothesis.keys() & truth.keys():
            scored_side, scored_severity = name in SIDE_OBSERVATIONS, name in SEVERITY_OBSERVATIONS
            if not (scored_side or scored_severity):
                continue
            attribute_n += 1
            stated, true = hypothesis[name] or {}, truth[name] or {}
            contradiction = False
            if scored_side:
                stated_side, true_side = normalize_side(stated.get("side")), normalize_side(true.get("side"))
                if stated_side and true_side:
                    side_confusion[(true_side, stated_side)] += 1
                    contradiction |= stated_side != true_side
                if true_side in ("right", "left"):
                    one_sided += 1
                    side_omitted += stated_side is None
            if scored_severity:
                stated_severity = normalize_severity(stated.get("severity"))
                true_severity = normalize_severity(true.get("severity"))
                if stated_severity and true_severity:
                    severity_confusion[(true_severity, stated_severity)] += 1
                    contradiction |= stated_severity != true_severity
            contradicted += contradiction

    laterality_n, severity_n = sum(side_confusion.values()), sum(severity_confusion.values())
    return {
        "laterality_accuracy": _rate(sum(v for (t, s), v in side_confusion.items() if t == s), laterality_n),
        "laterality_n": laterality_n,
        "severity_accuracy": _rate(sum(v for (t, s), v in severity_confusion.items() if t == s), severity_n),
        "severity_n": severity_n,
        "attribute_hallucination_rate": _rate(contradicted, attribute_n),
        "attribute_n": attribute_n,
        "laterality_omission": _rate(side_omitted, one_sided),
        "laterality_omission_n": one_sided,
        "laterality_confusion": {f"{t}->{s}": v for (t, s), v in sorted(side_confusion.items())},
        "severity_confusion": {f"{t}->{s}": v for (t, s), v in sorted(severity_confusion.items())},
    }


_WHITESPACE = re.compile(r"\s+")
_ALPHANUMERIC = re.compile(r"[^\W_]")


def degenerate_outputs(reports: Sequence[str]) -> dict[str, Any]:
    """Counts of degenerate generated reports: ``num_reports``, ``num_empty`` (empty or white space),
    ``num_punctuation_only`` (not empty, no letter or digit: ". . . ."), ``most_common_report_count`` and
    ``most_common_report_share`` (the most frequent report after lower-casing and collapsing white space,
    empty ones included; share None for no reports) and ``num_distinct_reports``."""
    texts = [
        _WHITESPACE.sub(" ", report if isinstance(report, str) else "").strip().lower() for report in reports
    ]
    num_empty = sum(not text for text in texts)
    num_punctuation_only = sum(bool(text) and not _ALPHANUMERIC.search(text) for text in texts)
    counts = Counter(texts)
    most_common = counts.most_common(1)[0][1] if counts else 0
    return {
        "num_reports": len(texts),
        "num_empty": num_empty,
        "num_punctuation_only": num_punctuation_only,
        "most_common_report_count": most_common,
        "most_common_report_share": _rate(most_common, len(texts)),
        "num_distinct_reports": len(counts),
    }


def degenerate_warning(summary: Mapping[str, Any], max_identical_share: float = 0.8) -> str | None:
    """One sentence naming what is degenerate in `degenerate_outputs(...)`, or None when nothing is: any
    empty or punctuation-only report, or the most common report above `max_identical_share` of 2 or more."""
    problems = []
    if summary["num_empty"]:
        problems.append(f"{summary['num_empty']} empty")
    if summary["num_punctuation_only"]:
        problems.append(f"{summary['num_punctuation_only']} punctuation-only")
    share = summary["most_common_report_share"]
    if summary["num_reports"] >= 2 and share is not None and share > max_identical_share:
        problems.append(f"{summary['most_common_report_count']} identical ({share:.0%})")
    if not problems:
        return None
    return f"degenerate outputs: {', '.join(problems)} of {summary['num_reports']} generated reports"
