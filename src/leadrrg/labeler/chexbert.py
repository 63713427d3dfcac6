"""CheXbert (Smit et al., 2020), the BERT report labeler many published CE tables use, run from weights
the user already has: the published checkpoint (``chexbert.pth``) plus a local ``bert-base-uncased``
directory (its ``config.json`` and ``vocab.txt``). Nothing is downloaded.

The model, rebuilt here from its description: a BERT encoder (``transformers.BertModel`` with the
local directory's config, pooler included), dropout, and 14 linear heads on the [CLS] hidden state --
13 with 4 classes (0 blank, 1 positive, 2 negative, 3 uncertain) for the observations in CheXbert's
order (`CHEXBERT_ORDER`: No Finding last) and one with 2 classes (0 blank, 1 positive) for No Finding.
The checkpoint is a dict whose ``model_state_dict`` holds ``module.bert.*`` and
``module.linear_heads.{0..13}.{weight,bias}`` (saved from ``nn.DataParallel``); it is read with
``torch.load(weights_only=True)`` and loaded strictly (the only keys dropped are `IGNORED_KEYS`,
buffers that some transformers versions saved).

Text handling follows CheXbert's labelling script: whitespace collapsed, WordPiece tokens, ``[CLS] ...
[SEP]`` cut to 512 tokens; an empty report is ``[CLS] [SEP]``. Output is `label_reports`' format:
(N, 14) float32 in `constants.OBSERVATIONS` order, 1 / 0 / -1 / NaN.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from leadrrg.constants import NEGATIVE, NUM_OBSERVATIONS, OBSERVATIONS, POSITIVE, UNCERTAIN
from leadrrg.errors import LeadrrgError

CHEXBERT_ORDER: tuple[str, ...] = OBSERVATIONS[1:] + OBSERVATIONS[:1]  # No Finding last
CLASS_VALUES = (np.nan, POSITIVE, NEGATIVE, UNCERTAIN)  # head class -> label value
MAX_TOKENS = 512
IGNORED_KEYS = ("bert.embeddings.position_ids", "bert.embeddings.token_type_ids")
_SPACES = re.compile(r"\s+")


def build_model(config):
    """The CheXbert network for a `transformers.BertConfig`, randomly initialised."""
    import torch
    from transformers import BertModel

    class CheXbert(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = BertModel(config)
            self.dropout = torch.nn.Dropout(0.1)
            hidden = config.hidden_size
            heads = [torch.nn.Linear(hidden, 4) for _ in range(NUM_OBSERVATIONS - 1)]
            self.linear_heads = torch.nn.ModuleList([*heads, torch.nn.Linear(hidden, 2)])

        def forward(self, input_ids, attention_mask):
            """(B, T) token ids and mask -> (B, 14) predicted class per head, CheXbert's order."""
            hidden_states = self.bert(input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, D)
            cls = self.dropout(hidden_states[:, 0])  # (B, D)
            return torch.stack([head(cls).argmax(dim=1) for head in self.linear_heads], dim=1)

    return CheXbert()


def _bert_config(bert_dir: Path):
    from transformers import BertConfig

    if not (bert_dir / "config.json").is_file() or not (bert_dir / "vocab.txt").is_file():
        raise LeadrrgError(
            f"--bert-dir {bert_dir}: expected a local bert-base-uncased directory with config.json and vocab.txt"
        )
    try:
        return BertConfig.from_pretrained(str(bert_dir), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise LeadrrgError(f"--bert-dir {bert_dir}: config.json is not a BERT config ({exc})") from None


def _state_dict(checkpoint: Path) -> dict:
    import pickle

    import torch

    if not checkpoint.is_file():
        raise LeadrrgError(
            f"--chexbert {checkpoint} does not exist; expected the CheXbert checkpoint (chexbert.pth)"
        )
    try:
        loaded = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        message = " ".join(str(exc).split())[:200]
        raise LeadrrgError(
            f"--chexbert {checkpoint}: not a PyTorch checkpoint of tensors ({message})"
        ) from None
    state = loaded.get("model_state_dict") if isinstance(loaded, dict) else None
    if not isinstance(state, dict):
        raise LeadrrgError(
            f"--chexbert {checkpoint}: expected a checkpoint dict with 'model_state_dict' (CheXbert's chexbert.pth)"
        )
    state = {key.removeprefix("module."): value for key, value in state.items()}
    return {key: value for key, value in state.items() if key not in IGNORED_KEYS}


class CheXbertLabeler:
    """Labels reports with CheXbert: ``labeler(reports) -> (N, 14)`` like `label_reports`."""

    def __init__(
        self, checkpoint: str | Path, bert_dir: str | Path, *, device: str = "cpu", batch_size: int = 16
    ):
        import torch
        from transformers import BertTokenizer

        from leadrrg.io import sha256_file

        checkpoint, bert_dir = Path(checkpoint), Path(bert_dir)
        config = _bert_config(bert_dir)
        state = _state_dict(checkpoint)
        model = build_model(config)
        expected = set(model.state_dict())
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        if missing or unexpected:
            raise LeadrrgError(
                f"--chexbert {checkpoint}: not a CheXbert checkpoint for the BERT in {bert_dir} "
                f"({len(missing)} keys missing, e.g. {missing[:3]}; {len(unexpected)} unexpected, e.g. {unexpected[:3]})"
            )
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:  # shapes differ: a checkpoint for another BERT size
            message = " ".join(str(exc).split())[:300]
            raise LeadrrgError(
                f"--chexbert {checkpoint}: weights do not fit the BERT in {bert_dir} ({message})"
            ) from None
        self.model = model.to(device).eval()
        self.tokenizer = BertTokenizer.from_pretrained(str(bert_dir), local_files_only=True)
        self.device = device
        self.batch_size = batch_size
        self.provenance = {
            "checkpoint": str(checkpoint),
            "sha256": sha256_file(checkpoint),
            "bert_dir": str(bert_dir),
        }
        self._torch = torch

    def _encode(self, report: str) -> list[int]:
        text = _SPACES.sub(" ", report).strip()
        tokens = self.tokenizer.tokenize(text) if text else []
        ids = self.tokenizer.convert_tokens_to_ids(tokens)[: MAX_TOKENS - 2]
        return [self.tokenizer.cls_token_id, *ids, self.tokenizer.sep_token_id]

    def __call__(self, reports: Sequence[str]) -> np.ndarray:
        torch = self._torch
        encoded = [self._encode(report if isinstance(report, str) else "") for report in reports]
        classes = np.zeros((len(reports), NUM_OBSERVATIONS), dtype=np.int64)  # CheXbert's order
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))  # similar lengths per batch
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                rows = order[start : start + self.batch_size]
                length = max(len(encoded[i]) for i in rows)
                input_ids = torch.full((len(rows), length), self.tokenizer.pad_token_id, dtype=torch.long)
                attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
                for j, i in enumerate(rows):
                    input_ids[j, : len(encoded[i])] = torch.tensor(encoded[i])
                    attention_mask[j, : len(encoded[i])] = 1
                predicted = self.model(input_ids.to(self.device), attention_mask.to(self.device))
                classes[rows] = predicted.cpu().numpy()
        values = np.asarray(CLASS_VALUES, dtype=np.float32)[classes]  # (N, 14), CheXbert's order
        columns = [CHEXBERT_ORDER.index(name) for name in OBSERVATIONS]
        return values[:, columns]
