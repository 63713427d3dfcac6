"""One study's result: `ReportResult` (the report, the labeler's reading, the experts and how they agree) and
`label_findings`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from leadrrg.constants import OBSERVATIONS
from leadrrg.inference.display import display_report
from leadrrg.inference.evidence import DECIMALS
from leadrrg.labeler import label_text


@dataclass
class ReportResult:
    """One study's report. `expert_probs`: observation -> probability (empty for a model without experts);
    `findings`: the labeler's reading of the report, observation -> 1 (present), 0 (absent), -1 (uncertain) or
    None (not mentioned); `evidence`: the compact per-token evidence (`leadrrg.inference.evidence`) when asked;
    `images`: the study's image paths when it was given as paths. `thresholds`: observation -> the threshold its
    expert's p is read against (calibrated per finding, or decode.expert_threshold); `contradictions`: the experts
    the report contradicts, [{"expert", "p", "threshold", "kind": "omitted" | "overstated" | "unsupported"}]
    (`leadrrg.inference.evidence.contradictions`); `hedge_floors`: with an uncertainty band (decode.hedge_band),
    observation -> the band's lower edge (p above it and not above the threshold: the report should hedge), else
    empty; `expert_attributes`: with attribute experts, the side and
    severity each expert gives its finding (observation -> {"side", "severity"}, the most likely values).
    `report_display` is `report` for people (`leadrrg.inference.display`); `report` stays the model's text."""

    report: str
    expert_probs: dict[str, float]
    findings: dict[str, int | None]
    evidence: dict[str, Any] | None = None
    images: list[str] | None = None
    thresholds: dict[str, float] = field(default_factory=dict)
    contradictions: list[dict[str, Any]] = field(default_factory=list)
    expert_attributes: dict[str, dict[str, str]] = field(default_factory=dict)
    hedge_floors: dict[str, float] = field(default_factory=dict)

    @property
    def report_display(self) -> str:
        return display_report(self.report)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "report": self.report,
            "report_display": self.report_display,
            "findings": self.findings,
            "expert_probs": {name: round(p, DECIMALS) for name, p in self.expert_probs.items()},
            "thresholds": self.thresholds,
            "contradictions": self.contradictions,
            "hedge_floors": self.hedge_floors,
            "expert_attributes": self.expert_attributes,
        }
        if self.evidence is not None:
            out["evidence"] = self.evidence
        if self.images is not None:
            out["images"] = self.images
        return out


def label_findings(report: str) -> dict[str, int | None]:
    """The rule-based labeler's reading of a report: observation -> 1, 0, -1 or None (not mentioned)."""
    return {
        name: None if math.isnan(value) else int(value)
        for name, value in zip(OBSERVATIONS, label_text(report).tolist())
    }
