"""generate_reports: cached = uncached, batching, beam search, sampling, stopping, repetition controls,
evidence, the injection scope, every fusion mode. Tiny models on CPU; one of them is fitted for a few seconds
to four reports so that it writes real sentences and stops on EOS."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from leadrrg.config import DecodeConfig
from leadrrg.data.tokenizer import ReportTokenizer
from leadrrg.inference.decoding import GeneratedReport, generate_reports
from leadrrg.inference.steps import LogitsProcessor, banned_ngram_tokens, decoding_context, sample_next
from leadrrg.model.lead import LeadModel
from tests.test_model_helpers import EXPERTS, perturb_zero_init, tiny_config

REPORTS = [
    "The heart size is normal. The lungs are clear. No pleural effusion or pneumothorax.",
    "The heart is enlarged. There is a small right pleural effusion.",
    "Right lower lobe consolidation. No pneumothorax.",
    "Mild pulmonary edema. Heart size is enlarged. Left basilar atelectasis.",
]
MAX_NEW = 60  # the tiny decoder holds 96 positions; the prompt takes 35


@pytest.fixture(scope="module")
def tokenizer() -> ReportTokenizer:
    return ReportTokenizer.train(REPORTS * 8, vocab_size=300)


def two_view_studies() -> tuple[torch.Tensor, torch.Tensor]:
    """Four studies of two views; studies 1 and 3 lack their second view."""
    images = torch.randn(4, 2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    view_mask = torch.ones(4, 2, dtype=torch.bool)
    view_mask[1, 1] = view_mask[3, 1] = False
    return images, view_mask


@pytest.fixture(scope="module")
def studies() -> tuple[torch.Tensor, torch.Tensor]:
    return two_view_studies()


def make_model(tokenizer: ReportTokenizer, fusion: str = "layerwise", seed: int = 0) -> LeadModel:
    torch.manual_seed(seed)
    model = LeadModel(tiny_config(fusion=fusion), tokenizer.vocab_size, tokenizer.pad_id).eval()
    perturb_zero_init(model)
    return model


def random_model(tokenizer: ReportTokenizer, fusion: str = "layerwise") -> LeadModel:
    """Untrained, with larger random decoder weights: image-dependent, repetitive output that never stops."""
    model = make_model(tokenizer, fusion)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, parameter in model.lm.named_parameters():
            if parameter.dim() == 2:
                scale = 0.3 if ("embed" in name or "lm_head" in name) else 0.15
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale)
    return model


@pytest.fixture(scope="module")
def trained(tokenizer, studies) -> LeadModel:
    return fit_model(tokenizer, studies)


def fit_model(
    tokenizer: ReportTokenizer, studies, steps: int = 120, lr: float = 4e-3, fusion: str = "layerwise"
) -> LeadModel:
    """A model (layer-wise unless told) fitted to write REPORTS[i] for study i (a few seconds)."""
    images, view_mask = studies
    model = make_model(tokenizer, fusion)
    prompt = [tokenizer.bos_id, *tokenizer.prompt_ids]
    sequences = [[*prompt, *tokenizer.encode(report), tokenizer.eos_id] for report in REPORTS]
    length = max(map(len, sequences))
    input_ids = torch.full((len(REPORTS), length), tokenizer.pad_id)
    attention_mask = torch.zeros_like(input_ids)
    for i, sequence in enumerate(sequences):
        input_ids[i, : len(sequence)] = torch.tensor(sequence)
        attention_mask[i, : len(sequence)] = 1
    target_ids = input_ids.masked_fill(attention_mask == 0, -100)
    target_ids[:, : len(prompt)] = -100
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        loss = model(images, view_mask, input_ids, attention_mask, target_ids)["lm_loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


class EosAs:
    """The tokenizer with another token id playing EOS."""

    def __init__(self, tokenizer: ReportTokenizer, eos_id: int):
        self.bos_id, self.pad_id, self.prompt_ids = tokenizer.bos_id, tokenizer.pad_id, tokenizer.prompt_ids
        self.eos_id = eos_id
        self.decode = tokenizer.decode


def ids_of(reports: list[GeneratedReport]) -> list[list[int]]:
    return [report.token_ids for report in reports]


def generate(model, tokenizer, studies, **decode) -> list[GeneratedReport]:
    images, view_mask = studies
    evidence = decode.pop("evidence", False)
    generator = decode.pop("generator", None)
    # The decoder reads the soft p here (the references below build their contexts without a threshold).
    config = DecodeConfig(**{"max_new_tokens": MAX_NEW, "expert_threshold": 0.0, **decode})
    return generate_reports(model, tokenizer, images, view_mask, config, evidence, generator)


@torch.no_grad()
def uncached_greedy(model, tokenizer, images, view_mask, max_new: int, threshold: float = 0.0) -> list[int]:
    """Greedy decoding of one study that re-runs the whole sequence at every step, without a cache."""
    read = DecodeConfig(expert_threshold=threshold, derive_no_finding=False)  # what the decoder reads
    context = decoding_context(model, images, view_mask, read)
    prompt, out = [tokenizer.bos_id, *tokenizer.prompt_ids], []
    for _ in range(max_new):
        ids = torch.tensor([prompt + out])
        embeds, mask = model.embed_inputs(context, ids, torch.ones_like(ids))
        with model.injecting(context):
            token = int(model.lm_forward(embeds, mask).logits[0, -1].argmax())
        if token == tokenizer.eos_id:
            break
        out.append(token)
    return out


@torch.no_grad()
def score_and_trace(model, tokenizer, images, view_mask, token_ids: list[int], ended: bool):
    """One uncached pass over prompt + tokens (+ EOS): (summed log-prob of the generated tokens, gates (n, L),
    alpha (n, L, K)) where row i is at the position that predicts token i; gates / alpha None without injection."""
    context = model.encode_study(images, view_mask)
    targets = token_ids + ([tokenizer.eos_id] if ended else [])
    ids = torch.tensor([[tokenizer.bos_id, *tokenizer.prompt_ids, *targets]])
    embeds, mask = model.embed_inputs(context, ids, torch.ones_like(ids))
    with model.injecting(context, record=True) as trace:
        logits = model.lm_forward(embeds, mask).logits[0]  # (S, vocab)
        gates, alpha = (trace.gates()[0], trace.alpha()[0]) if trace is not None else (None, None)
    start = embeds.shape[1] - len(targets) - 1  # the last prompt position predicts the first token
    logprobs = F.log_softmax(logits[start : start + len(targets)], dim=-1)
    total = float(logprobs.gather(1, torch.tensor(targets)[:, None]).sum())
    rows = slice(start, start + len(token_ids))
    return total, (gates[rows] if gates is not None else None), (alpha[rows] if alpha is not None else None)


def assert_scope_clear(model: LeadModel) -> None:
    assert all(layer.expert_tokens is None for layer in model.injected_layers())


# --------------------------------------------------------------------------------------------------
# Greedy: cache, batching, stopping


def test_fitted_model_writes_the_reports_and_stops(trained, tokenizer, studies):
    reports = generate(trained, tokenizer, studies)
    assert all(len(report.token_ids) < MAX_NEW for report in reports)  # every report ended with EOS
    assert [report.text for report in reports] == REPORTS
    assert all(tokenizer.eos_id not in report.token_ids for report in reports)
    assert all(set(report.expert_probs) == set(EXPERTS) for report in reports)
    assert_scope_clear(trained)


@pytest.mark.parametrize("threshold", [0.0, 0.5])
def test_cached_equals_uncached_greedy(trained, tokenizer, studies, threshold):
    images, view_mask = studies
    reports = generate(trained, tokenizer, studies, expert_threshold=threshold)
    for i, report in enumerate(reports):
        one = images[i : i + 1], view_mask[i : i + 1]
        assert report.token_ids == uncached_greedy(trained, tokenizer, *one, MAX_NEW, threshold=threshold)


def test_batched_equals_one_by_one(trained, tokenizer, studies):
    images, view_mask = studies
    for decode in ({}, {"strategy": "beam", "num_beams": 3}):
        batched = ids_of(generate(trained, tokenizer, studies, **decode))
        for i in range(len(images)):
            single = generate(trained, tokenizer, (images[i : i + 1], view_mask[i : i + 1]), **decode)
            assert single[0].token_ids == batched[i], decode


def test_eos_stops_each_sequence_on_its_own(trained, tokenizer, studies):
    baseline = ids_of(generate(trained, tokenizer, studies))
    stop = baseline[0][3]  # a token of study 0's report now plays EOS
    reports = ids_of(generate(trained, EosAs(tokenizer, stop), studies))
    assert reports[0] == baseline[0][:3]
    for got, before in zip(reports, baseline):
        if stop in before:
            assert got == before[: before.index(stop)]
        else:  # the real EOS is an ordinary token now: the report goes on through it
            assert got[: len(before) + 1] == [*before, tokenizer.eos_id]


@pytest.mark.parametrize("strategy", ["greedy", "sample", "beam"])
def test_max_and_min_new_tokens(tokenizer, trained, studies, strategy):
    generator = torch.Generator().manual_seed(0)
    short = generate(trained, tokenizer, studies, strategy=strategy, max_new_tokens=5, generator=generator)
    assert all(len(report.token_ids) <= 5 for report in short)
    forced = generate(
        trained,
        tokenizer,
        studies,
        strategy=strategy,
        max_new_tokens=45,
        min_new_tokens=45,
        generator=generator,
    )
    assert all(len(report.token_ids) == 45 for report in forced)  # EOS banned: the fitted model had stopped
    assert all(tokenizer.eos_id not in report.token_ids for report in forced)


def test_mode_is_restored_and_scope_cleared_after_an_error(tokenizer, studies, monkeypatch):
    model = make_model(tokenizer).train()
    generate(model, tokenizer, studies, max_new_tokens=3, evidence=True)
    assert model.training
    assert_scope_clear(model)

    def fail(token_ids):
        raise RuntimeError("boom")

    monkeypatch.setattr(model, "embed_tokens", fail)  # the first cached step fails, inside the scope
    for strategy in ("greedy", "beam"):
        with pytest.raises(RuntimeError, match="boom"):
            generate(model, tokenizer, studies, strategy=strategy, max_new_tokens=3, evidence=True)
        assert model.training
        assert_scope_clear(model)


# --------------------------------------------------------------------------------------------------
# Beam search


def test_beam_with_one_beam_is_greedy(trained, tokenizer, studies):
    assert ids_of(generate(trained, tokenizer, studies, strategy="beam", num_beams=1)) == ids_of(
        generate(trained, tokenizer, studies)
    )


def test_beam_finds_more_probable_reports_than_greedy(trained, tokenizer, studies):
    # Unseen images: the fitted model hesitates, and greedy's early choices can lead to less probable reports.
    images = torch.randn(12, 2, 1, 32, 32, generator=torch.Generator().manual_seed(10))
    view_mask = studies[1].repeat(3, 1)
    greedy = generate(trained, tokenizer, (images, view_mask), max_new_tokens=8)
    beam = generate(
        trained,
        tokenizer,
        (images, view_mask),
        max_new_tokens=8,
        strategy="beam",
        num_beams=4,
        length_penalty=0.0,
    )
    gains = []
    for i, (g, b) in enumerate(zip(greedy, beam)):
        one = (images[i : i + 1], view_mask[i : i + 1])
        greedy_lp, _, _ = score_and_trace(trained, tokenizer, *one, g.token_ids, len(g.token_ids) < 8)
        beam_lp, _, _ = score_and_trace(trained, tokenizer, *one, b.token_ids, len(b.token_ids) < 8)
        gains.append(beam_lp - greedy_lp)
    assert min(gains) >= -1e-4, gains
    assert max(gains) > 0.1, gains


def test_beam_search_on_the_fitted_model_writes_the_reports(trained, tokenizer, studies):
    for length_penalty in (0.0, 1.0):
        reports = generate(
            trained, tokenizer, studies, strategy="beam", num_beams=3, length_penalty=length_penalty
        )
        assert [report.text for report in reports] == REPORTS


# --------------------------------------------------------------------------------------------------
# Sampling


def test_sampling_is_reproducible_and_cold_sampling_is_greedy(trained, tokenizer, studies):
    def sample(seed: int, **decode):
        generator = torch.Generator().manual_seed(seed)
        return ids_of(generate(trained, tokenizer, studies, strategy="sample", generator=generator, **decode))

    assert sample(0) == sample(0)
    assert sample(0) != sample(1)
    greedy = ids_of(generate(trained, tokenizer, studies))
    assert sample(0, temperature=1e-4) == greedy
    assert sample(5, top_k=1) == greedy
    assert sample(7, top_p=1e-6) == greedy


def test_top_k_and_top_p_restrict_the_draw():
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0, -1.0]]).expand(2000, -1)
    generator = torch.Generator().manual_seed(0)
    drawn = sample_next(logits, DecodeConfig(strategy="sample", top_k=2), generator)
    assert set(drawn.tolist()) == {0, 1}
    probs = logits[0].softmax(-1)  # 0.64, 0.24, 0.09, ...: top_p = 0.8 keeps the first two
    assert probs[0] < 0.8 < probs[:2].sum()
    drawn = sample_next(logits, DecodeConfig(strategy="sample", top_p=0.8), generator)
    assert set(drawn.tolist()) == {0, 1}


# --------------------------------------------------------------------------------------------------
# Repetition controls


def repeated_ngrams(ids: list[int], n: int) -> int:
    grams = [tuple(ids[i : i + n]) for i in range(len(ids) - n + 1)]
    return len(grams) - len(set(grams))


def test_banned_ngram_tokens_and_repetition_penalty_by_definition():
    generated = torch.tensor([[5, 6, 7, 5, 6], [1, 2, 3, 4, 5]])
    banned = banned_ngram_tokens(generated, 3, vocab=10)  # last two (5, 6) were followed by 7 before
    assert banned[0].nonzero().flatten().tolist() == [7] and not banned[1].any()
    banned = banned_ngram_tokens(generated, 2, vocab=10)  # (6, 7) seen: after 6 comes no 7 again
    assert banned[0].nonzero().flatten().tolist() == [7] and not banned[1].any()
    processor = LogitsProcessor(
        DecodeConfig(repetition_penalty=2.0), eos_id=0, batch=1, vocab=4, device="cpu"
    )
    processor.update(torch.tensor([1]))
    processor.update(torch.tensor([2]))
    logits = torch.tensor([[1.0, 2.0, -2.0, 3.0]])
    assert processor(logits, generated[:1, :2], step=2).tolist() == [[1.0, 1.0, -4.0, 3.0]]


def test_repetition_controls_change_the_output(tokenizer, studies):
    model = random_model(tokenizer)
    plain = ids_of(generate(model, tokenizer, studies, max_new_tokens=20))
    assert max(repeated_ngrams(ids, 2) for ids in plain) > 5  # the untrained model loops
    for strategy in ("greedy", "sample", "beam"):
        generator = torch.Generator().manual_seed(0)
        no_repeat = ids_of(
            generate(
                model,
                tokenizer,
                studies,
                strategy=strategy,
                max_new_tokens=20,
                no_repeat_ngram_size=2,
                generator=generator,
            )
        )
        assert all(repeated_ngrams(ids, 2) == 0 for ids in no_repeat), (strategy, no_repeat)
    penalised = ids_of(generate(model, tokenizer, studies, max_new_tokens=20, repetition_penalty=1e4))
    assert penalised != plain
    assert sum(len(ids) - len(set(ids)) for ids in penalised) < sum(len(ids) - len(set(ids)) for ids in plain)


# --------------------------------------------------------------------------------------------------
# Evidence


@pytest.mark.parametrize("decode", [{}, {"strategy": "beam", "num_beams": 3}, {"strategy": "sample"}])
def test_evidence_is_the_injection_behind_every_token(trained, tokenizer, studies, decode):
    images, view_mask = studies
    generator = torch.Generator().manual_seed(0)
    reports = generate(trained, tokenizer, studies, evidence=True, generator=generator, **decode)
    layers, experts = len(trained.injected_layers()), len(EXPERTS)
    for i, report in enumerate(reports):
        steps = len(report.token_ids)
        assert report.gates.shape == (steps, layers) and report.alpha.shape == (steps, layers, experts)
        assert torch.allclose(report.alpha.sum(-1), torch.ones(steps, layers), atol=1e-5)
        assert ((report.gates > 0) & (report.gates < 1)).all()
        one = (images[i : i + 1], view_mask[i : i + 1])
        _, gates, alpha = score_and_trace(trained, tokenizer, *one, report.token_ids, steps < MAX_NEW)
        assert torch.allclose(report.gates, gates, atol=1e-5)
        assert torch.allclose(report.alpha, alpha, atol=1e-5)
    assert_scope_clear(trained)


# --------------------------------------------------------------------------------------------------
# Fusion none and input


@pytest.mark.parametrize("fusion", ["none", "input"])
def test_other_fusions_decode_without_evidence_tensors(tokenizer, studies, fusion):
    images, view_mask = studies
    model = random_model(tokenizer, fusion)
    reports = generate(model, tokenizer, studies, max_new_tokens=12, evidence=True)
    for i, report in enumerate(reports):
        assert report.gates is None and report.alpha is None
        assert (report.expert_probs is None) == (fusion == "none")
        assert report.token_ids == uncached_greedy(
            model, tokenizer, images[i : i + 1], view_mask[i : i + 1], 12
        )
    assert len({tuple(ids) for ids in ids_of(reports)}) > 1  # the output depends on the image
    beam = generate(model, tokenizer, studies, max_new_tokens=12, strategy="beam", num_beams=2, evidence=True)
    assert all(len(report.token_ids) <= 12 and report.gates is None for report in beam)


def test_static_cache_and_compiled_step_equal_the_dynamic_cache(tokenizer, studies, monkeypatch):
    model = random_model(tokenizer)  # never stops: every step of the static path is exercised
    images, view_mask = studies
    dynamic = generate_reports(model, tokenizer, images, view_mask, DecodeConfig(max_new_tokens=20), True)
    static = generate_reports(
        model, tokenizer, images, view_mask, DecodeConfig(max_new_tokens=20, cache="static"), True
    )
    assert ids_of(static) == ids_of(dynamic) and len(dynamic[0].token_ids) == 20
    for a, b in zip(static, dynamic):
        torch.testing.assert_close(a.gates, b.gates)
        torch.testing.assert_close(a.alpha, b.alpha)
    compiled = []  # the wiring only: a real compile takes minutes on CPU (the GPU benchmark compiles for real)
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: compiled.append(kwargs) or fn)
    decode = DecodeConfig(max_new_tokens=20, cache="static", compile=True)
    assert ids_of(generate_reports(model, tokenizer, images, view_mask, decode)) == ids_of(dynamic)
    assert compiled == [{"mode": None, "dynamic": False}]
    assert_scope_clear(model)
