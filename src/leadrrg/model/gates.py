"""LEAD's gate of one decoder layer (see `leadrrg.model.injection` for where it sits):

- `ExpertGate`: the parameters; before layer l, for every position t:
      alpha_t = softmax_k(LN(h_t) . Z^l_k / sqrt(D));  c_t = sum_k alpha_t,k Z^l_k
      g_t = sigmoid(w_g . [LN(h_t); c_t] + b_g) (dynamic) | sigmoid(b^l) (static) | 1 (open)
      h_t <- h_t + g_t c_t
- `GateStep`: one study's Z^l folded in (`ExpertGate.prepare`, autograd-safe: training and its forward).
- `DecodeGate` / `decode_gates`: the same formula regrouped for decoding (inference mode), every layer's prepared
  at once; equal to `GateStep` up to float rounding.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class ExpertGate(nn.Module):
    """The context-adaptive gate of one decoder layer (see the module docstring): `forward` computes
    (h + g c, g, alpha) for one call; `prepare` folds one study's Z^l in once, for the many calls of a forward
    pass with autograd (decoding, in inference mode, uses `decode_gates` instead)."""

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

    def apply(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden (B, T, D) -> h + g c alone."""
        return self(hidden)[0]


class DecodeGate:
    """The gate of one layer for decoding (`injecting` in inference mode; `decode_gates` prepares every layer's
    at once): the formula of `GateStep`, regrouped for speed, equal to it up to float rounding (~1e-7).

    - Z^l is held once (B, Kp, D), read by both products (keys: its transpose, a view), with 1 / sqrt(D) in LN's
      weight and bias: a decoding step reads this layer's data from memory (the layer before evicted it), so
      the bytes count, not only the ops.
    - The K experts are padded to Kp, a multiple of 16 (zero rows, scores -inf, so alpha there is exactly 0): a
      softmax over 14 entries and a matmul with 15 columns take several times longer on a CPU than over 16.
    - Per token, 8 ops (4 for static / open):
          q = LN(h) / sqrt(D); alpha = softmax(q Z^T + [0, -inf]); g = sigmoid(q sqrt(D) w_h + alpha (Z w_c + b))
          h + g (alpha Z)   (static / open: h + alpha (g Z))
      and one (B, T, D) tensor allocated: q, whose memory then takes c and h + g c (a large allocation costs
      page faults on a CPU)."""

    __slots__ = (
        "gate",
        "expert_tokens",
        "dtype",
        "norm",
        "keys",
        "mask",
        "head",
        "w_h",
        "logit",
        "values",
        "fixed",
    )

    def __init__(self, gate: ExpertGate, expert_tokens: torch.Tensor, dtype: torch.dtype, prepared: tuple):
        self.gate, self.expert_tokens, self.dtype = gate, expert_tokens, dtype
        weight, bias, experts, self.mask, self.w_h, self.logit, self.values, self.fixed = prepared
        self.norm = (gate.norm.normalized_shape, weight, bias, gate.norm.eps, torch.backends.cudnn.enabled)
        self.keys = experts.transpose(1, 2)  # Z^T (B, D, Kp), a view
        # q w_h: one batched matmul for one study, else one (B T, D) x (D, 1) product (much faster than B of them)
        self.head = torch.bmm if self.w_h is not None and self.w_h.dim() == 3 else torch.matmul

    def __call__(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """As `GateStep.__call__`: hidden (B, T, D) -> (h + g c, g, alpha (B, T, K))."""
        hidden, gate, alpha = self._run(hidden)
        return hidden, gate, alpha[..., : self.expert_tokens.shape[1]]

    def apply(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden (B, T, D) -> h + g c alone."""
        return self._run(hidden)[0]

    def _run(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if hidden.dtype != self.dtype:  # prepared for another dtype: the plain step for this one
            return GateStep(self.gate, self.expert_tokens, hidden.dtype)(hidden)
        query = torch.layer_norm(hidden, *self.norm)  # LN(h) / sqrt(D) (B, T, D)
        if self.mask is None:
            scores = torch.bmm(query, self.keys)
        else:
            scores = torch.baddbmm(self.mask, query, self.keys)  # (B, T, Kp), -inf where padded
        alpha = scores.softmax(dim=-1)  # (B, T, Kp)
        if self.fixed is not None:  # h + alpha (g Z)
            return torch.baddbmm(hidden, alpha, self.values, out=query), self.fixed, alpha
        gate = torch.baddbmm(self.head(query, self.w_h), alpha, self.logit).sigmoid_()  # g_t (B, T, 1)
        context = torch.bmm(alpha, self.values, out=query)  # c_t (B, T, D), in q's memory
        return torch.addcmul(hidden, gate, context, out=context), gate, alpha  # h + g c


def decode_gates(gates: Sequence[ExpertGate], expert_tokens: torch.Tensor) -> list[DecodeGate]:
    """One `DecodeGate` per layer from Z (B, L, K, D), every layer's prepared in the same few ops (not
    autograd-safe: for inference mode)."""
    if len({(gate.mode, gate.norm.weight.dtype) for gate in gates}) > 1:
        return [decode_gates([g], expert_tokens[:, i : i + 1])[0] for i, g in enumerate(gates)]
    dtype, mode = gates[0].norm.weight.dtype, gates[0].mode
    z = expert_tokens.to(dtype).transpose(0, 1)  # (L, B, K, D)
    layers, batch, num_experts, size = z.shape
    root = math.sqrt(size)
    padded = -(-num_experts // 16) * 16
    experts = z.new_zeros(layers, batch, padded, size)  # Z, zero rows after K
    experts[:, :, :num_experts] = z
    mask = None
    if padded > num_experts:
        mask = z.new_zeros(1, 1, padded)
        mask[..., num_experts:] = float("-inf")
    weight = torch.stack([gate.norm.weight for gate in gates]) / root  # LN's, over sqrt(D) (L, D)
    bias = torch.stack([gate.norm.bias for gate in gates]) / root
    w_h = logit = fixed = [None] * layers
    values = experts
    if mode == "dynamic":
        w_g = torch.stack([gate.proj.weight[0] for gate in gates]).to(dtype)  # (L, 2D)
        b_g = torch.cat([gate.proj.bias for gate in gates]).to(dtype)  # (L,)
        w_h = w_g[:, :size, None] * root  # (L, D, 1), times sqrt(D) for q = LN(h) / sqrt(D)
        w_h = w_h[:, None] if batch == 1 else w_h  # (L, 1, D, 1) for a batched matmul
        logit = z.new_zeros(layers, batch, padded, 1)  # Z w_c + b, zero where padded
        logit[:, :, :num_experts, 0] = torch.einsum("lbkd,ld->lbk", z, w_g[:, size:]) + b_g[:, None, None]
    elif mode == "static":
        fixed = torch.sigmoid(torch.stack([gate.bias for gate in gates])).to(dtype)  # (L,)
        values = experts * fixed[:, None, None, None]  # g Z
    else:
        fixed = z.new_ones(layers)
    return [
        DecodeGate(
            gate,
            expert_tokens[:, i],
            dtype,
            (weight[i], bias[i], experts[i], mask, w_h[i], logit[i], values[i], fixed[i]),
        )
        for i, gate in enumerate(gates)
    ]


def gate_values(gate: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """A step's gate ((B, T, 1) or 0-d) -> (B, T), given its alpha (B, T, K)."""
    return gate.squeeze(-1).expand(alpha.shape[:2])
