"""LEAD's layer-wise injection of expert evidence into an unmodified HF decoder.

- `confidence_weighting`: e~_k = p_k e_k + (1 - p_k) a_k (`mixture`), p_k (e_k + u_k) + (1 - p_k) a_k
  (`explicit`), p_k e_k (`product`) or e_k (`none`).
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
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from leadrrg.config import InjectionConfig


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
        self.absent, self.present = confidence_vectors(config.confidence, num_experts, expert_size)
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
        return confidence_weighting(features, probs, self.absent, self.confidence, self.present)

    def forward(self, features: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        x = self.weighted_features(features, probs)  # (B, K, De)
        if self.down is not None:
            x = x @ self.down  # (B, K, r)
        z = torch.einsum("bki,lid->blkd", x, self.up)  # (B, L or 1, K, D)
        return z.expand(-1, self.num_layers, -1, -1)  # (B, L, K, D)


class ExpertGate(nn.Module):
    """The context-adaptive gate of one decoder layer (see the module docstring).

    The per-study work is done once by `prepare` (Z^l -> a step function); each call of that function does the
    per-token work only. With w_g = [w_h; w_c] and sum_k alpha_t,k = 1 the gate logit is
        w_g . [LN(h_t); c_t] + b_g = w_h . LN(h_t) + alpha_t . (Z^l w_c + b_g),
    so one matmul of LN(h_t) with [Z^l^T / sqrt(D), w_h] gives the K scores and the w_h term, and one matmul of
    alpha_t with [Z^l, Z^l w_c + b_g] gives c_t and the rest of the logit. A static gate scales Z^l once.
    Parameters (and so checkpoints) are those of the plain formula."""

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
        hidden, gate, alpha = self.prepare(expert_tokens, hidden_states.dtype)(hidden_states)
        return hidden, gate_values(gate, alpha), alpha

    def prepare(self, expert_tokens: torch.Tensor, dtype: torch.dtype | None = None) -> GateStep:
        """Z^l (B, K, D) -> step(hidden (B, T, D)) -> (new hidden (B, T, D), gate, alpha (B, T, K)); gate is
        (B, T, 1) (dynamic) or a 0-d tensor (static, open): `gate_values` makes it (B, T). Everything that
        depends on the study only is computed here, inside autograd (gradients reach Z and the gate)."""
        if dtype is None:
            dtype = self.norm.weight.dtype
        z = expert_tokens.to(dtype)  # (B, K, D)
        batch, num_experts, size = z.shape
        shape, weight, bias, eps = (size,), self.norm.weight, self.norm.bias, self.norm.eps
        keys = z.transpose(1, 2) / math.sqrt(size)  # (B, D, K)

        def other_dtype(hidden: torch.Tensor):
            return self.prepare(expert_tokens, hidden.dtype)(hidden)

        if self.proj is not None:
            w_g = self.proj.weight[0].to(dtype)  # (2D,)
            keys = torch.cat([keys, w_g[:size].view(1, size, 1).expand(batch, size, 1)], dim=2)  # (B, D, K+1)
            expert_logit = (z @ w_g[size:] + self.proj.bias.to(dtype)).unsqueeze(-1)  # Z w_c + b (B, K, 1)
            values = torch.cat([z, expert_logit], dim=2)  # [Z, Z w_c + b] (B, K, D+1)

            def step(hidden: torch.Tensor):
                if hidden.dtype != dtype:
                    return other_dtype(hidden)
                scores = torch.bmm(F.layer_norm(hidden, shape, weight, bias, eps), keys)  # (B, T, K+1)
                alpha = scores[..., :num_experts].softmax(dim=-1)  # (B, T, K)
                out = torch.bmm(alpha, values)  # [c, alpha . (Z w_c + b)] (B, T, D+1)
                gate = torch.sigmoid(out[..., size:] + scores[..., num_experts:])  # (B, T, 1)
                return torch.addcmul(hidden, gate, out[..., :size]), gate, alpha

            return step
        if self.bias is not None:
            gate = torch.sigmoid(self.bias).to(dtype)  # ()
            values = z * gate  # g Z (B, K, D)
        else:
            gate = z.new_ones(())
            values = z

        def step(hidden: torch.Tensor):
            if hidden.dtype != dtype:
                return other_dtype(hidden)
            scores = torch.bmm(F.layer_norm(hidden, shape, weight, bias, eps), keys)  # (B, T, K)
            alpha = scores.softmax(dim=-1)
            return hidden + torch.bmm(alpha, values), gate, alpha

        return step


GateStep = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def gate_values(gate: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """A step's gate ((B, T, 1) or 0-d) -> (B, T), given its alpha (B, T, K)."""
    return gate.squeeze(-1).expand(alpha.shape[:2])


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
    """What one wrapped layer needs while a scope is open, in slots for a cheap per-step lookup."""

    __slots__ = ("layer", "step", "trace", "index", "batch")

    def __init__(
        self, layer: nn.Module, step: GateStep, trace: InjectionTrace | None, index: int, batch: int
    ):
        self.layer, self.step, self.trace, self.index, self.batch = layer, step, trace, index, batch


class InjectedLayer(nn.Module):
    """Wraps one HF decoder layer: applies the gate to the incoming hidden states when expert tokens are set,
    then calls the wrapped layer with every positional and keyword argument untouched and returns its output
    (tuple or tensor) as is. Attribute misses are forwarded to the wrapped layer (e.g. `attention_type`).

    `injecting` prepares the gate once per scope (`ExpertGate.prepare`) and leaves the result in `_injection`,
    so that a decoding step does only the per-token work."""

    def __init__(self, layer: nn.Module, gate: ExpertGate, layer_index: int):
        super().__init__()
        self.layer = layer
        self.gate = gate
        self.layer_index = layer_index
        self.expert_tokens: torch.Tensor | None = None  # Z^l (B, K, D), set only inside `injecting`
        self.trace: InjectionTrace | None = None
        self._injection: _Injection | None = None  # set with expert_tokens by `injecting`

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "layer":
                raise
            return getattr(self.layer, name)

    def forward(self, *args, **kwargs):
        injection = self._injection
        if injection is None:  # outside `injecting`: the wrapped layer alone
            return self.layer(*args, **kwargs)
        if args:
            hidden_states, args = args[0], args[1:]
        else:
            hidden_states = kwargs.pop("hidden_states")
        if hidden_states.shape[0] != injection.batch:
            raise ValueError(
                f"expert tokens are set for {injection.batch} studies but the decoder got a batch of "
                f"{hidden_states.shape[0]}; expand the StudyContext with index_select"
            )
        hidden_states, gate, alpha = injection.step(hidden_states)
        if injection.trace is not None:
            injection.trace.add(injection.index, gate, alpha)
        return injection.layer(hidden_states, *args, **kwargs)

    def _prepare(self, expert_tokens: torch.Tensor, trace: InjectionTrace | None) -> _Injection:
        step = self.gate.prepare(expert_tokens)
        return _Injection(self.layer, step, trace, self.layer_index, expert_tokens.shape[0])


@contextmanager
def injecting(
    layers: Sequence[InjectedLayer], expert_tokens: torch.Tensor, record: bool = False
) -> Iterator[InjectionTrace | None]:
    """Set Z^l (expert_tokens (B, L, K, D)) on every wrapped layer for the duration of the block; always cleared
    on exit, including when the block raises. Yields an `InjectionTrace` when `record` is True, else None.
    The gates' per-study work (`ExpertGate.prepare`) is done here, once per scope."""
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
            layer._injection = layer._prepare(layer.expert_tokens, trace)
        yield trace
    finally:
        for layer in layers:
            layer.expert_tokens = None
            layer.trace = None
            layer._injection = None


def wrap_layers(
    layer_list: nn.ModuleList, model_size: int, gate_mode: str, gate_bias_init: float
) -> nn.ModuleList:
    """A new ModuleList of `InjectedLayer`s around the layers of `layer_list` (each with its own gate)."""
    return nn.ModuleList(
        InjectedLayer(layer, ExpertGate(model_size, gate_mode, gate_bias_init), index)
        for index, layer in enumerate(layer_list)
    )
