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

import dataclasses
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
from leadrrg.inference.rerank import needs_rerank
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
    draws from `generator.sampler`. With `decode.rerank` the studies whose first report contradicts its experts
    are set aside and reranked `batch_size` at a time across batches, not batch by batch: the same reports (a
    study's candidates depend on the generator's seed alone), in fewer, fuller decoding passes."""
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
    decode = decode or config.decode
    first_pass = dataclasses.replace(decode, rerank=0)
    size = batch_size or decode.batch_size
    results: list[ReportResult | None] = [None] * len(studies)
    pending: list[tuple[int, ReportResult, dict[str, torch.Tensor | None]]] = []

    def rerank_pending(count: int) -> None:
        """Rerank the first `count` pending studies together (`ReportGenerator.rerank_results`)."""
        group, pending[:count] = pending[:count], []
        rows = {key: _stacked([inputs[key] for _, _, inputs in group]) for key in group[0][2]}
        reranked = generator.rerank_results(
            [result for _, result, _ in group],
            rows.pop("images"),
            rows.pop("view_mask"),
            decode,
            evidence,
            **rows,
        )
        for (index, _, _), result in zip(group, reranked):
            results[index] = result

    with Progress(len(studies), "generate", enabled=progress) as bar:
        start = 0
        for batch in loader:
            end = start + len(batch["images"])
            rows = {name: None if v is None else v[start:end] for name, v in overrides.items()}
            decoded = generator.decode(batch["images"], batch["view_mask"], first_pass, evidence, **rows)
            for offset, result in enumerate(decoded):
                if decode.rerank and generator.expert_names and needs_rerank(result, decode):
                    inputs = {"images": batch["images"][offset], "view_mask": batch["view_mask"][offset]}
                    inputs |= {name: None if v is None else v[offset] for name, v in rows.items()}
                    pending.append((start + offset, result, inputs))
                else:
                    results[start + offset] = result
            while len(pending) >= size:  # the contradicting studies of several batches are reranked together
                rerank_pending(size)
            bar.update(len(decoded))
            start = end
        if pending:
            rerank_pending(len(pending))
    return [prediction_record(study, result, evidence) for study, result in zip(studies, results)]


def _stacked(rows: list[torch.Tensor | None]) -> torch.Tensor | None:
    return None if rows[0] is None else torch.stack(rows)


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
