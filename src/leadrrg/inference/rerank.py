"""Evidence-consistent decoding (`decode.rerank`): a report that contradicts its own experts is decoded again.

The decoder reads the experts' thresholded evidence at every step, but a greedy report can still leave out a
finding the evidence states (measured on SynthCXR val with oracle experts: one finding in five), state one it
does not, or name the other side; a small decoder also writes a sentence twice, or states a finding in one
sentence and denies it in another. The labeler can see all of this (`ReportResult.contradictions`,
`labeler.rules.report_defects`). So for each study whose report contradicts its experts or itself, or repeats a
sentence, up to `decode.rerank` more candidates are sampled at
`decode.rerank_temperature` from the `decode.rerank_top_p` nucleus, with the same evidence, and the candidate with
the fewest contradictions is kept (`disagreement`); the first report wins a tie, so a study that agrees keeps its
greedy (or beam) report and costs nothing more. Training's validation reports (`train.eval_generate`) are decoded without it.

It selects among the decoder's own reports by what the decoder was told; it never edits text and never reads
the truth. Round r samples every study still contradicting its experts in one batch, each row from its own
generator seeded by the generator's seed and r, so a study's candidates do not depend on the other studies.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import torch

from leadrrg.config import DecodeConfig
from leadrrg.inference.result import ReportResult
from leadrrg.labeler.rules import report_defects

ATTRIBUTE_KINDS = ("side", "severity")

# (study indices, their candidates' decode config, one generator per study) -> their candidate results, in order
Redecode = Callable[[list[int], DecodeConfig, list[torch.Generator]], list[ReportResult]]


def disagreement(result: ReportResult, decode: DecodeConfig) -> tuple[int, int, int]:
    """How a report contradicts its experts and itself: (findings omitted, overstated, unsupported or conflicting,
    i.e. stated in one sentence and denied in another; findings stated on another side or at another severity;
    sentences it repeats, `labeler.rules.report_defects`), compared in that order. With
    `decode.derive_no_finding` the decoder did not read the No Finding expert (it read No Finding from the other
    findings), so no candidate can agree with that expert where the others disagree: it is not counted."""
    derived = decode.derive_no_finding and decode.expert_threshold > 0
    counted = [c["kind"] for c in result.contradictions if not (derived and c["expert"] == "No Finding")]
    attributes = sum(1 for kind in counted if kind in ATTRIBUTE_KINDS)
    return len(counted) - attributes, attributes, report_defects(result.report)[1]


def needs_rerank(result: ReportResult, decode: DecodeConfig) -> bool:
    """Whether `decode.rerank` samples candidates for this report: it contradicts its experts or itself, or
    repeats a sentence."""
    return any(disagreement(result, decode))


def candidate_config(decode: DecodeConfig) -> DecodeConfig:
    """The settings a candidate is drawn with: the run's, sampled at `rerank_temperature` from the `rerank_top_p`
    nucleus, never reranked itself."""
    return dataclasses.replace(
        decode,
        strategy="sample",
        temperature=decode.rerank_temperature,
        top_p=decode.rerank_top_p,
        rerank=0,
    )


def rerank(
    results: Sequence[ReportResult],
    decode: DecodeConfig,
    redecode: Redecode,
    seed: int,
    device: torch.device,
) -> list[ReportResult]:
    """`results` with each contradicting report replaced by the least contradicting of up to `decode.rerank`
    sampled candidates, in order. Round r decodes every study still contradicting its experts in one batch
    (`redecode(indices, config, generators)`), each from its own generator seeded by `seed` and r."""
    chosen = list(results)
    if decode.rerank <= 0:
        return chosen
    config = candidate_config(decode)
    best = [disagreement(result, decode) for result in results]
    for round_ in range(decode.rerank):
        pending = [i for i, score in enumerate(best) if any(score)]
        if not pending:
            break
        generators = [
            torch.Generator(device=device).manual_seed(candidate_seed(seed, round_)) for _ in pending
        ]
        for i, candidate in zip(pending, redecode(pending, config, generators)):
            score = disagreement(candidate, decode)
            if score < best[i]:
                chosen[i], best[i] = candidate, score
    return chosen


def candidate_seed(seed: int, round_: int) -> int:
    """The seed of every study's `round_`-th candidate under generator seed `seed` (non-negative, < 2**63)."""
    return (seed * 1_000_003 + round_ + 1) % (2**63)
