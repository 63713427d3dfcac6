"""The optimised gate (`ExpertGate.prepare` + the per-token step) computes the formula of DESIGN.md section 2."""

from __future__ import annotations

import math

import pytest
import torch

from leadrrg.model.injection import ExpertGate, injecting, wrap_layers

B, T, K, D = 3, 5, 7, 16


def reference_gate(gate: ExpertGate, hidden: torch.Tensor, z: torch.Tensor):
    """DESIGN.md section 2, written out plainly: -> (new hidden (B, T, D), gate (B, T), alpha (B, T, K))."""
    z = z.to(hidden.dtype)
    query = torch.nn.functional.layer_norm(
        hidden, (hidden.shape[-1],), gate.norm.weight, gate.norm.bias, gate.norm.eps
    )
    alpha = torch.softmax(query @ z.transpose(1, 2) / math.sqrt(z.shape[-1]), dim=-1)  # (B, T, K)
    context = alpha @ z  # (B, T, D)
    if gate.mode == "dynamic":
        logit = torch.cat([query, context], dim=-1) @ gate.proj.weight[0] + gate.proj.bias[0]
        g = torch.sigmoid(logit)  # (B, T)
    elif gate.mode == "static":
        g = torch.sigmoid(gate.bias).expand(hidden.shape[:2])
    else:
        g = torch.ones(hidden.shape[:2], dtype=hidden.dtype)
    return hidden + g.unsqueeze(-1) * context, g, alpha


def random_gate(mode: str, seed: int = 0) -> ExpertGate:
    torch.manual_seed(seed)
    gate = ExpertGate(D, mode, bias_init=0.3)
    with torch.no_grad():
        for parameter in gate.parameters():
            parameter.normal_(std=0.5)
    return gate


@pytest.mark.parametrize("mode", ["dynamic", "static", "open"])
def test_gate_equals_the_reference_formula(mode):
    gate = random_gate(mode)
    hidden, z = torch.randn(B, T, D), torch.randn(B, K, D)
    expected = reference_gate(gate, hidden, z)
    got = gate(hidden, z)
    for a, b in zip(got, expected):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-6), (a - b).abs().max()


@pytest.mark.parametrize("mode", ["dynamic", "static", "open"])
def test_wrapped_layers_with_recording_equal_the_reference(mode):
    layers = wrap_layers(torch.nn.ModuleList([torch.nn.Identity(), torch.nn.Identity()]), D, mode, 0.0)
    for index, layer in enumerate(layers):
        layer.gate = random_gate(mode, seed=index)
    z = torch.randn(B, 2, K, D)
    hidden = torch.randn(B, T, D)
    with injecting(list(layers), z, record=True) as trace:
        out = hidden
        for step in (hidden[:, :3], hidden[:, 3:4], hidden[:, 4:]):  # a prompt pass, then single positions
            out = step
            for layer in layers:
                out = layer(out)
        gates, alpha = trace.gates(), trace.alpha()  # (B, T, L), (B, T, L, K)
    expected, expected_gates, expected_alpha = hidden, [], []
    for index, layer in enumerate(layers):
        expected, g, a = reference_gate(layer.gate, expected, z[:, index])
        expected_gates.append(g)
        expected_alpha.append(a)
    assert torch.allclose(out, expected[:, 4:], atol=1e-6)
    assert torch.allclose(gates, torch.stack(expected_gates, dim=-1), atol=1e-6)
    assert torch.allclose(alpha, torch.stack(expected_alpha, dim=2), atol=1e-6)


@pytest.mark.parametrize("mode", ["dynamic", "static", "open"])
def test_gradients_equal_the_reference(mode):
    gate = random_gate(mode)
    hidden = torch.randn(B, T, D, requires_grad=True)
    z = torch.randn(B, K, D, requires_grad=True)
    weights = torch.randn(B, T, D)

    def grads(fn):
        for tensor in (hidden, z, *gate.parameters()):
            tensor.grad = None
        (fn(gate, hidden, z)[0] * weights).sum().backward()
        return [t.grad.clone() for t in (hidden, z, *gate.parameters())]

    got = grads(lambda g, h, e: g(h, e))
    expected = grads(reference_gate)
    for a, b in zip(got, expected):
        assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()


def test_zero_expert_tokens_leave_the_hidden_states_exactly():
    for mode in ("dynamic", "static", "open"):
        hidden = torch.randn(B, T, D)
        assert torch.equal(random_gate(mode)(hidden, torch.zeros(B, K, D))[0], hidden)


def test_hidden_dtype_other_than_the_gate_is_handled():
    gate = random_gate("dynamic").double()
    hidden, z = torch.randn(B, T, D, dtype=torch.float64), torch.randn(B, K, D)
    step = gate.prepare(z, torch.float32)  # prepared for float32, called with float64 hidden states
    out, _, _ = step(hidden)
    assert out.dtype == torch.float64
    assert torch.allclose(out, reference_gate(gate, hidden, z)[0], atol=1e-10)
