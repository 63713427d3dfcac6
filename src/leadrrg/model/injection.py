"""LEAD's layer-wise injection of expert evidence into an unmodified HF decoder.

- `confidence_weighting`: e~_k = p_k e_k + (1 - p_k) a_k (`mixture`), p_k e_k (`product`) or e_k (`none`).
- `ExpertProjections`: Z^l = W^l e~ for every decoder layer l, computed once per study (B, L, K, D).
  W^l starts at zero, so a fresh model computes exactly what its base LLM computes.
- `ExpertGate`: before layer l, for every position t:
      alpha_t = softmax_k(LN(h_t) . Z^l_k / sqrt(D));  c_t = sum_k alpha_t,k Z^l_k
      g_t = sigmoid(w_g . [LN(h_t); c_t] + b_g) (dynamic) | sigmoid(b^l) (static) | 1 (open)
      h_t <- h_t + g_t c_t
- `InjectedLayer`: a thin wrapper around one HF decoder layer; passes every argument through untouched.
- `injecting(layers, expert_tokens)`: the one scoped way expert tokens reach the layers; always cleared.

Injection depends only on the position's own hidden state, so cached and uncached decoding agree.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from leadrrg.config import InjectionConfig


def confidence_weighting(
    features: torch.Tensor, probs: torch.Tensor, absent: torch.Tensor | None, mode: str
) -> torch.Tensor:
    """features (B, K, De), probs (B, K), absent (K, De) -> confidence-weighted features (B, K, De)."""
    if mode == "none":
        return features
    p = probs.unsqueeze(-1)  # (B, K, 1)
    if mode == "product":
        return p * features
    if mode == "mixture":
        return p * features + (1.0 - p) * absent
    raise ValueError(f"unknown confidence mode {mode!r}")


class ExpertProjections(nn.Module):
    """Confidence weighting and the layer-specific projections: (e (B, K, De), p (B, K)) -> Z (B, L, K, D).

    `projection=per_layer`: one W^l per layer; `shared`: one W for all layers. `rank > 0`: W^l = U^l V with V
    shared. The last factor (W, or U) starts at zero."""

    def __init__(
        self, config: InjectionConfig, num_experts: int, expert_size: int, model_size: int, num_layers: int
    ):
        super().__init__()
        self.confidence = config.confidence
        self.num_layers = num_layers
        num_maps = num_layers if config.projection == "per_layer" else 1
        self.absent = (
            nn.Parameter(torch.randn(num_experts, expert_size) * 0.02)
            if config.confidence == "mixture"
            else None
        )
        if config.rank > 0:
            self.down = nn.Parameter(
                torch.randn(expert_size, config.rank) / math.sqrt(expert_size)
            )  # V (De, r)
            self.up = nn.Parameter(torch.zeros(num_maps, config.rank, model_size))  # U^l (r, D)
        else:
            self.down = None
            self.up = nn.Parameter(torch.zeros(num_maps, expert_size, model_size))  # W^l (De, D)

    def weighted_features(self, features: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        """(B, K, De), (B, K) -> e~ (B, K, De)."""
        return confidence_weighting(features, probs, self.absent, self.confidence)

    def forward(self, features: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        x = self.weighted_features(features, probs)  # (B, K, De)
        if self.down is not None:
            x = x @ self.down  # (B, K, r)
        z = torch.einsum("bki,lid->blkd", x, self.up)  # (B, L or 1, K, D)
        return z.expand(-1, self.num_layers, -1, -1)  # (B, L, K, D)


class ExpertGate(nn.Module):
    """The context-adaptive gate of one decoder layer (see the module docstring)."""

    def __init__(self, model_size: int, mode: str, bias_init: float = 0.0):
        super().__init__()
        self.mode = mode
        self.norm = nn.LayerNorm(model_size)
        self.proj = None
        self.bias = None
        if mode == "dynamic":
            self.proj = nn.Linear(2 * model_size, 1)
            nn.init.normal_(self.proj.weight, std=0.02)
            nn.init.constant_(self.proj.bias, bias_init)
        elif mode == "static":
            self.bias = nn.Parameter(torch.tensor(float(bias_init)))
        elif mode != "open":
            raise ValueError(f"unknown gate mode {mode!r}")

    def forward(
        self, hidden_states: torch.Tensor, expert_tokens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """hidden_states (B, T, D), expert_tokens Z^l (B, K, D) -> (new hidden (B, T, D), gate (B, T), alpha (B, T, K))."""
        z = expert_tokens.to(hidden_states.dtype)
        query = self.norm(hidden_states)  # (B, T, D)
        scores = torch.einsum("btd,bkd->btk", query, z) / math.sqrt(z.shape[-1])
        alpha = scores.softmax(dim=-1)  # (B, T, K)
        context = torch.einsum("btk,bkd->btd", alpha, z)  # (B, T, D)
        if self.proj is not None:
            gate = torch.sigmoid(self.proj(torch.cat([query, context], dim=-1))).squeeze(-1)  # (B, T)
        elif self.bias is not None:
            gate = torch.sigmoid(self.bias).expand(hidden_states.shape[:2])
        else:
            gate = hidden_states.new_ones(hidden_states.shape[:2])
        return hidden_states + gate.unsqueeze(-1).to(hidden_states.dtype) * context, gate, alpha


class InjectionTrace:
    """Per-layer gates and expert weights recorded by the layers while a scope with `record=True` is open.

    Every forward call appends its positions, so after a prompt pass and n single-token steps the trace
    holds prompt length + n positions."""

    def __init__(self, num_layers: int):
        self._gates: list[list[torch.Tensor]] = [[] for _ in range(num_layers)]
        self._alpha: list[list[torch.Tensor]] = [[] for _ in range(num_layers)]

    def add(self, layer_index: int, gate: torch.Tensor, alpha: torch.Tensor) -> None:
        self._gates[layer_index].append(gate.detach().float())
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


class InjectedLayer(nn.Module):
    """Wraps one HF decoder layer: applies the gate to the incoming hidden states when expert tokens are set,
    then calls the wrapped layer with every positional and keyword argument untouched and returns its output
    (tuple or tensor) as is. Attribute misses are forwarded to the wrapped layer (e.g. `attention_type`)."""

    def __init__(self, layer: nn.Module, gate: ExpertGate, layer_index: int):
        super().__init__()
        self.layer = layer
        self.gate = gate
        self.layer_index = layer_index
        self.expert_tokens: torch.Tensor | None = None  # Z^l (B, K, D), set only inside `injecting`
        self.trace: InjectionTrace | None = None

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "layer":
                raise
            return getattr(self.layer, name)

    def forward(self, *args, **kwargs):
        if self.expert_tokens is not None:
            if args:
                hidden_states, args = args[0], args[1:]
            else:
                hidden_states = kwargs.pop("hidden_states")
            if hidden_states.shape[0] != self.expert_tokens.shape[0]:
                raise ValueError(
                    f"expert tokens are set for {self.expert_tokens.shape[0]} studies but the decoder got a batch of "
                    f"{hidden_states.shape[0]}; expand the StudyContext with index_select"
                )
            hidden_states, gate, alpha = self.gate(hidden_states, self.expert_tokens)
            if self.trace is not None:
                self.trace.add(self.layer_index, gate, alpha)
            args = (hidden_states, *args)
        return self.layer(*args, **kwargs)


@contextmanager
def injecting(
    layers: Sequence[InjectedLayer], expert_tokens: torch.Tensor, record: bool = False
) -> Iterator[InjectionTrace | None]:
    """Set Z^l (expert_tokens (B, L, K, D)) on every wrapped layer for the duration of the block; always cleared
    on exit, including when the block raises. Yields an `InjectionTrace` when `record` is True, else None."""
    if expert_tokens.shape[1] != len(layers):
        raise ValueError(f"expert tokens for {expert_tokens.shape[1]} layers, decoder has {len(layers)}")
    if any(layer.expert_tokens is not None for layer in layers):
        raise RuntimeError(
            "injection scopes do not nest: expert tokens are already set on the decoder layers"
        )
    trace = InjectionTrace(len(layers)) if record else None
    try:
        for index, layer in enumerate(layers):
            layer.expert_tokens = expert_tokens[:, index]
            layer.trace = trace
        yield trace
    finally:
        for layer in layers:
            layer.expert_tokens = None
            layer.trace = None


def wrap_layers(
    layer_list: nn.ModuleList, model_size: int, gate_mode: str, gate_bias_init: float
) -> nn.ModuleList:
    """A new ModuleList of `InjectedLayer`s around the layers of `layer_list` (each with its own gate)."""
    return nn.ModuleList(
        InjectedLayer(layer, ExpertGate(model_size, gate_mode, gate_bias_init), index)
        for index, layer in enumerate(layer_list)
    )
