"""`generate_split`: reports for a list of studies, as the prediction records that `leadrrg evaluate` reads.

One record per study: `id`, `reference` (the study's target report), `generated`, `labels` (14 ground-truth
values in CheXpert order, null for not mentioned, only when the data has labels) and, with `evidence=True`,
`expert_probs` (name -> probability) and `evidence` = {`tokens`: the text of each generated token, `gates`:
(steps, L), `alpha`: (steps, L, K), `experts`: the K names} (gates / alpha null unless fusion=layerwise).
Used by `leadrrg generate`, the demo and the benchmarks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from leadrrg.config import DecodeConfig, RunConfig
from leadrrg.data.manifests import Study
from leadrrg.decoding import GeneratedReport, generate_reports

EVIDENCE_DECIMALS = 4  # gates / alpha / probabilities rounded in the JSON records


def generate_split(
    model,
    tokenizer,
    config: RunConfig,
    studies: Sequence[Study],
    decode: DecodeConfig,
    evidence: bool = False,
    batch_size: int | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
    expert_probs: Any = None,
) -> list[dict[str, Any]]:
    """Decode `studies` in batches of `batch_size` (default `decode.batch_size`) -> one record per study, in
    order. Images are loaded with the run's vision settings (`config.model`) and `config.data.num_workers`.
    `expert_probs` (N, K), one row per study, replaces the probabilities the decoder reads (see
    `generate_reports`)."""
    from torch.utils.data import DataLoader

    from leadrrg.data.dataset import StudyDataset

    studies = list(studies)
    dataset = StudyDataset(studies, config.model.vision, config.model.max_views, train=False)
    loader = DataLoader(
        dataset,
        batch_size=batch_size or decode.batch_size,
        shuffle=False,
        num_workers=config.data.num_workers,
    )
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(studies), unit="study", desc="generate", dynamic_ncols=True)
    if expert_probs is not None:
        expert_probs = torch.as_tensor(expert_probs, dtype=torch.float32)
        if expert_probs.shape[0] != len(studies):
            raise ValueError(f"expert_probs has {expert_probs.shape[0]} rows for {len(studies)} studies")
    records: list[dict[str, Any]] = []
    try:
        for batch in loader:
            start = len(records)
            rows = None if expert_probs is None else expert_probs[start : start + len(batch["images"])]
            reports = generate_reports(
                model,
                tokenizer,
                batch["images"],
                batch["view_mask"],
                decode,
                return_evidence=evidence,
                generator=generator,
                expert_probs=rows,
            )
            for report in reports:
                study = studies[len(records)]
                records.append(prediction_record(study, report, tokenizer, evidence))
            if bar is not None:
                bar.update(len(reports))
    finally:
        if bar is not None:
            bar.close()
    return records


def prediction_record(study: Study, report: GeneratedReport, tokenizer, evidence: bool) -> dict[str, Any]:
    record: dict[str, Any] = {"id": study.id, "reference": study.report, "generated": report.text}
    if study.labels is not None:
        record["labels"] = [None if math.isnan(value) else float(value) for value in study.labels.tolist()]
    if evidence:
        record["expert_probs"] = (
            None
            if report.expert_probs is None
            else {name: round(p, EVIDENCE_DECIMALS) for name, p in report.expert_probs.items()}
        )
        record["evidence"] = evidence_record(report, tokenizer)
    return record


def evidence_record(report: GeneratedReport, tokenizer) -> dict[str, Any]:
    """{tokens, gates (steps, L) or None, alpha (steps, L, K) or None, experts} as JSON-ready lists."""
    return {
        "tokens": [tokenizer.decode([token_id]) for token_id in report.token_ids],
        "gates": _rounded(report.gates),
        "alpha": _rounded(report.alpha),
        "experts": list(report.expert_probs) if report.expert_probs is not None else None,
    }


def _rounded(tensor: torch.Tensor | None) -> list | None:
    if tensor is None:
        return None
    return torch.round(tensor.float(), decimals=EVIDENCE_DECIMALS).tolist()
