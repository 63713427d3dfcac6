"""Side and severity targets of a study's findings, for the attribute experts (`model.experts.attributes`).

`attribute_targets(findings) -> (14, 2) int64`: per CheXpert observation, the index of its side in
`constants.SIDES` and of its severity in `constants.SEVERITIES`, `IGNORE_INDEX` where unknown or not applicable
(Cardiomegaly has no side, a device no severity). `findings` is `{observation: {"side": ..., "severity": ...}}`:
SynthCXR's manifest `findings` (the image's truth) or `leadrrg.labeler.attributes.report_attributes(report)` (what a
report states, on data without image truth).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from leadrrg.constants import (
    IGNORE_INDEX,
    OBSERVATIONS,
    SEVERITIES,
    SEVERITY_OBSERVATIONS,
    SIDE_OBSERVATIONS,
    SIDES,
)
from leadrrg.metrics.attributes import normalize_severity, normalize_side

SIDE, SEVERITY = 0, 1  # the attribute axis of targets (14, 2) and of the experts' logits (B, K, 2, 3)


def attribute_targets(findings: Mapping[str, Mapping[str, Any]] | None) -> np.ndarray:
    """(14, 2) int64 value indices of each observation's side and severity; IGNORE_INDEX where unknown."""
    targets = np.full((len(OBSERVATIONS), 2), IGNORE_INDEX, dtype=np.int64)
    for name, values in (findings or {}).items():
        if name not in OBSERVATIONS or not isinstance(values, Mapping):
            continue
        row = OBSERVATIONS.index(name)
        side, severity = normalize_side(values.get("side")), normalize_severity(values.get("severity"))
        if name in SIDE_OBSERVATIONS and side in SIDES:
            targets[row, SIDE] = SIDES.index(side)
        if name in SEVERITY_OBSERVATIONS and severity in SEVERITIES:
            targets[row, SEVERITY] = SEVERITIES.index(severity)
    return targets
