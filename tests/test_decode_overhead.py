"""The decoding form of LEAD's injection (issue 23: LEAD's per-step overhead over a plain decoder): in inference
mode `injecting` prepares every layer's gate at once (`decode_gates`) and a wrapped layer goes straight to the
gate and the wrapped layer's forward. It must compute what the training form computes (`GateStep`, kept for
every scope with autograd), give the same greedy tokens, and still run hooks and trace under a compiler."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import leadrrg.model.injection as injection
from leadrrg.config import DecodeConfig
from leadrrg.data.tokenizer import ReportTokenizer
from leadrrg.inference.decoding import generate_reports
from leadrrg.model.gates import DecodeGate, ExpertGate, GateStep, decode_gates, gate_values
from leadrrg.model.injection import injecting, wrap_layers
from tests.test_decoding import REPORTS, random_model, two_view_studies

B, L, D = 3, 2, 16


def random_gates(mode: str, layers: int = L, seed: int = 0) -> list[ExpertGate]:
    torch.manual_seed(seed)
    gates = [ExpertGate(D, mode, bias_init=0.3) for _ in range(layers)]
    with torch.no_grad():
        for gate in gates:
            for parameter in gate.parameters():
                parameter.normal_(std=0.5)
    return gates


class Inner(nn.Module):
    """A stand-in decoder layer that takes keyword arguments, like an HF layer."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(D, D)

    def forward(self, hidden_states, scale=1.0):
        return self.linear(hidden_states) * scale


@pytest.mark.parametrize("mode", ["dynamic", "static", "open"])
@pytest.mark.parametrize("experts", [14, 16])  # padded to 16, and not
@pytest.mark.parametrize("positions", [1, 5])  # a decoding step, a prompt
def test_decode_gates_compute_what_the_training_step_computes(mode, experts, positions):
    gates = random_gates(mode)
    z, hidden = torch.randn(B, L, experts, D), torch.randn(B, positions, D)
    with torch.inference_mode():
        fast = decode_gates(gates, z)
        for index, (gate, step) in enumerate(zip(gates, fast)):
            assert isinstance(step, DecodeGate)
            new, g, alpha = step(hidden)
            ref_new, ref_g, ref_alpha = gate.prepare(z[:, index])(hidden)
            assert alpha.shape == ref_alpha.shape == (B, positions, experts)
            torch.testing.assert_close(new, ref_new, atol=1e-6, rtol=1e-6)
            torch.testing.assert_close(
                gate_values(g, alpha), gate_values(ref_g, ref_alpha), atol=1e-6, rtol=1e-6
            )
            torch.testing.assert_close(alpha, ref_alpha, atol=1e-6, rtol=1e-6)
            assert torch.equal(step.apply(hidden), new)


def test_mixed_gates_and_another_hidden_dtype_fall_back_to_the_training_step():
    gates = random_gates("dynamic") + random_gates("static", layers=1)
    z, hidden = torch.randn(B, 3, 14, D), torch.randn(B, 1, D, dtype=torch.bfloat16)
    with torch.inference_mode():
        steps = decode_gates(gates, z)  # prepared for the gates' float32, called with bfloat16
        for index, (gate, step) in enumerate(zip(gates, steps)):
            new = step.apply(hidden)
            assert new.dtype == torch.bfloat16
            assert torch.equal(new, gate.prepare(z[:, index], torch.bfloat16)(hidden)[0])


def test_only_inference_mode_takes_the_decoding_form():
    layers = wrap_layers(nn.ModuleList([Inner(), Inner()]), D, "dynamic", 0.0)
    z, hidden = torch.randn(B, L, 14, D), torch.randn(B, 4, D)
    with injecting(list(layers), z):  # training: autograd-safe steps, as before
        assert all(type(layer._injection.step) is GateStep for layer in layers)
        expected = layers[0].gate(hidden, z[:, 0])[0]
        assert torch.equal(layers[0]._injection.step.apply(hidden), expected)
    with torch.no_grad(), injecting(list(layers), z):  # evaluation without inference mode: the same
        assert all(type(layer._injection.step) is GateStep for layer in layers)
    with torch.inference_mode(), injecting(list(layers), z):
        assert all(type(layer._injection.step) is DecodeGate for layer in layers)
    assert all(layer.expert_tokens is None for layer in layers)


def calls_through_module_call(layers: nn.ModuleList, hidden: torch.Tensor, z: torch.Tensor) -> tuple:
    """(output of the two layers, how many of them went through nn.Module.__call__) in a decoding scope."""
    seen = []
    original = nn.Module._call_impl

    def counting(module, *args, **kwargs):
        seen.append(type(module).__name__)
        return original(module, *args, **kwargs)

    with torch.inference_mode(), injecting(list(layers), z):
        nn.Module._call_impl = counting
        try:
            out = hidden
            for layer in layers:
                out = layer(out, scale=2.0)
        finally:
            nn.Module._call_impl = original
    return out, [name for name in seen if name in ("InjectedLayer", "Inner")]


def test_decoding_skips_module_calls_but_runs_hooks():
    torch.manual_seed(0)
    layers = wrap_layers(nn.ModuleList([Inner(), Inner()]), D, "dynamic", 0.0)
    z, hidden = torch.randn(B, L, 14, D), torch.randn(B, 1, D)
    fast, calls = calls_through_module_call(layers, hidden, z)
    assert calls == []  # straight to the gate and Inner.forward
    with torch.inference_mode():  # the same as the plain call path
        plain = hidden
        for index, layer in enumerate(layers):
            plain = layer.layer(layer.gate.prepare(z[:, index])(plain)[0], scale=2.0)
    torch.testing.assert_close(fast, plain, atol=1e-6, rtol=1e-6)
    seen = []
    handles = [
        layers[0].layer.register_forward_hook(lambda module, args, out: seen.append("inner")),
        layers[1].register_forward_pre_hook(lambda module, args: seen.append("wrapper")),
    ]
    hooked, calls = calls_through_module_call(layers, hidden, z)
    for handle in handles:
        handle.remove()
    assert seen == ["inner", "wrapper"] and calls == ["InjectedLayer", "Inner", "InjectedLayer", "Inner"]
    assert torch.equal(hooked, fast)


def test_the_decoding_scope_compiles_without_graph_breaks():
    torch.manual_seed(0)
    layers = wrap_layers(nn.ModuleList([Inner(), Inner()]), D, "dynamic", 0.0)
    stack = nn.Sequential(*layers).eval()
    z, hidden = torch.randn(B, L, 14, D), torch.randn(B, 1, D)
    graphs = []

    def backend(graph_module, example_inputs):  # dynamo's graph only (no compiler): seconds
        graphs.append(graph_module)
        return graph_module.forward

    torch._dynamo.reset()
    with torch.inference_mode(), injecting(list(layers), z):
        eager = stack(hidden)
        compiled = torch.compile(stack, backend=backend, fullgraph=True)(hidden)
    assert len(graphs) == 1 and torch.equal(compiled, eager)


@pytest.fixture(scope="module")
def tokenizer() -> ReportTokenizer:
    return ReportTokenizer.train(REPORTS * 8, vocab_size=300)


@pytest.mark.parametrize("decode", [{}, {"strategy": "beam", "num_beams": 3}])
def test_decoding_gives_the_tokens_and_evidence_of_the_training_form(tokenizer, monkeypatch, decode):
    model = random_model(tokenizer)  # image-dependent output that never stops: every step counts
    images, view_mask = two_view_studies()
    config = DecodeConfig(max_new_tokens=30, expert_threshold=0.0, **decode)
    fast = generate_reports(model, tokenizer, images, view_mask, config, return_evidence=True)

    def training_form(gates, expert_tokens):
        return [gate.prepare(expert_tokens[:, index]) for index, gate in enumerate(gates)]

    monkeypatch.setattr(injection, "decode_gates", training_form)
    plain = generate_reports(model, tokenizer, images, view_mask, config, return_evidence=True)
    assert [r.token_ids for r in fast] == [r.token_ids for r in plain]
    assert len(fast[0].token_ids) == 30
    for a, b in zip(fast, plain):
        torch.testing.assert_close(a.gates, b.gates, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(a.alpha, b.alpha, atol=1e-5, rtol=1e-5)
