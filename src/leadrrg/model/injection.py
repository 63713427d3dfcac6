"""LEAD's layer-wise injection of expert evidence into an unmodified HF decoder.

- `confidence_weighting`: e~_k = p_k e_k + (1 - p_k) a_k (`mixture`), p_k (e_k + u_k) + (1 - p_k) a_k
  (`explicit`), p_k e_k (`product`) or e_k (`none`).
- `attribute_evidence`: with attribute experts (`model.experts.attributes`), e~_k += p_k sum_j q_k,j v_k,j: the
  side and severity the decoder reads (q, one-hot or soft over right / left / bilateral and mild / moderate /
  large; zero where none is read) select learned vectors v (unit-scale like u), carried only by present findings.
- `ExpertProjections`: Z^l = W^l e~ for every decoder layer l, computed once per study (B, L, K, D).
  W^l starts at zero, so a fresh model computes exactly what its base LLM computes.
- `ExpertInputTokens` (fusion=input, the baseline): W e~ (B, K, D) as extra input tokens instead.
- `ExpertGate` (in `leadrrg.model.gates`, with its prepared forms `GateStep` and `DecodeGate`): before layer l,
  for every position t:
      alpha_t = softmax_k(LN(h_t) . Z^l_k / sqrt(D));  c_t = sum_k alpha_t,k Z^l_k
      g_t = sigmoid(w_g . [LN(h_t); c_t] + b_g) (dynamic) | sigmoid(b^l) (static) | 1 (open)
      h_t <- h_t + g_t c_t
- `InjectedLayer`: a thin wrapper around one HF decoder layer; passes every argument through untouched.
- `injecting(layers, expert_tokens)`: the one scoped way expert tokens reach the layers; always cleared. The gates
  are prepared there once per scope: in inference mode (decoding) every layer's at once, in the decoding form.

Injection depends only on the position's own hidden state, so cached and uncached decoding agree.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn.modules.module import _global_forward_hooks, _global_forward_pre_hooks

from leadrrg.config import InjectionConfig
from leadrrg.model.gates import DecodeGate, ExpertGate, GateStep, decode_gates, gate_values


def confidence_weighting(
    features: torch.Tensor,
    probs: torch.Tensor,
    absent: torch.Tensor | None,
    mode: str,
    present: torch.Tensor | None = None,
) -> torch.Tensor:
    """features (B, K, De), probs (B, K), absent / present (K, De) -> confidence-weighted features (B, K, De).
    `explicit`: p (e + u) + (1 - p) a, a learned "present" vector u per expert on top of the mixture, so p is
    carried by two fixed vectors and cannot vanish when e and a are alike."""
    if mode == "none":
        return features
    p = probs.unsqueeze(-1)  # (B, K, 1)
    if mode == "product":
        return p * features
    if mode == "mixture":
        return p * features + (1.0 - p) * absent
    if mode == "explicit":
        return p * (features + present) + (1.0 - p) * absent
    raise ValueError(f"unknown confidence mode {mode!r}")


def confidence_vectors(
    mode: str, num_experts: int, expert_size: int
) -> tuple[nn.Parameter | None, nn.Parameter | None]:
    """The learned (absent a, present u) vectors (K, De) that `confidence_weighting` needs for `mode` (None where
    unused). u is unit-scale like the LayerNorm'd features, so that p is visible from the start."""
    absent = (
        nn.Parameter(torch.randn(num_experts, expert_size) * 0.02)
        if mode in ("mixture", "explicit")
        else None
    )
    present = nn.Parameter(torch.randn(num_experts, expert_size)) if mode == "explicit" else None
    return absent, present


def attribute_vectors(enabled: bool, num_experts: int, expert_size: int) -> nn.Parameter | None:
    """The learned vectors v (K, 2, 3, De) of each expert's side (3) and severity (3) values, or None."""
    return nn.Parameter(torch.randn(num_experts, 2, 3, expert_size)) if enabled else None


def attribute_evidence(
    weighted: torch.Tensor, probs: torch.Tensor, attributes: torch.Tensor | None, vectors: nn.Parameter | None
) -> torch.Tensor:
    """e~ (B, K, De) + p (B, K) * sum_j q (B, K, 2, 3) v (K, 2, 3, De): side and severity ride on present findings."""
    if vectors is None or attributes is None:
        return weighted
    evidence = torch.einsum("bkac,kacd->bkd", attributes.to(weighted), vectors)  # (B, K, De)
    return weighted + probs.unsqueeze(-1) * evidence


class ExpertProjections(nn.Module):
    """Confidence weighting and the layer-specific projections: (e (B, K, De), p (B, K)) -> Z (B, L, K, D).

    `projection=per_layer`: one W^l per layer; `shared`: one W for all layers. `rank > 0`: W^l = U^l V with V
    shared. The last factor (W, or U) starts at zero."""

    def __init__(
        self,
        config: InjectionConfig,
        num_experts: int,
        expert_size: int,
        model_size: int,
        num_layers: int,
        attributes: bool = False,
    ):
        super().__init__()
        self.confidence = config.confidence
        self.num_layers = num_layers
        num_maps = num_layers if config.projection == "per_layer" else 1
        self.absent, self.present = confidence_vectors(config.confidence, num_experts, expert_size)
        self.attribute_vectors = attribute_vectors(attributes, num_experts, expert_size)
        if config.rank > 0:
            self.down = nn.Parameter(
                torch.randn(expert_size, config.rank) / math.sqrt(expert_size)
            )  # V (De, r)
            self.up = nn.Parameter(torch.zeros(num_maps, config.rank, model_size))  # U^l (r, D)
        else:
            self.down = None
            self.up = nn.Parameter(torch.zeros(num_maps, expert_size, model_size))  # W^l (De, D)

    def weighted_features(
        self, features: torch.Tensor, probs: torch.Tensor, attributes: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, K, De), (B, K), (B, K, 2, 3) or None -> e~ (B, K, De)."""
        weighted = confidence_weighting(features, probs, self.absent, self.confidence, self.present)
        return attribute_evidence(weighted, probs, attributes, self.attribute_vectors)

    def forward(
        self, features: torch.Tensor, probs: torch.Tensor, attributes: torch.Tensor | None = None
    ) -> torch.Tensor:
        x = self.weighted_features(features, probs, attributes)  # (B, K, De)
        if self.down is not None:
            x = x @ self.down  # (B, K, r)
        z = torch.einsum("bki,lid->blkd", x, self.up)  # (B, L or 1, K, D)
        return z.expand(-1, self.num_layers, -1, -1)  # (B, L, K, D)


class ExpertInputTokens(nn.Module):
    """fusion=input: confidence-weighted expert features projected to D: (B, K, De), (B, K) -> (B, K, D)."""

    def __init__(
        self, confidence: str, num_experts: int, expert_size: int, model_size: int, attributes: bool = False
    ):
        super().__init__()
        self.confidence = confidence
        self.absent, self.present = confidence_vectors(confidence, num_experts, expert_size)
        self.attribute_vectors = attribute_vectors(attributes, num_experts, expert_size)
        self.proj = nn.Linear(expert_size, model_size)

    def forward(
        self, features: torch.Tensor, probs: torch.Tensor, attributes: torch.Tensor | None = None
    ) -> torch.Tensor:
        weighted = confidence_weighting(features, probs, self.absent, self.confidence, self.present)
        return self.proj(attribute_evidence(weighted, probs, attributes, self.attribute_vectors))


class InjectionTrace:
    """Per-layer gates and expert weights recorded by the layers while a scope with `record=True` is open.

    Every forward call appends its positions, so after a prompt pass and n single-token steps the trace
    holds prompt length + n positions."""

    def __init__(self, num_layers: int):
        self._gates: list[list[torch.Tensor]] = [[] for _ in range(num_layers)]
        self._alpha: list[list[torch.Tensor]] = [[] for _ in range(num_layers)]

    def add(self, layer_index: int, gate: torch.Tensor, alpha: torch.Tensor) -> None:
        """gate (B, T), or a step's (B, T, 1) / 0-d gate; alpha (B, T, K)."""
        self._gates[layer_index].append(gate_values(gate.detach(), alpha).float())
        self._alpha[layer_index].append(alpha.detach().float())

    def gates(self) -> torch.Tensor:
        """(B, T_total, L) gate values."""
        return torch.stack([torch.cat(g, dim=1) for g in self._gates], dim=-1)

    def alpha(self) -> torch.Tensor:
        """(B, T_total, L, K) expert weights."""
        return torch.stack([torch.cat(a, dim=1) for a in self._alpha], dim=2)

    def clear(self) -> None:
        for lists in (self._gates, self._alpha):
            for items in lists:
                items.clear()


class _Injection:
    """What one wrapped layer needs while a scope is open, in slots for a cheap per-step lookup. `forward` is
    the wrapped layer's bound `forward` in a decoding scope (inference mode), else None."""

    __slots__ = ("layer", "step", "trace", "index", "batch", "forward")

    def __init__(
        self, layer: nn.Module, step: GateStep | DecodeGate, trace: InjectionTrace | None, index: int
    ):
        self.layer = layer  # the wrapped layer again: a slot is read faster than an nn.Module attribute
        self.step, self.trace, self.index = step, trace, index
        self.batch = step.expert_tokens.shape[0]
        self.forward = layer.forward if isinstance(step, DecodeGate) else None


def _hooked(*modules: nn.Module) -> bool:
    """Whether calling `modules` directly (not through `nn.Module.__call__`) would skip something: a forward hook
    on them or a global one (backward hooks do nothing in inference mode), or a compiler tracing the call."""
    if _global_forward_hooks or _global_forward_pre_hooks:
        return True
    for module in modules:
        if module._forward_hooks or module._forward_pre_hooks:
            return True
    return torch.compiler.is_compiling()


class InjectedLayer(nn.Module):
    """Wraps one HF decoder layer: applies the gate to the incoming hidden states when expert tokens are set,
    then calls the wrapped layer with every positional and keyword argument untouched and returns its output
    (tuple or tensor) as is. Attribute misses are forwarded to the wrapped layer (e.g. `attention_type`).

    `injecting` prepares the gate once per scope (`ExpertGate.prepare`, `decode_gates` in inference mode) and
    leaves the result in `_injection`, its one piece of scope state, so that a decoding step does only the
    per-token work. In a decoding scope a call with no hooks to run goes straight to the gate and the wrapped
    layer's `forward`, without the two `nn.Module.__call__`s (a few microseconds per layer and token)."""

    def __init__(self, layer: nn.Module, gate: ExpertGate, layer_index: int):
        super().__init__()
        self.layer = layer
        self.gate = gate
        self.layer_index = layer_index
        self._injection: _Injection | None = None  # set only inside `injecting`

    @property
    def expert_tokens(self) -> torch.Tensor | None:
        """Z^l (B, K, D) while an `injecting` scope is open, else None."""
        return None if self._injection is None else self._injection.step.expert_tokens

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "layer":
                raise
            return getattr(self.layer, name)

    def __call__(self, *args, **kwargs):
        injection = self._injection
        if injection is None or injection.forward is None or _hooked(self, injection.layer):
            return super().__call__(*args, **kwargs)
        return _inject(injection, injection.forward, args, kwargs)

    def forward(self, *args, **kwargs):
        injection = self._injection
        if injection is None:  # outside `injecting`: the wrapped layer alone
            return self.layer(*args, **kwargs)
        return _inject(injection, injection.layer, args, kwargs)


def _inject(injection: _Injection, layer, args: tuple, kwargs: dict):
    """The gate on the hidden states (the first argument), then `layer` with every argument as given."""
    if args:
        hidden_states, args = args[0], args[1:]
    else:
        hidden_states = kwargs.pop("hidden_states")
    if hidden_states.shape[0] != injection.batch:
        raise ValueError(
            f"expert tokens are set for {injection.batch} studies but the decoder got a batch of "
            f"{hidden_states.shape[0]}; expand the StudyContext with index_select"
        )
    if injection.trace is None:
        hidden_states = injection.step.apply(hidden_states)
    else:
        hidden_states, gate, alpha = injection.step(hidden_states)
        injection.trace.add(injection.index, gate, alpha)
    return layer(hidden_states, *args, **kwargs)


@contextmanager
def injecting(
    layers: Sequence[InjectedLayer], expert_tokens: torch.Tensor, record: bool = False
) -> Iterator[InjectionTrace | None]:
    """Set Z^l (expert_tokens (B, L, K, D)) on every wrapped layer for the duration of the block; always cleared
    on exit, including when the block raises. Yields an `InjectionTrace` when `record` is True, else None.
    The gates' per-study work is done here, once per scope: `ExpertGate.prepare` (autograd-safe, training),
    or in inference mode `decode_gates` (every layer at once, the decoding path)."""
    if expert_tokens.shape[1] != len(layers):
        raise ValueError(f"expert tokens for {expert_tokens.shape[1]} layers, decoder has {len(layers)}")
    if any(layer._injection is not None for layer in layers):
        raise RuntimeError(
            "injection scopes do not nest: expert tokens are already set on the decoder layers"
        )
    trace = InjectionTrace(len(layers)) if record else None
    try:
        if torch.is_inference_mode_enabled():
            steps = decode_gates([layer.gate for layer in layers], expert_tokens)
        else:
            steps = [layer.gate.prepare(expert_tokens[:, index]) for index, layer in enumerate(layers)]
        for layer, step in zip(layers, steps):
            layer._injection = _Injection(layer.layer, step, trace, layer.layer_index)
        yield trace
    finally:
        for layer in layers:
            layer._injection = None


def wrap_layers(
    layer_list: nn.ModuleList, model_size: int, gate_mode: str, gate_bias_init: float
) -> nn.ModuleList:
    """A new ModuleList of `InjectedLayer`s around the layers of `layer_list` (each with its own gate)."""
    return nn.ModuleList(
        InjectedLayer(layer, ExpertGate(model_size, gate_mode, gate_bias_init), index)
        for index, layer in enumerate(layer_list)
    )
