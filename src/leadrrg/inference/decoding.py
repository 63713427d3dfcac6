"""`generate_reports`: the one decoding function of leadrrg (CLI, evaluation, benchmarks, the service).

Data flow:

    images (B, V, C, H, W) -> `steps.decoding_context` (the model's `encode_images`, decode policy on what the
    decoder reads, then `fuse_experts`) -> StudyContext (visual tokens, expert logits, Z^l), once per study
    [BOS, visual tokens, "Findings:"] -> one decoder pass (the prompt), filling the KV cache
    then one decoder call per new token, feeding only that token with the cache, inside
    `model.injecting(context)`, so LEAD's injection is computed for the new token only.

Layout: every prompt in a batch has the same length (same number of visual tokens; tokens of missing views
are masked out in the attention mask), so there is no left padding and position ids are simply the cache
length, exactly as in training. A sequence that has emitted EOS keeps being fed the pad token (its KV rows are
never read by the others) and its later tokens are discarded.

Strategies (`DecodeConfig.strategy`): `greedy`; `sample` (temperature, top-k, top-p, drawn from an optional
`torch.Generator` so a seed reproduces the output); `beam` (see `leadrrg.inference.beam`; `num_beams = 1`
is greedy, as in Hugging Face). Logit processing, in this order, for every strategy: the experts' logit bias
(`decode.expert_bias` > 0: CCD-style, strength * clip(log(p / (1 - p)), +-log gamma) added at the first tokens of
each expert's finding words, a (B, vocab) tensor built once per batch from `StudyContext.expert_probs`, see
`leadrrg.inference.expert_bias`; refused for a model without experts), CTRL repetition penalty on the tokens generated so
far, `no_repeat_ngram_size` over the generated tokens, EOS banned before `min_new_tokens`; then temperature,
top-k, top-p when sampling.

Evidence (`return_evidence=True`, fusion=layerwise): row i of `gates` (steps, L) and `alpha` (steps, L, K) is the
injection at the decoder position whose output distribution chose token i: the last prompt position for the
first token, then the position of token i-1. Rows align one to one with `token_ids` (EOS is not included).
Beam search keeps each hypothesis's rows through the beam reordering, so its evidence is that of the returned
hypothesis. With fusion none or input there is nothing injected and gates / alpha are None.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from leadrrg.config import DecodeConfig
from leadrrg.constants import SEVERITIES, SEVERITY_OBSERVATIONS, SIDE_OBSERVATIONS, SIDES
from leadrrg.errors import LeadrrgError
from leadrrg.inference.beam import beam_search
from leadrrg.inference.expert_bias import expert_logit_bias, finding_token_ids
from leadrrg.inference.steps import (
    CachedDecoder,
    DecodeState,
    Generators,
    Hypotheses,
    LogitsProcessor,
    decoding_context,
    prompt_inputs,
    sample_next,
    take_evidence,
)

if TYPE_CHECKING:
    from leadrrg.data.tokenizer import ReportTokenizer
    from leadrrg.model.context import StudyContext
    from leadrrg.model.lead import LeadModel

logger = logging.getLogger(__name__)


@dataclass
class GeneratedReport:
    """One generated report. `token_ids` exclude BOS, the prompt and EOS; `expert_probs` maps expert name to
    probability (None for fusion=none); `gates` (steps, L) and `alpha` (steps, L, K) are float32 CPU tensors,
    one row per token of `token_ids`, when evidence was requested and the model injects layer-wise."""

    text: str
    token_ids: list[int]
    expert_probs: dict[str, float] | None = None
    gates: torch.Tensor | None = None
    alpha: torch.Tensor | None = None
    # side and severity the experts give each finding (their most likely values, for every expert; None
    # without attribute experts): {name: {"side": ..., "severity": ...}}
    expert_attributes: dict[str, dict[str, str]] | None = None


# --------------------------------------------------------------------------------------------------
# Greedy and sampling


def greedy_or_sample(state: DecodeState, generator: Generators) -> Hypotheses:
    """Batched greedy or sampled decoding with the KV cache; stops when every sequence has emitted EOS.
    `state.logit_bias` (B, vocab) is added to the logits at every step (the expert bias)."""
    model, context, decode = state.model, state.context, state.decode
    eos_id, pad_id, max_new_tokens = state.eos_id, state.pad_id, state.max_new_tokens
    inputs_embeds, prompt_mask, record, logit_bias = (
        state.inputs_embeds,
        state.prompt_mask,
        state.record,
        state.logit_bias,
    )
    batch, device = inputs_embeds.shape[0], inputs_embeds.device
    sample = decode.strategy == "sample"
    tokens = torch.full((batch, max_new_tokens), pad_id, dtype=torch.long, device=device)  # (B, N)
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    steps_gates: list[torch.Tensor] = []
    steps_alpha: list[torch.Tensor] = []
    decoder = CachedDecoder(model, prompt_mask, max_new_tokens, cache=decode.cache, compile=decode.compile)
    with model.injecting(context, record=record) as trace:
        logits = decoder.prefill(inputs_embeds)  # (B, vocab)
        processor = LogitsProcessor(decode, eos_id, batch, logits.shape[-1], device, logit_bias)
        for step in range(max_new_tokens):
            evidence = take_evidence(trace)
            if evidence is not None:
                steps_gates.append(evidence[0])
                steps_alpha.append(evidence[1])
            logits = processor(logits, tokens[:, :step], step)
            next_ids = sample_next(logits, decode, generator) if sample else logits.argmax(dim=-1)  # (B,)
            next_ids = next_ids.masked_fill(finished, pad_id)
            tokens[:, step] = next_ids
            processor.update(next_ids)
            finished |= next_ids == eos_id
            if step + 1 == max_new_tokens or bool(finished.all()):  # the one host sync per step
                break
            logits = decoder.step(next_ids)
    # Tokens before the first EOS (the positions after it hold pad, or EOS itself when pad_id == eos_id).
    is_eos = tokens == eos_id
    lengths = torch.where(is_eos.any(dim=1), is_eos.int().argmax(dim=1), max_new_tokens)
    lengths_list = lengths.tolist()
    token_ids = [row[:n] for row, n in zip(tokens.tolist(), lengths_list)]
    if not steps_gates:
        return Hypotheses(token_ids)
    gates = torch.stack(steps_gates, dim=1).cpu()  # (B, steps, L)
    alpha = torch.stack(steps_alpha, dim=1).cpu()  # (B, steps, L, K)
    return Hypotheses(
        token_ids,
        [gates[i, :n] for i, n in enumerate(lengths_list)],
        [alpha[i, :n] for i, n in enumerate(lengths_list)],
    )


# --------------------------------------------------------------------------------------------------
# Public API


def max_new_tokens_for(model: LeadModel, prompt_length: int, decode: DecodeConfig) -> int:
    """decode.max_new_tokens, capped so that prompt + report fit the decoder's position table."""
    limit = getattr(model.lm.config, "max_position_embeddings", None)
    if limit is None or prompt_length + decode.max_new_tokens <= limit:
        return decode.max_new_tokens
    capped = limit - prompt_length
    if capped < 1:
        raise LeadrrgError(
            f"the prompt takes {prompt_length} positions but the decoder holds only {limit} "
            "(model.decoder.max_positions); expected a run trained with room for its reports"
        )
    logger.warning(
        "decode.max_new_tokens=%d does not fit the decoder's %d positions after a %d-token prompt; using %d",
        decode.max_new_tokens,
        limit,
        prompt_length,
        capped,
    )
    return capped


def generate_reports(
    model: LeadModel,
    tokenizer: ReportTokenizer,
    images: torch.Tensor,
    view_mask: torch.Tensor,
    decode: DecodeConfig,
    return_evidence: bool = False,
    generator: Generators = None,
    expert_probs: torch.Tensor | None = None,
    attribute_probs: torch.Tensor | None = None,
) -> list[GeneratedReport]:
    """Reports for a batch of studies: images (B, V, C, H, W), view_mask (B, V) bool -> B GeneratedReports.
    `expert_probs` (B, K) replaces the experts' probabilities that the decoder reads (an oracle, a flipped
    expert, a clinician's override); the reports then carry those probabilities. `attribute_probs` (B, K, 2, 3)
    replaces the side and severity the decoder reads (a side flip).

    Runs under `torch.inference_mode()` with the model in eval mode (its previous mode is restored). The study
    context is computed once; the prompt is run once; each step feeds one token with the KV cache. `generator`
    seeds sampling (one for the batch, or one per study: `leadrrg.inference.rerank`). Each report carries the
    expert probabilities (unless fusion=none); with `return_evidence` and fusion=layerwise also per-token gates
    (steps, L) and alpha (steps, L, K) (see the module docstring)."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            images, view_mask = images.to(_device(model)), view_mask.to(_device(model))
            if expert_probs is not None:
                expert_probs = torch.as_tensor(expert_probs, dtype=torch.float32, device=images.device)
            if attribute_probs is not None:
                attribute_probs = torch.as_tensor(attribute_probs, dtype=torch.float32, device=images.device)
            context = decoding_context(model, images, view_mask, decode, expert_probs, attribute_probs)
            inputs_embeds, prompt_mask = prompt_inputs(model, tokenizer, context)  # (B, P, D), (B, P)
            state = DecodeState(
                model,
                context,
                inputs_embeds,
                prompt_mask,
                decode,
                tokenizer.eos_id,
                tokenizer.pad_id,
                record=return_evidence and context.expert_tokens is not None,
                max_new_tokens=max_new_tokens_for(model, inputs_embeds.shape[1], decode),
                logit_bias=expert_bias_for(model, tokenizer, context, decode),  # (B, vocab) or None
            )
            if decode.strategy == "beam" and decode.num_beams > 1:
                hypotheses = beam_search(state)
            else:
                hypotheses = greedy_or_sample(state, generator)
            probs = context.expert_probs
            names = list(model.config.experts.names)
            attributes = _attribute_names(context, names, attribute_probs)
    finally:
        model.train(was_training)
    probs_rows = probs.float().cpu().tolist() if probs is not None else None
    reports = []
    for i, ids in enumerate(hypotheses.token_ids):
        reports.append(
            GeneratedReport(
                text=tokenizer.decode(ids),
                token_ids=list(ids),
                expert_probs=dict(zip(names, probs_rows[i])) if probs_rows is not None else None,
                gates=hypotheses.gates[i] if hypotheses.gates is not None else None,
                alpha=hypotheses.alpha[i] if hypotheses.alpha is not None else None,
                expert_attributes=attributes[i] if attributes is not None else None,
            )
        )
    return reports


def _attribute_names(
    context: StudyContext, names: list[str], attribute_probs: torch.Tensor | None
) -> list[dict[str, dict[str, str]]] | None:
    """Each study's most likely side and severity per expert (the override's where given), by name; a value an
    override leaves unread (zeros) and an attribute that does not apply (Cardiomegaly's side) are left out."""
    if context.attribute_logits is None:
        return None
    scores = attribute_probs if attribute_probs is not None else context.attribute_logits  # (B, K, 2, 3)
    values = scores.argmax(dim=-1).masked_fill(scores.sum(dim=-1) == 0, -1).cpu().tolist()  # (B, K, 2)
    studies = []
    for row in values:
        named: dict[str, dict[str, str]] = {}
        for name, (side, severity) in zip(names, row):
            entry = {}
            if name in SIDE_OBSERVATIONS and side >= 0:
                entry["side"] = SIDES[side]
            if name in SEVERITY_OBSERVATIONS and severity >= 0:
                entry["severity"] = SEVERITIES[severity]
            if entry:
                named[name] = entry
        studies.append(named)
    return studies


def expert_bias_for(
    model: LeadModel, tokenizer: ReportTokenizer, context: StudyContext, decode: DecodeConfig
) -> torch.Tensor | None:
    """The CCD-style expert logit bias (B, vocab) from `context.expert_probs` (B, K), or None when
    decode.expert_bias is 0 (see `leadrrg.inference.expert_bias`)."""
    if decode.expert_bias == 0:
        return None
    if context.expert_probs is None:
        raise LeadrrgError(
            f"decode.expert_bias is {decode.expert_bias!r} but this model has no experts (fusion none): "
            "there are no expert probabilities to bias the words with; expected decode.expert_bias=0"
        )
    token_ids = finding_token_ids(tokenizer, list(model.config.experts.names))
    vocab = model.lm.get_output_embeddings().weight.shape[0]
    return expert_logit_bias(
        context.expert_probs, token_ids, vocab, decode.expert_bias, decode.expert_bias_gamma
    )


def _device(model: LeadModel) -> torch.device:
    return next(model.parameters()).device
