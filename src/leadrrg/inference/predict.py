"""`generate_split`: reports for a list of studies, as the prediction records that `leadrrg evaluate` reads.

One record per study: `id`, `reference` (the study's target report), `generated`, `labels` (14 ground-truth
values in CheXpert order, null for not mentioned, only when the data has labels) and, with `evidence=True`,
`expert_probs` (name -> probability, null for a model without experts), `evidence`, the compact per-token
evidence of `leadrrg.inference.evidence` (`evidence="full"` adds the full tensors), `thresholds` (name -> the
threshold each expert's p is read against) and `contradictions` (the experts the report contradicts).
Decoding goes through `ReportGenerator.decode`, the API's one code path. Used by `leadrrg generate --split`
(`leadrrg.inference.batch`), `leadrrg.evaluation.diagnose`, the experiments and the demo.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader

from leadrrg.config import DecodeConfig
from leadrrg.data.dataset import StudyDataset
from leadrrg.data.manifests import Study
from leadrrg.inference.api import ReportGenerator
from leadrrg.inference.evidence import DECIMALS
from leadrrg.inference.result import ReportResult
from leadrrg.progress import Progress


def generate_split(
    generator: ReportGenerator,
    studies: Sequence[Study],
    decode: DecodeConfig | None = None,
    evidence: bool | str = False,
    batch_size: int | None = None,
    progress: bool = False,
    expert_probs: Any = None,
    attribute_probs: Any = None,
) -> list[dict[str, Any]]:
    """Decode `studies` with `generator` in batches of `batch_size` (default `decode.batch_size`) -> one record
    per study, in order. `decode` defaults to the run's decode settings; images are loaded with the run's vision
    settings and `data.num_workers`. `expert_probs` (N, K), one row per study, replaces the probabilities the
    decoder reads and `attribute_probs` (N, K, 2, 3) their side and severity (see `generate_reports`). Sampling
    draws from `generator.sampler`."""
    studies = list(studies)
    config = generator.config
    dataset = StudyDataset(studies, config.model.vision, config.model.max_views, train=False)
    loader = DataLoader(
        dataset,
        batch_size=batch_size or (decode or config.decode).batch_size,
        shuffle=False,
        num_workers=config.data.num_workers,
    )
    overrides = {"expert_probs": expert_probs, "attribute_probs": attribute_probs}
    for name, values in overrides.items():
        if values is not None:
            overrides[name] = torch.as_tensor(values, dtype=torch.float32)
            if overrides[name].shape[0] != len(studies):
                raise ValueError(f"{name} has {overrides[name].shape[0]} rows for {len(studies)} studies")
    records: list[dict[str, Any]] = []
    with Progress(len(studies), "generate", enabled=progress) as bar:
        for batch in loader:
            start, end = len(records), len(records) + len(batch["images"])
            rows = {name: None if v is None else v[start:end] for name, v in overrides.items()}
            results = generator.decode(batch["images"], batch["view_mask"], decode, evidence, **rows)
            for result in results:
                records.append(prediction_record(studies[len(records)], result, evidence))
            bar.update(len(results))
    return records


def prediction_record(study: Study, result: ReportResult, evidence: bool | str) -> dict[str, Any]:
    record: dict[str, Any] = {"id": study.id, "reference": study.report, "generated": result.report}
    if study.labels is not None:
        record["labels"] = [None if math.isnan(value) else float(value) for value in study.labels.tolist()]
    if study.attributes is not None:
        record["findings"] = study.attributes
    if evidence:
        record["expert_probs"] = (
            {name: round(p, DECIMALS) for name, p in result.expert_probs.items()}
            if result.expert_probs
            else None
        )
        record["evidence"] = result.evidence
        if result.expert_attributes:
            record["expert_attributes"] = result.expert_attributes
        record["thresholds"] = result.thresholds
        record["contradictions"] = result.contradictions
    return record
