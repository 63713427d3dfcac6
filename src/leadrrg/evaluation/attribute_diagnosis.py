"""Does the report state each finding's side and size as its experts give them? (`leadrrg diagnose`, attribute part)

Against the image's attributes when every study carries them (SynthCXR's `findings`: side and severity per present
finding), else against the attributes each reference report states for the findings its truth holds
(`with_truth_attributes`: `leadrrg.labeler.attributes.report_attributes`, a proxy marked "reference (labeler)"):

- **own**: laterality and severity accuracy of the findings the report asserts, against the image
  (`metrics.attributes.attribute_scores`: `laterality_accuracy`, `severity_accuracy`, ...).
- **oracle** (`oracle=True`): the decoder reads the truth: p = 1 for present findings, and their true side and
  severity (one-hot): `oracle_laterality_accuracy`, `oracle_severity_accuracy`.
- **side flip** (`flip_side=N`): for each of the first N studies with a one-sided finding (right or left) among
  the experts, the oracle evidence with that finding's side swapped: the report follows when its stated side for
  that finding is the swapped one (`side_flip_follow_rate`, over flips whose report states a side for it:
  `side_flip_stated_rate` is the share that does), and leaves the others alone when every other finding it
  asserts keeps the presence and side of the unflipped oracle report (`side_flip_others_unchanged_rate`).

The decoder's input is replaced through `generate_split(..., expert_probs=, attribute_probs=)`, the override a
user has; nothing in the model is patched.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from leadrrg.constants import OBSERVATIONS, SIDES
from leadrrg.data.attributes import SIDE, attribute_targets
from leadrrg.errors import LeadrrgError
from leadrrg.labeler.attributes import label_attributes, report_attributes
from leadrrg.metrics.attributes import attribute_scores

Reports = Callable[..., list[dict]]  # (probs, subset, attributes=...) -> prediction records


ATTRIBUTES_IMAGE = "image"  # attribute_truth_source: the image's attributes (SynthCXR's manifest `findings`)
ATTRIBUTES_REFERENCE = "reference (labeler)"  # attribute_truth_source: what the reference report states


def with_truth_attributes(studies: Sequence, labels: np.ndarray) -> tuple[list, str]:
    """The studies with the attributes the measures score against, and their source: the studies as they are when
    every one carries the image's attributes, else copies whose `attributes` are those the reference report
    states (`report_attributes`) for the findings positive in `labels` (N, 14), the truth in use."""
    if all(s.attributes is not None for s in studies):
        return list(studies), ATTRIBUTES_IMAGE
    out = []
    for study, row in zip(studies, labels):
        stated = report_attributes(study.report)
        present = {name: values for name, values in stated.items() if row[OBSERVATIONS.index(name)] == 1}
        out.append(dataclasses.replace(study, attributes=present))
    return out, ATTRIBUTES_REFERENCE


def truth_attribute_probs(studies: Sequence, names: Sequence[str]) -> np.ndarray:
    """(N, K, 2, 3) one-hot side and severity of each study's true findings (zeros where unknown)."""
    out = np.zeros((len(studies), len(names), 2, 3), dtype=np.float32)
    for i, study in enumerate(studies):
        targets = attribute_targets(study.attributes)  # (14, 2)
        for k, name in enumerate(names):
            for axis, value in enumerate(targets[OBSERVATIONS.index(name)] if name in OBSERVATIONS else ()):
                if value >= 0:
                    out[i, k, axis, value] = 1.0
    return out


def attribute_accuracy(records: Sequence[dict], studies: Sequence, prefix: str = "") -> dict[str, Any]:
    """Laterality / severity accuracy and attribute hallucination of the reports against the image's findings."""
    scores = attribute_scores(
        label_attributes([r["generated"] for r in records]), [s.attributes for s in studies]
    )
    keep = (
        "laterality_accuracy",
        "laterality_n",
        "severity_accuracy",
        "severity_n",
        "attribute_hallucination_rate",
    )
    return {f"{prefix}{name}": scores[name] for name in keep}


def side_flip_plan(studies: Sequence, names: Sequence[str], limit: int, seed: int) -> list[tuple[int, str]]:
    """(study index, finding) for the first `limit` studies with a one-sided true finding among the experts,
    the finding drawn with `seed` when a study has several."""
    rng = np.random.default_rng(seed)
    plan = []
    for i, study in enumerate(studies):
        lateral = sorted(
            name
            for name, values in (study.attributes or {}).items()
            if name in names and isinstance(values, dict) and values.get("side") in ("right", "left")
        )
        if lateral:
            plan.append((i, lateral[int(rng.integers(len(lateral)))]))
        if len(plan) == limit:
            break
    return plan


def side_flip_test(
    reports: Reports, studies: Sequence, oracle_probs: np.ndarray, names: Sequence[str], limit: int, seed: int
) -> dict[str, Any]:
    """The side-flip measures of the module docstring (oracle presence and attributes, one side swapped)."""
    plan = side_flip_plan(studies, names, limit, seed)
    if not plan:
        raise LeadrrgError(
            "no study has a one-sided finding (right or left) among the experts; nothing to flip"
        )
    subset = [studies[i] for i, _ in plan]
    probs = oracle_probs[[i for i, _ in plan]]
    attributes = truth_attribute_probs(subset, names)
    before = label_attributes([r["generated"] for r in reports(probs, subset, attributes=attributes)])
    flipped_to = []
    for row, (_, name) in enumerate(plan):
        k = names.index(name)
        side = SIDES.index(subset[row].attributes[name]["side"])
        new = SIDES.index("left" if SIDES[side] == "right" else "right")
        attributes[row, k, SIDE] = 0.0
        attributes[row, k, SIDE, new] = 1.0
        flipped_to.append(SIDES[new])
    after = label_attributes([r["generated"] for r in reports(probs, subset, attributes=attributes)])
    stated = [name in a and a[name].get("side") is not None for a, (_, name) in zip(after, plan)]
    follows = [a[name]["side"] == side for a, (_, name), side, s in zip(after, plan, flipped_to, stated) if s]
    unchanged = [
        {n: v.get("side") for n, v in a.items() if n != name}
        == {n: v.get("side") for n, v in b.items() if n != name}
        for a, b, (_, name) in zip(after, before, plan)
    ]
    return {
        "side_flip_studies": len(plan),
        "side_flip_stated_rate": float(np.mean(stated)),
        "side_flip_follow_rate": float(np.mean(follows)) if follows else None,
        "side_flip_others_unchanged_rate": float(np.mean(unchanged)),
        "side_flip_findings": [name for _, name in plan],
    }
