"""Does a run's report follow its experts, and do its experts read the image? (`leadrrg diagnose`)

On any split, for the first `limit` studies. The truth-based measures (report F1, AUROC, oracle) score against
the studies' ground-truth labels when every study has them (SynthCXR: the image's truth; a label file), else
against a clearly marked proxy, the labeler's reading of each reference report: `truth_source` is `"labels"` or
`"reference (labeler)"` in the result and in the printed header. Flips and report-vs-expert agreement need no
truth.

- **own**: reports with the run's own experts; their findings (the labeler's reading, positive = 1) scored
  against the truth (`report_f1_vs_truth`, micro-F1 over the 13 findings, No Finding excluded), the experts'
  AUROC per finding and macro (`expert_auroc`, `expert_macro_auroc`), how well the report agrees with its own
  experts (p > 0.5), and the mean gate per decoder layer over the generated tokens.
- **oracle** (`oracle=True`): the experts' probabilities replaced by the truth (p = 1 present, 0 absent): how
  good the reports are when the experts are right (`oracle_report_f1_vs_truth`).
- **flip** (`flip=N`): for each of the first N studies one finding's probability is flipped (p > 0.5 -> 0,
  else -> 1; the finding cycles through the 13 in a seeded order) and the report regenerated. The report
  follows when its reading of that finding changes to the flipped value (asserted iff flipped on:
  `flip_follow_rate`), and leaves the others alone when every other finding's reading is as in the
  unflipped report (`flip_others_unchanged_rate`). Only that finding's p changes; the No Finding expert's p
  is left as it was. A decoder that reads thresholded evidence with `decode.derive_no_finding` (the default)
  reads No Finding from the other findings, as CheXpert defines it; with `derive_no_finding=false` a finding
  switched on in a normal study sits beside a No Finding read as 1, a combination its training labels never
  hold (docs/RESULTS.md measures both).

The decoder's input is replaced through `generate_split(..., expert_probs=...)`, the same override a user has;
nothing in the model is patched. Each generation pass restarts the sampler from seed 0 (decode.strategy=sample),
so a flipped study is decoded with the draws of its unflipped report.

Side and size (`leadrrg.evaluation.attribute_diagnosis`), for a run with attribute experts: laterality and severity
accuracy with the run's own experts and (with `oracle`) with oracle experts, and `flip_side=N` side flips, against
the image's attributes when every study carries them, else the attributes the reference report states
(`attribute_truth_source`: `"image"` or `"reference (labeler)"`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from leadrrg import labeler
from leadrrg.constants import OBSERVATIONS
from leadrrg.errors import LeadrrgError
from leadrrg.evaluation.attribute_diagnosis import (
    ATTRIBUTES_REFERENCE,
    attribute_accuracy,
    side_flip_test,
    truth_attribute_probs,
    with_truth_attributes,
)
from leadrrg.inference.api import ReportGenerator
from leadrrg.inference.evidence import gate_rows
from leadrrg.inference.predict import generate_split
from leadrrg.metrics.experts import binary_auroc

FINDINGS: tuple[str, ...] = OBSERVATIONS[1:]  # the 13 findings (No Finding excluded)
TRUTH_LABELS = "labels"  # truth_source: the studies' ground-truth labels
TRUTH_REFERENCE = (
    "reference (labeler)"  # truth_source: the labeler's reading of the reference report (a proxy)
)


def micro_f1(truth: np.ndarray, predicted: np.ndarray) -> float | None:
    """Micro-F1 of boolean arrays of one shape; None when neither has a positive."""
    denominator = float(truth.sum() + predicted.sum())
    if denominator == 0:
        return None
    return 2.0 * float((truth & predicted).sum()) / denominator


def report_findings(texts: Sequence[str]) -> np.ndarray:
    """(N, 13) bool: the findings each report asserts (the labeler's positive reading)."""
    return labeler.label_reports(list(texts))[:, 1:] == 1


def truth_probs(labels: np.ndarray, expert_names: Sequence[str]) -> np.ndarray:
    """Ground-truth labels (N, 14) in CheXpert order -> oracle probabilities (N, K) in the experts' order."""
    missing = [name for name in expert_names if name not in OBSERVATIONS]
    if missing:
        raise LeadrrgError(f"experts {missing} are not CheXpert observations; an oracle needs their truth")
    columns = [OBSERVATIONS.index(name) for name in expert_names]
    return (labels[:, columns] == 1).astype(np.float32)


def study_truth(studies: Sequence) -> tuple[np.ndarray, str]:
    """(N, 14) labels the truth-based measures score against, and their source: the studies' ground-truth labels
    when every study has them (`TRUTH_LABELS`), else the labeler's reading of every reference report
    (`TRUTH_REFERENCE`, a proxy: what the report's author saw, as the rule labeler reads it)."""
    if all(s.labels is not None for s in studies):
        return np.stack([np.asarray(s.labels, dtype=np.float32) for s in studies]), TRUTH_LABELS
    return labeler.label_reports([s.report for s in studies]), TRUTH_REFERENCE


def flip_plan(num_studies: int, seed: int, findings: Sequence[str] = FINDINGS) -> list[str]:
    """The finding flipped in each study: `findings` (default the 13) in a seeded order, cycled."""
    order = list(np.random.default_rng(seed).permutation(len(findings)))
    return [findings[order[i % len(findings)]] for i in range(num_studies)]


def diagnose(
    generator: ReportGenerator,
    studies: Sequence,
    *,
    oracle: bool = False,
    flip: int = 0,
    flip_side: int = 0,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """The measures of the module docstring for `studies` (with or without ground-truth labels) -> a JSON-ready
    dict. `flip` > 0 flips one finding in each of the first `flip` studies; `flip_side` > 0 swaps one finding's
    side in each of the first `flip_side` studies with a one-sided finding."""
    studies = list(studies)
    if not studies:
        raise LeadrrgError("no studies to diagnose; expected at least one study with images and a report")
    labels, truth_source = study_truth(studies)  # (N, 14)
    truth = labels[:, 1:] == 1  # (N, 13)
    config = generator.config

    def reports(
        probs: np.ndarray | None, subset: Sequence = studies, evidence: bool = False, attributes=None
    ) -> list[dict]:
        generator.reseed(0)
        return generate_split(
            generator,
            subset,
            evidence=evidence,
            expert_probs=probs,
            attribute_probs=attributes,
            progress=progress,
        )

    own = reports(None, evidence=True)
    said = report_findings([r["generated"] for r in own])  # (N, 13)
    result: dict[str, Any] = {
        "studies": len(studies),
        "fusion": config.model.injection.fusion,
        "truth_source": truth_source,
        "report_f1_vs_truth": micro_f1(truth, said),
        "report_findings_per_study": float(said.sum(axis=1).mean()),
        "truth_findings_per_study": float(truth.sum(axis=1).mean()),
    }
    names = list(config.model.experts.names)
    has_experts = own[0].get("expert_probs") is not None
    result["mean_gate_per_layer"] = mean_gates(own)
    if not has_experts:
        result.update(expert_macro_auroc=None, expert_auroc={})
        if oracle or flip:
            raise LeadrrgError(
                f"this run has no experts (fusion {config.model.injection.fusion!r}); --oracle and --flip need them"
            )
        return result

    probs = np.array([[r["expert_probs"][name] for name in names] for r in own], dtype=np.float32)  # (N, K)
    result.update(expert_measures(probs, names, truth, said))
    with_attributes = bool(own[0].get("expert_attributes"))
    if flip_side and not with_attributes:
        raise LeadrrgError(
            "--flip-side needs attribute experts (model.experts.attributes); this run's experts give no side "
            "(train with model.experts.attributes=true)"
        )
    sided, attribute_source = with_truth_attributes(studies, labels)
    if with_attributes:
        result["attribute_truth_source"] = attribute_source
        result.update(attribute_accuracy(own, sided))
    if oracle:
        attributes = truth_attribute_probs(sided, names) if with_attributes else None
        oracle_reports = reports(truth_probs(labels, names), attributes=attributes)
        result["oracle_report_f1_vs_truth"] = micro_f1(
            truth, report_findings([r["generated"] for r in oracle_reports])
        )
        if with_attributes:
            result.update(attribute_accuracy(oracle_reports, sided, prefix="oracle_"))
    if flip:
        result.update(flip_test(reports, studies[:flip], probs[:flip], said[:flip], names, seed))
    if flip_side:
        result.update(side_flip_test(reports, sided, truth_probs(labels, names), names, flip_side, seed))
    return result


def expert_measures(
    probs: np.ndarray, names: Sequence[str], truth: np.ndarray, said: np.ndarray
) -> dict[str, Any]:
    """The experts' AUROC and F1 against the truth (N, 13), and how the reports (said (N, 13)) agree with them:
    probs (N, K) the experts' own p in the order of `names`."""
    finding_probs = np.stack(
        [probs[:, names.index(f)] if f in names else np.full(len(probs), np.nan) for f in FINDINGS], axis=1
    )  # (N, 13)
    aurocs = {
        f: binary_auroc(finding_probs[:, i], truth[:, i].astype(float)) if f in names else None
        for i, f in enumerate(FINDINGS)
    }
    present = [a for a in aurocs.values() if a is not None]
    seen = np.nan_to_num(finding_probs, nan=0.0) > 0.5  # a finding without an expert is never "seen"
    return dict(
        expert_macro_auroc=float(np.mean(present)) if present else None,
        expert_auroc=aurocs,
        expert_f1_vs_truth=micro_f1(truth, seen),
        report_agrees_with_experts_f1=micro_f1(seen, said),
        omitted_despite_experts=int((truth & seen & ~said).sum()),
        asserted_against_experts=int((said & ~seen).sum()),
    )


def flip_test(
    reports, studies: Sequence, probs: np.ndarray, said: np.ndarray, names: Sequence[str], seed: int
) -> dict[str, Any]:
    """Flip one finding per study (see the module docstring); probs (n, K) the run's own, said (n, 13) the
    unflipped reports' findings -> follow and others-unchanged rates, overall and by direction."""
    flippable = [f for f in FINDINGS if f in names]
    if not flippable:
        raise LeadrrgError(f"the run's experts {list(names)} include none of the findings; nothing to flip")
    plan = flip_plan(len(studies), seed, flippable)
    flipped = probs.copy()
    target_on = np.zeros(len(studies), dtype=bool)
    for i, finding in enumerate(plan):
        k = names.index(finding)
        target_on[i] = probs[i, k] <= 0.5
        flipped[i, k] = 1.0 if target_on[i] else 0.0
    after = report_findings([r["generated"] for r in reports(flipped, studies)])  # (n, 13)
    index = np.array([FINDINGS.index(f) for f in plan])
    rows = np.arange(len(studies))
    follows = after[rows, index] == target_on  # (n,)
    others = np.ones_like(after, dtype=bool)
    others[rows, index] = False
    unchanged = np.array([(after[i, others[i]] == said[i, others[i]]).all() for i in rows])  # (n,)
    return {
        "flip_studies": len(studies),
        "flip_follow_rate": float(follows.mean()),
        "flip_others_unchanged_rate": float(unchanged.mean()),
        "flip_on_follow_rate": float(follows[target_on].mean()) if target_on.any() else None,
        "flip_off_follow_rate": float(follows[~target_on].mean()) if (~target_on).any() else None,
        "flip_findings": plan,
        "flip_follow_by_finding": {
            f: float(follows[[i for i, g in enumerate(plan) if g == f]].mean())
            for f in flippable
            if f in plan
        },
    }


def mean_gates(records: Sequence[dict]) -> list[float] | None:
    """Mean gate per decoder layer over every generated token of `records` (None without layer-wise fusion)."""
    gates = [np.asarray(rows) for rows in (gate_rows(r.get("evidence")) for r in records) if rows]
    if not gates:
        return None
    return [float(g) for g in np.concatenate(gates).mean(axis=0)]


def format_diagnosis(result: dict[str, Any]) -> str:
    """A printable table of `diagnose`'s result."""

    def cell(value: Any) -> str:
        return "n/a" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)

    rows = [
        ("report findings micro-F1 vs truth (own experts)", result.get("report_f1_vs_truth")),
        ("report findings micro-F1 vs truth (oracle experts)", result.get("oracle_report_f1_vs_truth")),
        ("expert macro AUROC vs truth", result.get("expert_macro_auroc")),
        ("expert micro-F1 (p > 0.5) vs truth", result.get("expert_f1_vs_truth")),
        ("report agrees with its experts (micro-F1)", result.get("report_agrees_with_experts_f1")),
        ("findings per report / per truth", None),
        ("flip: report follows the flipped expert", result.get("flip_follow_rate")),
        ("flip: ... when switched on / off", None),
        ("flip: other findings unchanged", result.get("flip_others_unchanged_rate")),
        ("laterality accuracy vs the truth (own / oracle experts)", None),
        ("severity accuracy vs the truth (own / oracle experts)", None),
        ("side flip: report follows the swapped side", result.get("side_flip_follow_rate")),
        ("side flip: report states a side for it", result.get("side_flip_stated_rate")),
        ("side flip: other findings unchanged", result.get("side_flip_others_unchanged_rate")),
    ]
    lines = [
        f"{result['studies']} studies, fusion {result['fusion']}, truth: {result.get('truth_source', TRUTH_LABELS)}"
    ]
    if result.get("truth_source") == TRUTH_REFERENCE:
        lines.append(
            "  (no ground-truth labels: 'truth' below is the labeler's reading of each reference report, a proxy)"
        )
    if result.get("attribute_truth_source") == ATTRIBUTES_REFERENCE:
        lines.append("  (side and size scored against the sides and sizes the reference report states)")
    for label, value in rows:
        if label.startswith("findings per"):
            value = f"{result['report_findings_per_study']:.2f} / {result['truth_findings_per_study']:.2f}"
        elif label.startswith("flip: ... "):
            if "flip_follow_rate" not in result:
                continue
            value = f"{cell(result.get('flip_on_follow_rate'))} / {cell(result.get('flip_off_follow_rate'))}"
        elif label.endswith("(own / oracle experts)"):
            name = "laterality_accuracy" if label.startswith("laterality") else "severity_accuracy"
            if name not in result:
                continue
            value = f"{cell(result.get(name))} / {cell(result.get('oracle_' + name))}"
        elif value is None and ("flip" in label or "oracle" in label):
            continue
        lines.append(f"  {label:<52} {cell(value) if not isinstance(value, str) else value}")
    gates = result.get("mean_gate_per_layer")
    if gates:
        lines.append(f"  {'mean gate per layer':<52} " + " ".join(f"{g:.3f}" for g in gates))
    aurocs = result.get("expert_auroc") or {}
    if aurocs:
        lines.append("  expert AUROC per finding:")
        lines += [f"    {name:<28} {cell(value)}" for name, value in aurocs.items()]
    return "\n".join(lines)
