"""Evidence a person can read: per generated token its text, mean gate, per-layer gates and top experts.

    {"format": "leadrrg.evidence/1",
     "experts": [K expert names], "layers": L,
     "tokens": [{"text": " heart", "display": " heart", "gate": 0.213, "gates": [L per-layer gates],
                 "experts": [["Cardiomegaly", 0.412], ["Edema", 0.201], ["No Finding", 0.133]]}, ...],
     "full": {"gates": (T, L), "alpha": (T, L, K)}}     <- only with evidence="full"

- `text` is the token's piece of the report as it reads in context (with its leading space), so joining the
  texts gives the report; `display` is the same piece in display form (`leadrrg.inference.display`: sentence
  case, punctuation attached), so joining those gives the result's `report_display`.
- `gates[l]` is g in h <- h + g * c before decoder layer l at the position whose output chose this token: how much
  of the experts' context entered that layer (0 = nothing, 1 = all of it). `gate` is their mean over layers.
- An expert's weight is its share of what was injected: sum_l g_l * alpha_l,k / sum_l g_l, where alpha_l is the
  token's attention over the K experts in layer l (when every gate is 0, the plain mean of alpha over layers).
  The top `TOP_EXPERTS` are listed, largest first.
- Every number is rounded to `DECIMALS` places. A model without layer-wise injection (fusion none / input / aux)
  has tokens with text only and `layers` 0.

Beside the evidence, each result carries its experts' thresholds (`expert_thresholds`), with an uncertainty band
(`decode.hedge_band`) the lower edge of each band (`hedge_floors`), and the experts the report contradicts
(`contradictions`): an expert whose p is above its band's floor (the decoder read "present" or "uncertain") while
the labeler reads the report as not stating the finding ("omitted"), whose p is in its band while the report states
the finding without a hedge ("overstated"), or whose p is not above its floor while the report states the finding,
present or uncertain ("unsupported"). Without a band the floor is the threshold and "overstated" cannot occur. A
report that states a finding in one sentence and denies it in another contradicts its expert whichever way it reads
("conflicting", `leadrrg.labeler.rules.report_defects`).

What it does not prove: a gate says how much expert context entered the residual stream, not that the word was
chosen because of it; alpha is which expert the token attended to, not a causal attribution. Flipping an expert
(`leadrrg diagnose --flip`) is the causal test.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from leadrrg.config import DecodeConfig
from leadrrg.inference.display import display_pieces

EVIDENCE_FORMAT = "leadrrg.evidence/1"
DECIMALS = 3
TOP_EXPERTS = 3
# The threshold shown for an expert the decoder reads unthresholded (decode.expert_threshold 0, none calibrated)
SOFT_MARK = 0.5


def token_pieces(tokenizer, token_ids: Sequence[int]) -> list[str]:
    """The text each token adds to the decoded report (incremental decoding, so spaces and merged bytes read
    as they do in the report)."""
    pieces, emitted = [], ""
    for end in range(1, len(token_ids) + 1):
        text = tokenizer.decode(token_ids[:end])
        if text.endswith("\ufffd") and end < len(token_ids):
            pieces.append("")  # an incomplete UTF-8 sequence: its text comes with a later token
            continue
        common = len(os.path.commonprefix([emitted, text]))
        pieces.append(text[common:])
        emitted = text
    return pieces


def expert_weights(gates: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """gates (T, L), alpha (T, L, K) -> (T, K): each expert's share of the injected context per token."""
    gates = gates.float()
    total = gates.sum(dim=1, keepdim=True)  # (T, 1)
    weights = torch.where(
        total > 0, gates / total.clamp_min(1e-12), torch.full_like(gates, 1 / gates.shape[1])
    )
    return (weights[..., None] * alpha.float()).sum(dim=1)  # (T, K)


def compact_evidence(
    pieces: Sequence[str],
    gates: torch.Tensor | None,
    alpha: torch.Tensor | None,
    expert_names: Sequence[str],
    full: bool = False,
) -> dict[str, Any]:
    """The compact evidence of one report (see the module docstring). gates (T, L), alpha (T, L, K) or None."""
    names = list(expert_names)
    shown = display_pieces(pieces)
    if gates is None or alpha is None:
        tokens = [{"text": piece, "display": display} for piece, display in zip(pieces, shown)]
        return {"format": EVIDENCE_FORMAT, "experts": names, "layers": 0, "tokens": tokens}
    weights = expert_weights(gates, alpha)  # (T, K)
    k = min(TOP_EXPERTS, len(names))
    top = weights.topk(k, dim=-1) if k else None
    tokens = []
    for t, piece in enumerate(pieces):
        row = gates[t]
        tokens.append(
            {
                "text": piece,
                "display": shown[t],
                "gate": _round(row.mean().item()),
                "gates": [_round(g) for g in row.tolist()],
                "experts": [
                    [names[i], _round(w)] for w, i in zip(top.values[t].tolist(), top.indices[t].tolist())
                ]
                if top is not None
                else [],
            }
        )
    evidence: dict[str, Any] = {
        "format": EVIDENCE_FORMAT,
        "experts": names,
        "layers": int(gates.shape[1]),
        "tokens": tokens,
    }
    if full:
        evidence["full"] = {
            "gates": torch.round(gates.float(), decimals=DECIMALS).tolist(),
            "alpha": torch.round(alpha.float(), decimals=DECIMALS).tolist(),
        }
    return evidence


def gate_rows(evidence: dict[str, Any] | None) -> list[list[float]]:
    """(T, L) per-layer gates of a compact evidence record ([] without layer-wise injection)."""
    if not evidence:
        return []
    return [token["gates"] for token in evidence.get("tokens", []) if "gates" in token]


def _round(value: float) -> float:
    return round(float(value), DECIMALS)


def expert_thresholds(decode: DecodeConfig, names: Sequence[str]) -> dict[str, float]:
    """Each expert's threshold under `decode` (its calibrated one, else decode.expert_threshold; `SOFT_MARK`
    where the decoder reads soft p and no threshold is set)."""
    return {name: decode.threshold_for(name) or SOFT_MARK for name in names}


def hedge_floors(decode: DecodeConfig, names: Sequence[str], hedges: bool) -> dict[str, float]:
    """Each expert's band floor (`DecodeConfig.hedge_floor`) when the decoder reads an uncertainty band (a band > 0,
    a model trained to hedge and a thresholding decoder), else {} (no band)."""
    if not hedges or decode.hedge_band <= 0 or decode.expert_threshold <= 0:
        return {}
    return {name: decode.hedge_floor(name) for name in names}


def contradictions(
    expert_probs: Mapping[str, float],
    thresholds: Mapping[str, float],
    findings: Mapping[str, int | None],
    floors: Mapping[str, float] | None = None,
    expert_attributes: Mapping[str, Mapping[str, str]] | None = None,
    stated_attributes: Mapping[str, Mapping[str, str | None]] | None = None,
    conflicting: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """The experts the report contradicts, in expert order: [{"expert", "p", "threshold", "kind"}], kind
    "omitted" (p above its floor, the decoder read present or uncertain, but the report does not state the finding:
    absent or not mentioned), "overstated" (p in the band, floor < p <= threshold, and the report states the finding
    without a hedge), "unsupported" (the report states it, present or uncertain, while p <= floor), or, for a
    finding above its threshold that the report states, "side" / "severity": the report gives it another side
    (right / left / bilateral) or severity (mild / moderate / large) than its expert reads (`expert_attributes`,
    observation -> {"side", "severity"}, against `stated_attributes`, the labeler's reading of the report,
    `leadrrg.labeler.attributes.report_attributes`); such an entry also has "expert_value" and "stated_value". And
    kind "conflicting" for each expert whose finding the report states in one sentence and denies in another
    (`conflicting`, `leadrrg.labeler.rules.report_defects`), whatever its p.
    `floors`: each expert's band floor (`hedge_floors`; default, or missing: its threshold, no band)."""
    out = []
    floors, expert_attributes = floors or {}, expert_attributes or {}
    stated_attributes = stated_attributes or {}
    for name, p in expert_probs.items():
        if name not in thresholds:
            continue
        threshold = thresholds[name]
        floor = floors.get(name, threshold)
        stated = findings.get(name)
        entry = {"expert": name, "p": _round(p), "threshold": threshold}
        if p > floor and stated not in (1, -1):
            out.append({**entry, "kind": "omitted"})
        elif floor < p <= threshold and stated == 1:
            out.append({**entry, "kind": "overstated"})
        elif p <= floor and stated in (1, -1):
            out.append({**entry, "kind": "unsupported"})
        elif p > threshold and stated == 1:
            read, said = expert_attributes.get(name, {}), stated_attributes.get(name, {})
            for attribute in ("side", "severity"):
                if read.get(attribute) and said.get(attribute) and read[attribute] != said[attribute]:
                    out.append(
                        {
                            **entry,
                            "kind": attribute,
                            "expert_value": read[attribute],
                            "stated_value": said[attribute],
                        }
                    )
        if name in conflicting:
            out.append({**entry, "kind": "conflicting"})
    return out
