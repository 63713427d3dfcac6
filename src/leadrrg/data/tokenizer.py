"""Report tokenizer: a from-scratch byte-level BPE trained on the training reports, or a local
pretrained LLM's own tokenizer.

Both kinds expose the same small interface (`encode`, `decode`, `bos_id`, `eos_id`, `pad_id`,
`prompt_ids`, `vocab_size`, `save`, `load`) and are saved with the run in `RUN/tokenizer/`:
a HF `tokenizer.json` (or the pretrained tokenizer's files) plus `leadrrg_tokenizer.json` saying which
kind it is.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from leadrrg.constants import BOS_TOKEN, EOS_TOKEN, PAD_TOKEN, REPORT_PROMPT, SPECIAL_TOKENS, UNK_TOKEN
from leadrrg.errors import LeadrrgError
from leadrrg.io import atomic_directory, atomic_write_text

META_FILE = "leadrrg_tokenizer.json"
BPE_FILE = "tokenizer.json"


def _clean_spaces(text: str) -> str:
    """Collapse runs of whitespace to one space and strip the ends."""
    return " ".join(text.split())


class ReportTokenizer:
    """Text <-> token ids for reports. `encode` adds no special tokens; `decode` drops them."""

    def __init__(self, backend, kind: str, source: str | None = None):
        # backend: a `tokenizers.Tokenizer` (kind "bpe") or a transformers tokenizer (kind "pretrained")
        self.backend = backend
        self.kind = kind
        self.source = source  # the pretrained tokenizer's original local path (informational)
        if kind == "bpe":
            ids = {token: backend.token_to_id(token) for token in SPECIAL_TOKENS}
            missing = [token for token, i in ids.items() if i is None]
            if missing:
                raise LeadrrgError(
                    f"BPE tokenizer lacks the special tokens {missing}; expected {list(SPECIAL_TOKENS)}"
                )
            self.pad_id, self.bos_id, self.eos_id = ids[PAD_TOKEN], ids[BOS_TOKEN], ids[EOS_TOKEN]
            self.unk_id = ids[UNK_TOKEN]
            self._special_ids = frozenset(ids.values())
        elif kind == "pretrained":
            eos = backend.eos_token_id
            if eos is None:
                raise LeadrrgError(
                    f"pretrained tokenizer at {source} has no EOS token; expected a causal-LM tokenizer"
                )
            # Keep the model's own specials; some families (Qwen2) have no BOS, GPT-2 uses EOS as BOS.
            self.bos_id = backend.bos_token_id if backend.bos_token_id is not None else eos
            self.eos_id = eos
            self.pad_id = backend.pad_token_id if backend.pad_token_id is not None else eos
            self.unk_id = backend.unk_token_id
            self._special_ids = frozenset(backend.all_special_ids) | {self.bos_id, self.eos_id, self.pad_id}
        else:
            raise LeadrrgError(f"unknown tokenizer kind {kind!r}; expected bpe or pretrained")
        self.prompt_ids: list[int] = self.encode(REPORT_PROMPT)

    # ----------------------------------------------------------------------------------------------
    # Construction

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> ReportTokenizer:
        """Train a byte-level BPE on `texts` (the training reports). The vocabulary may end up smaller
        than `vocab_size` on a small corpus; `vocab_size` reports the real size."""
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        if vocab_size <= len(SPECIAL_TOKENS) + 256:
            raise LeadrrgError(
                f"tokenizer vocab_size is {vocab_size}; expected more than {len(SPECIAL_TOKENS) + 256} "
                "(special tokens plus the 256 byte symbols)"
            )
        backend = Tokenizer(models.BPE(unk_token=UNK_TOKEN))
        # add_prefix_space: a word is the same token at the start of a report and inside it.
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        backend.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=list(SPECIAL_TOKENS),  # ids 0..3 in SPECIAL_TOKENS order
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        texts = [t for t in texts if t and t.strip()]
        if not texts:
            raise LeadrrgError("cannot train the tokenizer: no non-empty training reports")
        # Every training sequence holds the prompt once, so the tokenizer sees it once per report.
        prompts = [REPORT_PROMPT] * len(texts)
        backend.train_from_iterator([*texts, *prompts], trainer=trainer, length=len(texts) + len(prompts))
        return cls(backend, "bpe")

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> ReportTokenizer:
        """Wrap the tokenizer of a local pretrained causal LM (no download)."""
        from transformers import AutoTokenizer

        path = Path(path).expanduser()
        if not path.is_dir():
            raise LeadrrgError(
                f"pretrained tokenizer directory {path} does not exist; expected a local model directory"
            )
        try:
            backend = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise LeadrrgError(
                f"cannot load a tokenizer from {path} ({exc}); expected a transformers model directory"
            ) from None
        return cls(backend, "pretrained", source=str(path))

    # ----------------------------------------------------------------------------------------------
    # Interface

    @property
    def vocab_size(self) -> int:
        if self.kind == "bpe":
            return self.backend.get_vocab_size(with_added_tokens=True)
        return len(self.backend)

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, without special tokens."""
        if self.kind == "bpe":
            return self.backend.encode(text, add_special_tokens=False).ids
        return self.backend(text, add_special_tokens=False)["input_ids"]

    def decode(self, ids: Sequence[int]) -> str:
        """Text of `ids`, skipping special tokens (and ignore-index -100), whitespace cleaned."""
        ids = [int(i) for i in ids if int(i) >= 0 and int(i) not in self._special_ids]
        if self.kind == "bpe":
            text = self.backend.decode(ids, skip_special_tokens=True)
        else:
            text = self.backend.decode(ids, skip_special_tokens=True)
        return _clean_spaces(text)

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"ReportTokenizer(kind={self.kind!r}, vocab_size={self.vocab_size}, bos={self.bos_id}, eos={self.eos_id}, pad={self.pad_id})"

    # ----------------------------------------------------------------------------------------------
    # Persistence

    def save(self, directory: str | os.PathLike) -> Path:
        """Write the tokenizer to `directory` (replaced as a whole: complete or absent)."""
        directory = Path(directory)
        with atomic_directory(directory, suffix=".tmp") as tmp:
            meta = {
                "kind": self.kind,
                "source": self.source,
                "bos_id": self.bos_id,
                "eos_id": self.eos_id,
                "pad_id": self.pad_id,
            }
            if self.kind == "bpe":
                atomic_write_text(tmp / BPE_FILE, self.backend.to_str(pretty=False))
            else:
                self.backend.save_pretrained(str(tmp))
            atomic_write_text(tmp / META_FILE, json.dumps(meta, indent=2) + "\n")
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike) -> ReportTokenizer:
        directory = Path(directory)
        meta_path = directory / META_FILE
        if not meta_path.is_file():
            raise LeadrrgError(f"{directory} is not a saved leadrrg tokenizer; expected {META_FILE} in it")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise LeadrrgError(
                f"{meta_path} is damaged ({exc}); expected the JSON that leadrrg train writes"
            ) from None
        if not isinstance(meta, dict):
            raise LeadrrgError(f"{meta_path} holds a JSON {type(meta).__name__}; expected an object")
        try:
            return cls._load_kind(directory, meta)
        except LeadrrgError:
            raise
        except Exception as exc:  # tokenizers / transformers raise their own types for damaged files
            raise LeadrrgError(
                f"the tokenizer in {directory} cannot be read ({type(exc).__name__}: {exc}); expected the files "
                "leadrrg train wrote (restore them from a copy, or retrain the run)"
            ) from None

    @classmethod
    def _load_kind(cls, directory: Path, meta: dict) -> ReportTokenizer:
        meta_path = directory / META_FILE
        if meta.get("kind") == "bpe":
            from tokenizers import Tokenizer

            return cls(Tokenizer.from_file(str(directory / BPE_FILE)), "bpe")
        if meta.get("kind") == "pretrained":
            from transformers import AutoTokenizer

            backend = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
            tokenizer = cls(backend, "pretrained", source=meta.get("source"))
            # The ids chosen at training time win (pad = eos fallback must not drift between versions).
            tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id = (
                meta["bos_id"],
                meta["eos_id"],
                meta["pad_id"],
            )
            return tokenizer
        raise LeadrrgError(
            f"{meta_path} has unknown tokenizer kind {meta.get('kind')!r}; expected bpe or pretrained"
        )
