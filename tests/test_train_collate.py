"""ReportCollator: shapes, the token layout and the -100 masks."""

from __future__ import annotations

import math

import torch

from leadrrg.constants import IGNORE_INDEX, NUM_OBSERVATIONS
from leadrrg.data.collate import MODEL_INPUTS, ReportCollator, move_batch
from leadrrg.data.tokenizer import ReportTokenizer

REPORTS = ["The heart is enlarged. There is a small right pleural effusion.", "No acute disease."] * 10


def _item(index: int, report: str, views: int = 2) -> dict:
    labels = torch.full((NUM_OBSERVATIONS,), float("nan"))
    labels[2] = 1.0
    return {
        "id": f"s{index}",
        "images": torch.full((views, 1, 8, 8), float(index)),
        "view_mask": torch.tensor([True, index == 0]),
        "report": report,
        "labels": labels,
    }


def test_batch_layout_and_masks():
    tokenizer = ReportTokenizer.train(REPORTS, vocab_size=300)
    collator = ReportCollator(tokenizer, max_report_tokens=64)
    batch = collator([_item(0, REPORTS[0]), _item(1, REPORTS[1])])
    long_ids, short_ids = tokenizer.encode(REPORTS[0]), tokenizer.encode(REPORTS[1])
    prefix = [tokenizer.bos_id, *tokenizer.prompt_ids]
    length = len(prefix) + len(long_ids) + 1
    assert batch["images"].shape == (2, 2, 1, 8, 8) and batch["view_mask"].dtype == torch.bool
    assert batch["view_mask"].tolist() == [[True, True], [True, False]]
    assert (
        batch["input_ids"].shape == batch["attention_mask"].shape == batch["target_ids"].shape == (2, length)
    )
    assert batch["input_ids"][0].tolist() == [*prefix, *long_ids, tokenizer.eos_id]
    short = [*prefix, *short_ids, tokenizer.eos_id]
    assert batch["input_ids"][1].tolist() == short + [tokenizer.pad_id] * (length - len(short))
    assert batch["attention_mask"][1].tolist() == [1] * len(short) + [0] * (length - len(short))
    # Targets: only report tokens and EOS; BOS, prompt and padding are ignored.
    ignored = [IGNORE_INDEX] * len(prefix)
    assert batch["target_ids"][0].tolist() == [*ignored, *long_ids, tokenizer.eos_id]
    assert batch["target_ids"][1].tolist() == [*ignored, *short_ids, tokenizer.eos_id] + [IGNORE_INDEX] * (
        length - len(short)
    )
    assert tokenizer.decode(batch["input_ids"][1].tolist()) == "Findings: No acute disease."
    labels = batch["expert_labels"]
    assert labels.shape == (2, NUM_OBSERVATIONS) and labels.dtype == torch.float32
    assert labels[0, 2] == 1.0 and math.isnan(labels[0, 0])  # not mentioned stays NaN
    assert batch["ids"] == ["s0", "s1"] and batch["reports"] == REPORTS[:2]
    moved = move_batch(batch, "cpu")
    # items without side and severity targets (a model without attribute experts) give no attribute inputs
    assert set(moved) == set(MODEL_INPUTS) - {"expert_attributes", "decoder_attributes"}


def test_long_reports_are_truncated_but_keep_eos():
    tokenizer = ReportTokenizer.train(REPORTS, vocab_size=300)
    collator = ReportCollator(tokenizer, max_report_tokens=4)
    batch = collator([_item(0, REPORTS[0])])
    report_targets = [t for t in batch["target_ids"][0].tolist() if t != IGNORE_INDEX]
    assert report_targets == [*tokenizer.encode(REPORTS[0])[:3], tokenizer.eos_id]
    assert batch["input_ids"].shape[1] == 1 + len(tokenizer.prompt_ids) + 4
