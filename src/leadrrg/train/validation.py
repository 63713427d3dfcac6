"""Validation during training: losses and the experts' macro AUROC / F1 from one forward pass per batch and,
with `train.eval_generate = N`, reports generated for the first N validation studies (a fixed subset) and
scored (CE-14 micro-F1, BLEU-4, hallucination rate), with the decoding of `leadrrg.inference` and the metrics of
`leadrrg.evaluation.evaluate` (METEOR off: no JVM inside the training loop).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from leadrrg.config import RunConfig
from leadrrg.data.collate import move_batch
from leadrrg.evaluation.evaluate import evaluate_predictions
from leadrrg.inference.decoding import generate_reports
from leadrrg.metrics.experts import expert_scores
from leadrrg.model.losses import expert_targets
from leadrrg.train.step import autocast_context

# Scores of generated reports logged (and selectable) as val_gen_<name>.
GENERATION_SCORES = ("ce14_micro_f1", "ce5_micro_f1", "bleu_4", "hallucination_rate")


@torch.no_grad()
def validate(
    model: nn.Module, loader, device: torch.device, precision: str, max_batches: int
) -> dict[str, float]:
    """Mean losses over the first `max_batches` validation batches (0: all) and expert macro AUROC/F1."""
    was_training = model.training
    model.eval()
    totals: dict[str, float] = {"loss": 0.0, "lm_loss": 0.0, "cls_loss": 0.0}
    count = 0
    logits_all, labels_all = [], []
    for index, batch in enumerate(loader):
        if max_batches and index >= max_batches:
            break
        with autocast_context(precision, device):
            out = model(**move_batch(batch, device))
        size = len(batch["ids"])
        for key in totals:
            totals[key] += float(out[key]) * size
        count += size
        if out.get("expert_logits") is not None:
            logits_all.append(out["expert_logits"].float().cpu())
            labels_all.append(model.select_expert_labels(batch["expert_labels"]))
    model.train(was_training)
    results = {f"val_{k}": v / max(count, 1) for k, v in totals.items()}
    if logits_all:
        targets, weights = expert_targets(torch.cat(labels_all), model.config.label_policy)
        scores = expert_scores(torch.cat(logits_all).numpy(), targets.numpy(), weights.numpy())
        results.update({f"val_{k}": v for k, v in scores.items() if v is not None})
    return results


def make_generation_loader(val_dataset, collator, config: RunConfig) -> DataLoader | None:
    """The first `train.eval_generate` validation studies (the same at every evaluation), or None when off."""
    size = min(config.train.eval_generate, len(val_dataset) if val_dataset is not None else 0)
    if not size:
        return None
    return DataLoader(
        Subset(val_dataset, range(size)),
        batch_size=config.decode.batch_size,
        shuffle=False,
        collate_fn=collator,
    )


def generate_and_score(
    model: nn.Module, tokenizer, loader: DataLoader, config: RunConfig, references: dict[str, str]
) -> tuple[dict[str, float], list[dict[str, str]]]:
    """Generate for every study of `loader` with `config.decode` and score against `references` (study id ->
    report): ({"val_gen_<score>": value}, [{"id", "reference", "generated"}, ...] in loader order)."""
    records = []
    for batch in loader:
        reports = generate_reports(model, tokenizer, batch["images"], batch["view_mask"], config.decode)
        for study_id, report in zip(batch["ids"], reports):
            records.append({"id": study_id, "reference": references[study_id], "generated": report.text})
    metrics = evaluate_predictions(records, split="val", meteor=False)
    scores = {
        f"val_gen_{name}": float(metrics[name]) for name in GENERATION_SCORES if metrics.get(name) is not None
    }
    return scores, records


def samples_markdown(records: list[dict[str, Any]], count: int) -> str:
    """The first `count` generated reports beside their references, as markdown for TensorBoard's text tab."""
    blocks = [
        f"**{r['id']}**\n\n*generated:* {r['generated'] or '(empty)'}\n\n*reference:* {r['reference']}"
        for r in records[:count]
    ]
    return "\n\n---\n\n".join(blocks)
