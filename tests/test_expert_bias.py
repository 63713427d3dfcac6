"""The CCD-style expert logit bias: the finding-token table, the bias by definition, and decoding with it
(greedy, sample, beam; refused without experts; no effect and no cost at strength 0). Tiny models on CPU."""

from __future__ import annotations

import math

import pytest
import torch

import leadrrg.inference.decoding
from leadrrg.config import DecodeConfig
from leadrrg.constants import OBSERVATIONS
from leadrrg.data.tokenizer import ReportTokenizer
from leadrrg.errors import LeadrrgError
from leadrrg.inference.decoding import generate_reports
from leadrrg.inference.expert_bias import FINDING_WORDS, expert_logit_bias, finding_token_ids
from leadrrg.inference.steps import LogitsProcessor
from tests.test_decoding import REPORTS, fit_model, ids_of, make_model, random_model, two_view_studies
from tests.test_model_helpers import EXPERTS

# The decoding tests' reports plus the experts' other finding words, so that a 400-token BPE holds
# " effusion", " effusions", " edema", " cardiomegaly" as whole tokens.
CORPUS = [
    *REPORTS,
    "Mild cardiomegaly. Small bilateral pleural effusions.",
    "Moderate cardiomegaly with edema.",
]
MAX_NEW = 40
EFFUSION = EXPERTS.index("Pleural Effusion")


@pytest.fixture(scope="module")
def tokenizer() -> ReportTokenizer:
    return ReportTokenizer.train(CORPUS * 8, vocab_size=400)


@pytest.fixture(scope="module")
def studies() -> tuple[torch.Tensor, torch.Tensor]:
    return two_view_studies()


@pytest.fixture(scope="module")
def trained(tokenizer, studies):
    """Fitted to write REPORTS[i] for study i (a few seconds); reports 0 and 1 mention an effusion. The experts are
    a side classifier (fusion aux, the lvlm_cls baseline the bias is for): without the bias the decoder ignores p
    (a layer-wise LEAD decoder follows p by itself)."""
    return fit_model(tokenizer, studies, fusion="aux")


def token_of(tokenizer: ReportTokenizer, word: str) -> int:
    (token,) = tokenizer.encode(f" {word}")  # a whole token in this vocabulary
    return token


def probs_with(effusion: float, batch: int = 4) -> torch.Tensor:
    probs = torch.full((batch, len(EXPERTS)), 0.5)
    probs[:, EFFUSION] = effusion
    return probs  # (B, K)


def generate(model, tokenizer, studies, expert_probs=None, generator=None, **decode):
    images, view_mask = studies
    config = DecodeConfig(**{"max_new_tokens": MAX_NEW, "expert_threshold": 0.0, **decode})
    return generate_reports(
        model, tokenizer, images, view_mask, config, generator=generator, expert_probs=expert_probs
    )


# --------------------------------------------------------------------------------------------------
# The finding-token table


def test_finding_words_cover_the_observations():
    assert set(FINDING_WORDS) == set(OBSERVATIONS)
    assert FINDING_WORDS["No Finding"] == ()


def test_finding_tokens_are_the_first_tokens_of_the_words(tokenizer):
    ids = finding_token_ids(tokenizer, EXPERTS)
    assert len(ids) == len(EXPERTS)
    assert ids[EXPERTS.index("Cardiomegaly")] == [token_of(tokenizer, "cardiomegaly")]
    assert ids[EXPERTS.index("Edema")] == [token_of(tokenizer, "edema")]
    assert ids[EFFUSION] == sorted([token_of(tokenizer, "effusion"), token_of(tokenizer, "effusions")])
    # A word split into several tokens contributes its first one, encoded as inside a sentence.
    (atelectasis,) = finding_token_ids(tokenizer, ["Atelectasis"])
    assert atelectasis == [tokenizer.encode(" atelectasis")[0]]
    assert finding_token_ids(tokenizer, ["No Finding"]) == [[]]


def test_shared_tokens_and_short_prefixes_are_dropped(tokenizer, monkeypatch):
    monkeypatch.setitem(FINDING_WORDS, "Edema", ("edema", "effusion"))  # "effusion" now claimed twice
    ids = finding_token_ids(tokenizer, EXPERTS)
    assert ids[EXPERTS.index("Edema")] == [token_of(tokenizer, "edema")]
    assert ids[EFFUSION] == [token_of(tokenizer, "effusions")]
    # A 300-token BPE splits " edema" into " e" + ...: a one-letter prefix starts too many words to bias.
    small = ReportTokenizer.train(REPORTS * 8, vocab_size=300)
    assert small.decode(small.encode(" edema")[:1]) == "e"
    assert finding_token_ids(small, ["Edema"]) == [[]]


def test_unknown_expert_is_refused(tokenizer):
    with pytest.raises(LeadrrgError, match="Nodule"):
        finding_token_ids(tokenizer, ["Nodule"])


# --------------------------------------------------------------------------------------------------
# The bias by definition


def test_bias_is_clipped_log_odds_at_the_experts_tokens():
    tokens = [[2, 5], [7], []]
    probs = torch.tensor([[0.5, 0.8, 0.9], [0.999, 0.0, 1.0], [1e-3, 0.2, 0.5]])
    bias = expert_logit_bias(probs, tokens, vocab_size=10, strength=2.0, gamma=10.0)
    assert bias.shape == (3, 10) and bias.dtype == torch.float32
    limit = math.log(10.0)
    assert bias[0, [2, 5]].tolist() == [0.0, 0.0]  # p = 0.5: no push
    assert bias[0, 7].item() == pytest.approx(2 * math.log(4))  # p = 0.8: log 4 > 0
    assert bias[1, 2].item() == pytest.approx(2 * limit)  # log 999 > log 10: clipped
    assert bias[1, 7].item() == pytest.approx(-2 * limit)  # p = 0 clamped, then clipped
    assert bias[2, 2].item() == pytest.approx(-2 * limit)
    assert bias[2, 7].item() == pytest.approx(2 * math.log(0.25))
    untouched = [i for i in range(10) if i not in (2, 5, 7)]
    assert not bias[:, untouched].any()
    assert expert_logit_bias(probs, tokens, 10, strength=0.5, gamma=1e9)[1, 2].item() == pytest.approx(
        0.5 * math.log((1 - 1e-3) / 1e-3), rel=1e-3
    )
    with pytest.raises(LeadrrgError, match="expected"):
        expert_logit_bias(probs[:, :2], tokens, 10, strength=1.0, gamma=10.0)


@pytest.mark.parametrize(
    "field, value",
    [("expert_bias", -1.0), ("expert_bias", float("nan")), ("expert_bias", float("inf"))]
    + [("expert_bias_gamma", v) for v in (1.0, 0.5, float("nan"), float("inf"))],
)
def test_decode_config_rejects_bad_bias_settings(field, value):
    with pytest.raises(LeadrrgError, match=f"decode.{field}"):
        DecodeConfig(**{field: value})


# --------------------------------------------------------------------------------------------------
# Decoding with the bias


def test_zero_strength_changes_nothing_and_builds_nothing(trained, tokenizer, studies, monkeypatch):
    plain = ids_of(generate(trained, tokenizer, studies))
    assert [tokenizer.decode(ids) for ids in plain] == REPORTS

    def fail(*args, **kwargs):
        raise AssertionError("no bias is built at expert_bias = 0")

    monkeypatch.setattr(leadrrg.inference.decoding, "expert_logit_bias", fail)
    monkeypatch.setattr(leadrrg.inference.decoding, "finding_token_ids", fail)
    for decode in ({}, {"strategy": "beam", "num_beams": 3}):
        same = generate(trained, tokenizer, studies, expert_bias=0.0, expert_bias_gamma=50.0, **decode)
        assert ids_of(same) == plain, decode
    logits = torch.randn(2, 7)
    assert LogitsProcessor(DecodeConfig(), 0, 2, 7, "cpu")(logits, torch.zeros(2, 0), 0) is logits


def test_a_confident_absent_expert_removes_its_words(trained, tokenizer, studies):
    effusion = token_of(tokenizer, "effusion")
    for decode in ({}, {"strategy": "beam", "num_beams": 3}):
        plain = ids_of(generate(trained, tokenizer, studies, expert_probs=probs_with(1e-4), **decode))
        assert effusion in plain[0] and effusion in plain[1], decode
        biased = ids_of(
            generate(trained, tokenizer, studies, expert_probs=probs_with(1e-4), expert_bias=5.0, **decode)
        )
        assert biased != plain, decode
        assert all(effusion not in ids for ids in biased), decode
        assert biased[2] == plain[2]  # "Right lower lobe consolidation. No pneumothorax." has no effusion


@pytest.mark.parametrize(
    "decode",
    [{}, {"strategy": "sample"}, {"strategy": "beam", "num_beams": 3}],
    ids=["greedy", "sample", "beam"],
)
def test_a_confident_present_expert_brings_its_words(tokenizer, studies, decode):
    model = random_model(tokenizer)  # never writes an effusion word on its own
    words = set(finding_token_ids(tokenizer, EXPERTS)[EFFUSION])
    generator = torch.Generator().manual_seed(0)
    plain = ids_of(
        generate(model, tokenizer, studies, probs_with(0.5), generator, max_new_tokens=8, **decode)
    )
    assert not any(words & set(ids) for ids in plain)
    generator = torch.Generator().manual_seed(0)
    biased = ids_of(
        generate(
            model,
            tokenizer,
            studies,
            probs_with(0.999),
            generator,
            max_new_tokens=8,
            expert_bias=20.0,
            **decode,
        )
    )
    assert all(ids[0] in words for ids in biased), biased  # +20 log 10 on the effusion tokens


def test_biased_greedy_is_greedy_on_biased_logits(tokenizer, studies):
    """Cached biased decoding equals an uncached loop that adds the bias to the logits by hand."""
    model = random_model(tokenizer)
    images, view_mask = studies
    probs = torch.rand(4, len(EXPERTS), generator=torch.Generator().manual_seed(1))
    reports = generate(model, tokenizer, studies, probs, max_new_tokens=10, expert_bias=0.7)
    bias = expert_logit_bias(probs, finding_token_ids(tokenizer, EXPERTS), tokenizer.vocab_size, 0.7, 10.0)
    with torch.no_grad():
        context = model.encode_study(images, view_mask, expert_probs=probs)
        for i, report in enumerate(reports):
            one = context.index_select(torch.tensor([i]))
            prompt, out = [tokenizer.bos_id, *tokenizer.prompt_ids], []
            for _ in range(10):
                ids = torch.tensor([prompt + out])
                embeds, mask = model.embed_inputs(one, ids, torch.ones_like(ids))
                with model.injecting(one):
                    token = int((model.lm_forward(embeds, mask).logits[0, -1] + bias[i]).argmax())
                if token == tokenizer.eos_id:
                    break
                out.append(token)
            assert report.token_ids == out


@pytest.mark.parametrize("strategy", ["greedy", "beam"])
def test_a_model_without_experts_refuses_the_bias(tokenizer, studies, strategy):
    model = make_model(tokenizer, fusion="none")
    assert generate(model, tokenizer, studies, strategy=strategy, max_new_tokens=3)[0].expert_probs is None
    with pytest.raises(LeadrrgError, match="decode.expert_bias"):
        generate(model, tokenizer, studies, strategy=strategy, max_new_tokens=3, expert_bias=1.0)
