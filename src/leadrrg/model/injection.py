"""LEAD's layer-wise injection of expert evidence into an unmodified HF decoder.

- `confidence_weighting`: e~_k = p_k e_k + (1 - p_k) a_k (`mixture`), p_k (e_k + u_k) + (1 - p_k) a_k
  (`explicit`), p_k e_k (`product`) or e_k (`none`).
- `attribute_evidence`: with attribute experts (`model.experts.attributes`), e~_k += p_k sum_j q_k,j v_k,j: the
  side and severity the decoder reads (q, one-hot or soft over right / left / bilateral and mild / moderate /
  large; zero where none is read) select learned vectors v (unit-scale like u), carried only by present findings.
- `ExpertProjections`: Z^l = W^l e~ for every decoder layer l, computed once per study (B, L, K, D).
  W^l starts at zero, so a fresh model computes exactly what its base LLM computes.
- `ExpertInputTokens` (fusion=input, the baseline): W e~ (B, K, D) as extra input tokens instead.
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


class ExpertGate(nn.Module):
    """The context-adaptive gate of one decoder layer (see the module docstring): `forward` computes
    (h + g c, g, alpha) for one call; `prepare` folds one study's Z^l in once, for the many calls of decoding."""

    def __init__(self, model_size: int, mode: str, bias_init: float = 0.0):
        super().__init__()
        self.mode = mode  # dynamic: g_t from [LN(h_t); c_t] | static: g = sigmoid(b^l) | open: g = 1
        self.norm = nn.LayerNorm(model_size)
        if mode == "dynamic":
            self.proj = nn.Linear(2 * model_size, 1)  # w_g = [w_h; w_c], b_g
            nn.init.normal_(self.proj.weight, std=0.02)
            nn.init.constant_(self.proj.bias, bias_init)
        elif mode == "static":
            self.bias = nn.Parameter(torch.tensor(float(bias_init)))  # b^l
        elif mode != "open":
            raise ValueError(f"unknown gate mode {mode!r}")

    def forward(
        self, hidden_states: torch.Tensor, expert_tokens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """hidden_states (B, T, D), expert_tokens Z^l (B, K, D) -> (new hidden (B, T, D), gate (B, T), alpha (B, T, K))."""
        hidden, gate, alpha = self.prepare(expert_tokens, hidden_states.dtype)(hidden_states)
        return hidden, gate_values(gate, alpha), alpha

    def prepare(self, expert_tokens: torch.Tensor, dtype: torch.dtype | None = None) -> GateStep:
        """Z^l (B, K, D) -> a GateStep for hidden states of `dtype` (default the gate's). Everything that depends
        on the study only is computed here, inside autograd (gradients reach Z and the gate)."""
        return GateStep(self, expert_tokens, self.norm.weight.dtype if dtype is None else dtype)


class GateStep:
    """One layer's gate with one study's Z^l folded in (`ExpertGate.prepare`); a call does the per-token work:
    hidden (B, T, D) -> (h + g c (B, T, D), g ((B, T, 1) dynamic, 0-d static / open; `gate_values` makes it
    (B, T)), alpha (B, T, K)).

    With w_g = [w_h; w_c] and sum_k alpha_t,k = 1 the dynamic gate logit is
        w_g . [LN(h_t); c_t] + b_g = w_h . LN(h_t) + alpha_t . (Z^l w_c + b_g),
    so one matmul of LN(h_t) with `keys` [Z^l^T / sqrt(D), w_h] gives the K scores and the w_h term, and one
    matmul of alpha_t with `values` [Z^l, Z^l w_c + b_g] gives c_t and the rest of the logit. A static or open
    gate is one number: `values` is g Z^l, so alpha_t . values = g c_t. Parameters (and so checkpoints) are
    those of the plain formula."""

    __slots__ = (
        "gate",
        "expert_tokens",
        "dtype",
        "norm",
        "keys",
        "values",
        "fixed_gate",
        "num_experts",
        "size",
    )

    def __init__(self, gate: ExpertGate, expert_tokens: torch.Tensor, dtype: torch.dtype):
        self.gate, self.expert_tokens, self.dtype = gate, expert_tokens, dtype
        z = expert_tokens.to(dtype)  # (B, K, D)
        batch, self.num_experts, self.size = z.shape
        self.norm = ((self.size,), gate.norm.weight, gate.norm.bias, gate.norm.eps)  # LN's arguments
        self.keys = z.transpose(1, 2) / math.sqrt(self.size)  # Z^T / sqrt(D) (B, D, K)
        self.fixed_gate = None  # g of a static / open gate, None for a dynamic one
        if gate.mode == "dynamic":
            w_g = gate.proj.weight[0].to(dtype)  # (2D,)
            w_h = w_g[: self.size].view(1, self.size, 1).expand(batch, self.size, 1)  # (B, D, 1)
            self.keys = torch.cat([self.keys, w_h], dim=2)  # (B, D, K+1)
            expert_logit = (z @ w_g[self.size :] + gate.proj.bias.to(dtype)).unsqueeze(
                -1
            )  # Z w_c + b (B, K, 1)
            self.values = torch.cat([z, expert_logit], dim=2)  # [Z, Z w_c + b] (B, K, D+1)
        elif gate.mode == "static":
            self.fixed_gate = torch.sigmoid(gate.bias).to(dtype)  # ()
            self.values = z * self.fixed_gate  # g Z (B, K, D)
        else:
            self.fixed_gate = z.new_ones(())
            self.values = z

    def __call__(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if hidden.dtype != self.dtype:  # prepared for another dtype: fold Z^l in again for this one
            return GateStep(self.gate, self.expert_tokens, hidden.dtype)(hidden)
        scores = torch.bmm(
            F.layer_norm(hidden, *self.norm), self.keys
        )  # LN(h_t) . [Z / sqrt(D), w_h] (B, T, K[+1])
        if self.fixed_gate is not None:
            alpha = scores.softmax(dim=-1)  # (B, T, K)
            return hidden + torch.bmm(alpha, self.values), self.fixed_gate, alpha  # h + g c
        alpha = scores[..., : self.num_experts].softmax(dim=-1)  # (B, T, K)
        out = torch.bmm(alpha, self.values)  # [c_t, alpha . (Z w_c + b)] (B, T, D+1)
        gate = torch.sigmoid(out[..., self.size :] + scores[..., self.num_experts :])  # g_t (B, T, 1)
        return torch.addcmul(hidden, gate, out[..., : self.size]), gate, alpha  # h + g c


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

    def __init__(self, layer: nn.Module, step: GateStep, trace: InjectionTrace | None, index: int):
        self.layer = layer  # the wrapped layer again: a slot is read faster than an nn.Module attribute
        self.step, self.trace, self.index = step, trace, index
        self.batch = step.expert_tokens.shape[0]


class InjectedLayer(nn.Module):
    """Wraps one HF decoder layer: applies the gate to the incoming hidden states when expert tokens are set,
    then calls the wrapped layer with every positional and keyword argument untouched and returns its output
    (tuple or tensor) as is. Attribute misses are forwarded to the wrapped layer (e.g. `attention_type`).

    `injecting` prepares the gate once per scope (`ExpertGate.prepare`) and leaves the result in `_injection`,
    its one piece of scope state, so that a decoding step does only the per-token work."""

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


@contextmanager
def injecting(
    layers: Sequence[InjectedLayer], expert_tokens: torch.Tensor, record: bool = False
) -> Iterator[InjectionTrace | None]:
    """Set Z^l (expert_tokens (B, L, K, D)) on every wrapped layer for the duration of the block; always cleared
    on exit, including when the block raises. Yields an `InjectionTrace` when `record` is True, else None.
    The gates' per-study work (`ExpertGate.prepare`) is done here, once per scope."""
    if expert_tokens.shape[1] != len(layers):
        raise ValueError(f"expert tokens for {expert_tokens.shape[1]} layers, decoder has {len(layers)}")
    if any(layer._injection is not None for layer in layers):
        raise RuntimeError(
            "injection scopes do not nest: expert tokens are already set on the decoder layers"
        )
    trace = InjectionTrace(len(layers)) if record else None
    try:
        for index, layer in enumerate(layers):
            step = layer.gate.prepare(expert_tokens[:, index])
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
