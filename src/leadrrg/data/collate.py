"""Batching: StudyDataset items -> model inputs with report tokens, masks and loss targets.

The token layout is `<bos> Findings: <report> <eos>`; the model inserts the visual prompt tokens right
after `<bos>`. Targets cover the report tokens and `<eos>` only (-100 on `<bos>`, the prompt and padding).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from leadrrg.constants import IGNORE_INDEX


class ReportCollator:
    """Callable for `DataLoader(collate_fn=...)`.

    Output batch:
      images        (B, V, C, H, W) float
      view_mask     (B, V) bool
      input_ids     (B, T) long, right-padded with pad_id
      attention_mask(B, T) long, 1 on real tokens
      target_ids    (B, T) long, input_ids with IGNORE_INDEX on bos, prompt and padding
      expert_labels (B, K) float, 1/0/-1 and NaN (not mentioned) kept
      decoder_labels (B, K) float, the labels the decoder reads under truth forcing (expert_labels but for
                    counterfactual studies, `leadrrg.data.counterfactual`)
      expert_attributes, decoder_attributes (B, 14, 2) long side and severity value indices (-100 unknown), with
                    attribute experts only (`leadrrg.data.attributes`)
      ids, reports  lists of str
    """

    def __init__(self, tokenizer, max_report_tokens: int):
        if max_report_tokens < 1:
            raise ValueError(
                f"max_report_tokens is {max_report_tokens}; expected at least 1 (room for <eos>)"
            )
        self.tokenizer = tokenizer
        self.max_report_tokens = max_report_tokens  # report tokens + <eos>
        self.prefix_ids = [tokenizer.bos_id, *tokenizer.prompt_ids]

    def encode_report(self, report: str) -> list[int]:
        """`<bos> Findings: <report tokens, truncated> <eos>`."""
        report_ids = self.tokenizer.encode(report)[: self.max_report_tokens - 1]
        return [*self.prefix_ids, *report_ids, self.tokenizer.eos_id]

    def sequence_lengths(self, reports: Sequence[str]) -> list[int]:
        """len(encode_report(report)) of each report (the positions its row of `input_ids` takes); each distinct
        report is tokenised once, in one batch call."""
        backend, distinct = self.tokenizer.backend, list(dict.fromkeys(reports))
        if self.tokenizer.kind == "bpe":
            tokenised = [
                encoding.ids for encoding in backend.encode_batch(distinct, add_special_tokens=False)
            ]
        else:
            tokenised = backend(distinct, add_special_tokens=False)["input_ids"] if distinct else []
        fixed = len(self.prefix_ids) + 1  # <bos> Findings: ... <eos>
        length = {
            text: fixed + min(len(ids), self.max_report_tokens - 1) for text, ids in zip(distinct, tokenised)
        }
        return [length[report] for report in reports]

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        sequences = [self.encode_report(item["report"]) for item in items]
        batch_size, length = len(sequences), max(len(s) for s in sequences)
        input_ids = torch.full((batch_size, length), self.tokenizer.pad_id, dtype=torch.long)  # (B, T)
        attention_mask = torch.zeros((batch_size, length), dtype=torch.long)  # (B, T)
        for row, sequence in enumerate(sequences):
            input_ids[row, : len(sequence)] = torch.tensor(sequence, dtype=torch.long)
            attention_mask[row, : len(sequence)] = 1
        target_ids = input_ids.masked_fill(attention_mask == 0, IGNORE_INDEX)
        target_ids[:, : len(self.prefix_ids)] = IGNORE_INDEX  # bos and prompt are given, not predicted
        return {
            **collate_images(items),  # images, view_mask, expert_labels, ids[, expert_attributes]
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "target_ids": target_ids,
            "decoder_labels": torch.stack(
                [
                    torch.as_tensor(item.get("decoder_labels", item["labels"]), dtype=torch.float32)
                    for item in items
                ]
            ),
            **_decoder_attributes(items),
            "reports": [item["report"] for item in items],
        }


def collate_images(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """`StudyDataset` items -> images, view_mask, expert_labels, ids and, when the items carry them,
    expert_attributes: what stage 1 reads (items made `images_only`: no report is tokenised), and the part of
    `ReportCollator`'s batch that is not the report."""
    batch = {
        "images": torch.stack([item["images"] for item in items]),  # (B, V, C, H, W)
        "view_mask": torch.stack([item["view_mask"] for item in items]).bool(),  # (B, V)
        "expert_labels": torch.stack(
            [torch.as_tensor(item["labels"], dtype=torch.float32) for item in items]
        ),
        "ids": [item["id"] for item in items],
    }
    if "attributes" in items[0]:
        batch["expert_attributes"] = torch.stack([item["attributes"] for item in items])  # (B, 14, 2)
    return batch


def _decoder_attributes(items: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """decoder_attributes (B, 14, 2) value indices, when the items carry attributes."""
    if "attributes" not in items[0]:
        return {}
    return {"decoder_attributes": torch.stack([item["decoder_attributes"] for item in items])}


MODEL_INPUTS = (
    "images",
    "view_mask",
    "input_ids",
    "attention_mask",
    "target_ids",
    "expert_labels",
    "decoder_labels",
    "expert_attributes",
    "decoder_attributes",
)


def move_batch(batch: dict[str, Any], device: torch.device | str) -> dict[str, Any]:
    """The tensors the model's forward takes, on `device` (non-blocking where pinned)."""
    return {key: batch[key].to(device, non_blocking=True) for key in MODEL_INPUTS if key in batch}
