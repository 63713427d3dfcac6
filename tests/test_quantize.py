"""decode.quantize=int8 (inference/quantize.py): the setting validates, only the language model's own linear
layers turn int8 (gates, head, experts, projections and vision stay float32), and greedy decoding of a tiny model
keeps float32's tokens on most positions."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from leadrrg.config import DecodeConfig, apply_overrides, load_preset
from leadrrg.data.synth.generate import sample_findings
from leadrrg.data.synth.reports import write_report
from leadrrg.data.tokenizer import ReportTokenizer
from leadrrg.errors import LeadrrgError
from leadrrg.inference.decoding import generate_reports
from leadrrg.inference.quantize import is_int8_linear, quantizable_linears, quantize_decoder
from leadrrg.model.lead import LeadModel


@pytest.fixture(scope="module")
def tiny():
    config = apply_overrides(load_preset("demo"), ["model.decoder.num_layers=2"])
    rng = np.random.default_rng(0)
    reports = [write_report(sample_findings(rng), rng) for _ in range(100)]
    tokenizer = ReportTokenizer.train(reports, 300)
    torch.manual_seed(0)
    model = LeadModel(config.model, tokenizer.vocab_size, tokenizer.pad_id).eval()
    with torch.no_grad():  # W^l starts at zero: give it values so that injection does work
        model.expert_projections.up.normal_(std=0.02)
    return model, config, tokenizer


def test_the_setting_validates():
    assert DecodeConfig().quantize == "none"
    assert DecodeConfig(quantize="int8").quantize == "int8"
    with pytest.raises(LeadrrgError, match="decode.quantize"):
        DecodeConfig(quantize="int4")
    with pytest.raises(LeadrrgError, match="decode.dtype=float32"):
        DecodeConfig(quantize="int8", dtype="bfloat16")
    config = apply_overrides(load_preset("demo"), ["decode.quantize=int8"])
    assert config.decode.quantize == "int8"


def test_only_the_decoder_layers_linears_turn_int8(tiny):
    model, _, _ = tiny
    names = quantizable_linears(model.lm)
    assert names and not any("gate." in n or "lm_head" in n or "lora_" in n for n in names)
    quantized = quantize_decoder(copy.deepcopy(model), "int8")
    converted = [n for n, m in quantized.lm.named_modules() if is_int8_linear(m)]
    assert converted == names
    assert quantized.lm.get_output_embeddings().weight.dtype == torch.float32
    for part in (quantized.vision, quantized.experts, quantized.projector, quantized.expert_projections):
        assert not any(is_int8_linear(m) for m in part.modules())
        assert all(p.dtype == torch.float32 for p in part.parameters())
    gates = [m for n, m in quantized.lm.named_modules() if n.endswith(".gate")]
    assert gates and all(p.dtype == torch.float32 for g in gates for p in g.parameters())
    assert quantize_decoder(model, "none") is model


def test_int8_keeps_float32_greedy_tokens_on_most_positions(tiny):
    """Per-channel int8 weights perturb each logit by well under the typical top-1 margin of a random tiny
    model, so at least 80% of 2 x 12 positions keep float32's token (typically all; a flip early in a report
    changes what follows, hence not 100%), and the first step's logits agree to 5% of their spread."""
    model, config, tokenizer = tiny
    generator = torch.Generator().manual_seed(0)
    size, views = config.model.vision.image_size, config.model.max_views
    images = torch.randn(2, views, config.model.vision.channels, size, size, generator=generator)
    view_mask = torch.ones(2, views, dtype=torch.bool)
    decode = DecodeConfig(max_new_tokens=12, min_new_tokens=12)
    float32 = [r.token_ids for r in generate_reports(model, tokenizer, images, view_mask, decode)]
    quantized = quantize_decoder(copy.deepcopy(model), "int8")
    int8 = [r.token_ids for r in generate_reports(quantized, tokenizer, images, view_mask, decode)]
    same = sum(a == b for x, y in zip(float32, int8) for a, b in zip(x, y))
    assert same >= 0.8 * 24, (float32, int8)
    ids = torch.tensor([[tokenizer.bos_id, 5, 6, 7]])
    with torch.inference_mode():
        reference = model.lm(input_ids=ids).logits
        approx = quantized.lm(input_ids=ids).logits
    assert (approx - reference).abs().max() <= 0.05 * (reference.max() - reference.min())


def test_refused_off_the_cpu(tiny, monkeypatch):
    model, _, _ = tiny
    fake = torch.nn.Parameter(torch.zeros(1, device="meta"))
    monkeypatch.setattr(type(model), "parameters", lambda self, recurse=True: iter([fake]))
    with pytest.raises(LeadrrgError, match="CPU only"):
        quantize_decoder(model, "int8")
