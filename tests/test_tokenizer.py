"""ReportTokenizer: BPE training, round trips, special tokens, save/load, a local pretrained tokenizer."""

from __future__ import annotations

import pytest

from leadrrg.constants import BOS_TOKEN, EOS_TOKEN, IGNORE_INDEX, PAD_TOKEN, REPORT_PROMPT, SPECIAL_TOKENS
from leadrrg.data.tokenizer import ReportTokenizer
from leadrrg.errors import LeadrrgError

REPORTS = [
    "The heart size is normal. The lungs are clear. No pleural effusion or pneumothorax.",
    "The heart is enlarged. There is a small right pleural effusion.",
    "Right lower lobe consolidation. No pneumothorax.",
    "Mild pulmonary edema. Heart size is enlarged. Left basilar atelectasis.",
    "A right-sided PICC line ends in the SVC. Lungs are clear.",
] * 8


@pytest.fixture(scope="module")
def tokenizer() -> ReportTokenizer:
    return ReportTokenizer.train(REPORTS, vocab_size=400)


def test_special_tokens_come_first_and_are_distinct(tokenizer):
    ids = [tokenizer.backend.token_to_id(token) for token in SPECIAL_TOKENS]
    assert ids == list(range(len(SPECIAL_TOKENS)))
    assert (tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id) == tuple(
        tokenizer.backend.token_to_id(t) for t in (PAD_TOKEN, BOS_TOKEN, EOS_TOKEN)
    )
    assert 256 + len(SPECIAL_TOKENS) < tokenizer.vocab_size <= 400


@pytest.mark.parametrize(
    "text",
    [
        REPORTS[0],
        "Cardiomegaly, 3 cm nodule (new) – é; unseen words: pneumomediastinum!",
        "  extra   spaces here ",
    ],
)
def test_round_trip_without_specials(tokenizer, text):
    ids = tokenizer.encode(text)
    assert all(i not in (tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id) for i in ids)
    assert tokenizer.decode(ids) == " ".join(text.split())


def test_decode_skips_specials_and_ignore_index(tokenizer):
    ids = tokenizer.encode(REPORTS[1])
    noisy = [tokenizer.bos_id, *tokenizer.prompt_ids, *ids, tokenizer.eos_id, tokenizer.pad_id, IGNORE_INDEX]
    assert tokenizer.decode(noisy) == f"{REPORT_PROMPT} {REPORTS[1]}"
    assert tokenizer.decode(tokenizer.prompt_ids) == REPORT_PROMPT


def test_merges_compress_frequent_text(tokenizer):
    assert len(tokenizer.encode(REPORTS[0])) < len(REPORTS[0]) / 3
    assert len(tokenizer.encode("pneumothorax")) <= 2
    assert len(tokenizer.prompt_ids) <= 3


def test_save_and_load_give_the_same_tokenizer(tokenizer, tmp_path):
    tokenizer.save(tmp_path / "tok")
    tokenizer.save(tmp_path / "tok")  # replacing an existing directory works
    loaded = ReportTokenizer.load(tmp_path / "tok")
    assert sorted(p.name for p in (tmp_path / "tok").iterdir()) == [
        "leadrrg_tokenizer.json",
        "tokenizer.json",
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["tok"]  # no temporary directories left behind
    assert loaded.vocab_size == tokenizer.vocab_size and loaded.prompt_ids == tokenizer.prompt_ids
    assert (loaded.bos_id, loaded.eos_id, loaded.pad_id) == (
        tokenizer.bos_id,
        tokenizer.eos_id,
        tokenizer.pad_id,
    )
    for text in REPORTS[:5]:
        assert loaded.encode(text) == tokenizer.encode(text)


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(LeadrrgError, match="vocab_size"):
        ReportTokenizer.train(REPORTS, vocab_size=100)
    with pytest.raises(LeadrrgError, match="no non-empty"):
        ReportTokenizer.train(["", "  "], vocab_size=300)
    with pytest.raises(LeadrrgError, match="not a saved leadrrg tokenizer"):
        ReportTokenizer.load(tmp_path)
    with pytest.raises(LeadrrgError, match="does not exist"):
        ReportTokenizer.from_pretrained(tmp_path / "missing")


def test_pretrained_tokenizer_keeps_its_specials_and_pads_with_eos(tokenizer, tmp_path):
    from transformers import PreTrainedTokenizerFast

    # A local "pretrained" tokenizer with BOS/EOS but no pad token (like Llama-family LMs).
    hf = PreTrainedTokenizerFast(tokenizer_object=tokenizer.backend, bos_token=BOS_TOKEN, eos_token=EOS_TOKEN)
    hf.save_pretrained(tmp_path / "lm")
    wrapped = ReportTokenizer.from_pretrained(tmp_path / "lm")
    assert wrapped.kind == "pretrained"
    assert (wrapped.bos_id, wrapped.eos_id, wrapped.pad_id) == (
        tokenizer.bos_id,
        tokenizer.eos_id,
        tokenizer.eos_id,
    )
    assert wrapped.encode(REPORTS[2]) == tokenizer.encode(REPORTS[2])
    assert wrapped.decode([wrapped.bos_id, *wrapped.encode(REPORTS[2]), wrapped.eos_id]) == REPORTS[2]
    wrapped.save(tmp_path / "saved")
    loaded = ReportTokenizer.load(tmp_path / "saved")
    assert loaded.kind == "pretrained" and loaded.pad_id == tokenizer.eos_id
    assert loaded.encode(REPORTS[3]) == wrapped.encode(REPORTS[3])
