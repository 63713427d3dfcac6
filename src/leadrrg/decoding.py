"""`generate_reports`: the one decoding function of leadrrg (CLI, evaluation, benchmarks, the service).

Data flow (DESIGN.md section 3):

    images (B, V, C, H, W) -> model.encode_study -> StudyContext (visual tokens, expert logits, Z^l), once
    [BOS, visual tokens, "Findings:"] -> one decoder pass (the prompt), filling the KV cache
    then one decoder call per new token, feeding only that token with the cache, inside
    `model.injecting(context)`, so LEAD's injection is computed for the new token only.

Layout: every prompt in a batch has the same length (same number of visual tokens; tokens of missing views
are masked out in the attention mask), so there is no left padding and position ids are simply the cache
length, exactly as in training. A sequence that has emitted EOS keeps being fed the pad token (its KV rows are
never read by the others) and its later tokens are discarded.

Strategies (`DecodeConfig.strategy`): `greedy`; `sample` (temperature, top-k, top-p, drawn from an optional
`torch.Generator` so a seed reproduces the output); `beam` (see `leadrrg.decoding_beam`; `num_beams = 1`
is greedy, as in Hugging Face). Logit processing, in this order, for every strategy: the experts' logit bias
(`decode.expert_bias` > 0: CCD-style, strength * clip(log(p / (1 - p)), +-log gamma) added at the first tokens of
each expert's finding words, a (B, vocab) tensor built once per batch from `StudyContext.expert_probs`, see
`leadrrg.expert_bias`; refused for a model without experts), CTRL repetition penalty on the tokens generated so
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
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from leadrrg.config import DecodeConfig
from leadrrg.errors import LeadrrgError
from leadrrg.expert_bias import expert_logit_bias, finding_token_ids

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


# --------------------------------------------------------------------------------------------------
# The cached decoder: prompt once, then one token per call


class CachedDecoder:
    """Runs the LM on the prompt once, then on one new token per call with the KV cache.

    The attention mask is preallocated for the whole generation: (B, P + max_new_tokens), the prompt part
    copied from the study's mask (missing views masked), the rest ones. Call inside `model.injecting`."""

    def __init__(self, model, prompt_mask: torch.Tensor, max_new_tokens: int):
        batch, prompt_length = prompt_mask.shape
        self.model = model
        self.mask = prompt_mask.new_ones(batch, prompt_length + max_new_tokens)  # (B, P + N)
        self.mask[:, :prompt_length] = prompt_mask
        self.length = 0  # positions in the cache
        self.cache = None

    def prefill(self, inputs_embeds: torch.Tensor) -> torch.Tensor:
        """inputs_embeds (B, P, D) -> next-token logits (B, vocab) at the last prompt position."""
        self.length = inputs_embeds.shape[1]
        out = self.model.lm_forward(
            inputs_embeds, self.mask[:, : self.length], use_cache=True, logits_to_keep=1
        )
        self.cache = out.past_key_values
        return out.logits[:, -1]

    def step(self, token_ids: torch.Tensor) -> torch.Tensor:
        """token_ids (B,) -> next-token logits (B, vocab); the cache grows by one position."""
        self.length += 1
        embeds = self.model.embed_tokens(token_ids[:, None])  # (B, 1, D)
        out = self.model.lm_forward(
            embeds, self.mask[:, : self.length], past_key_values=self.cache, use_cache=True
        )
        self.cache = out.past_key_values
        return out.logits[:, -1]

    def repeat_interleave(self, repeats: int) -> None:
        """Each row repeated `repeats` times (beam search: B studies -> B * num_beams beams)."""
        self.cache.batch_repeat_interleave(repeats)
        self.mask = self.mask.repeat_interleave(repeats, dim=0)

    def reorder(self, rows: torch.Tensor) -> None:
        """Keep rows `rows` (B',) of the cache and mask, in that order (beam search)."""
        self.cache.reorder_cache(rows)
        self.mask = self.mask.index_select(0, rows)


def prompt_inputs(model, tokenizer, context) -> tuple[torch.Tensor, torch.Tensor]:
    """[BOS, visual tokens, "Findings:"] for every study: -> inputs_embeds (B, P, D), attention mask (B, P)."""
    batch = context.visual_tokens.shape[0]
    ids = torch.tensor([tokenizer.bos_id, *tokenizer.prompt_ids], device=context.visual_tokens.device)
    ids = ids.expand(batch, -1)  # (B, 1 + prompt)
    return model.embed_inputs(context, ids, torch.ones_like(ids))


def take_evidence(trace) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The last recorded position of an InjectionTrace -> (gates (B, L), alpha (B, L, K)); clears the trace so
    that each call only concatenates one forward's entries."""
    if trace is None:
        return None
    gates, alpha = trace.gates()[:, -1], trace.alpha()[:, -1]
    trace.clear()
    return gates, alpha


# --------------------------------------------------------------------------------------------------
# Logit processing


class LogitsProcessor:
    """The expert logit bias, repetition penalty, no-repeat n-grams and the EOS ban before `min_new_tokens`,
    applied to (B, vocab) logits given the tokens generated so far. Keeps a (B, vocab) `seen` mask for the
    repetition penalty. `logit_bias` (B, vocab) is added first (None: no bias, no cost)."""

    def __init__(
        self,
        decode: DecodeConfig,
        eos_id: int,
        batch: int,
        vocab: int,
        device: torch.device,
        logit_bias: torch.Tensor | None = None,
    ):
        self.decode = decode
        self.eos_id = eos_id
        self.logit_bias = logit_bias
        self.seen = (
            torch.zeros(batch, vocab, dtype=torch.bool, device=device)
            if decode.repetition_penalty != 1.0
            else None
        )

    @property
    def active(self) -> bool:
        d = self.decode
        return (
            self.logit_bias is not None
            or self.seen is not None
            or d.no_repeat_ngram_size > 0
            or d.min_new_tokens > 0
        )

    def __call__(self, logits: torch.Tensor, generated: torch.Tensor, step: int) -> torch.Tensor:
        """logits (B, vocab), generated (B, step) -> processed logits (B, vocab) (a new tensor when changed)."""
        if not self.active:
            return logits
        if self.logit_bias is not None:
            logits = logits.float() + self.logit_bias  # a new tensor
        else:
            logits = logits.float().clone()
        if self.seen is not None:
            penalty = self.decode.repetition_penalty
            penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
            logits = torch.where(self.seen, penalised, logits)
        n = self.decode.no_repeat_ngram_size
        if n > 0 and step >= n:
            logits.masked_fill_(banned_ngram_tokens(generated, n, logits.shape[-1]), float("-inf"))
        if step < self.decode.min_new_tokens:
            logits[:, self.eos_id] = float("-inf")
        return logits

    def update(self, token_ids: torch.Tensor) -> None:
        """Record the tokens just chosen (B,)."""
        if self.seen is not None:
            self.seen.scatter_(1, token_ids[:, None], True)

    def reorder(self, rows: torch.Tensor) -> None:
        """Keep rows `rows` (beam search). The logit bias is not reordered: beams stay within their study,
        whose rows all hold the same bias."""
        if self.seen is not None:
            self.seen = self.seen.index_select(0, rows)


def banned_ngram_tokens(generated: torch.Tensor, n: int, vocab: int) -> torch.Tensor:
    """generated (B, T) -> (B, vocab) bool: tokens that would repeat an n-gram already in `generated`, i.e. the
    last token of every earlier n-gram whose first n-1 tokens equal the last n-1 generated tokens."""
    windows = generated.unfold(1, n, 1)  # (B, T - n + 1, n)
    prefix = generated[:, generated.shape[1] - (n - 1) :]  # (B, n - 1)
    match = (windows[..., :-1] == prefix[:, None, :]).all(dim=-1)  # (B, T - n + 1)
    counts = torch.zeros(generated.shape[0], vocab, device=generated.device)
    counts.scatter_add_(1, windows[..., -1], match.float())
    return counts > 0


def sample_next(
    logits: torch.Tensor, decode: DecodeConfig, generator: torch.Generator | None
) -> torch.Tensor:
    """Temperature, top-k, top-p (nucleus), then a draw: logits (B, vocab) -> token ids (B,)."""
    logits = logits.float() / decode.temperature
    if decode.top_k > 0:
        k = min(decode.top_k, logits.shape[-1])
        kth = logits.topk(k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if decode.top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        # Drop a token when the tokens ranked above it already hold top_p; the top token always stays.
        drop_sorted = (probs.cumsum(dim=-1) - probs) >= decode.top_p
        drop = drop_sorted.scatter(1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


# --------------------------------------------------------------------------------------------------
# Greedy and sampling


@dataclass
class Hypotheses:
    """Decoded token ids per study (EOS excluded) and, with evidence, (steps, L) / (steps, L, K) per study."""

    token_ids: list[list[int]]
    gates: list[torch.Tensor] | None = None
    alpha: list[torch.Tensor] | None = None


def greedy_or_sample(
    model,
    context,
    inputs_embeds: torch.Tensor,
    prompt_mask: torch.Tensor,
    decode: DecodeConfig,
    eos_id: int,
    pad_id: int,
    record: bool,
    generator: torch.Generator | None,
    max_new_tokens: int,
    logit_bias: torch.Tensor | None = None,
) -> Hypotheses:
    """Batched greedy or sampled decoding with the KV cache; stops when every sequence has emitted EOS.
    `logit_bias` (B, vocab) is added to the logits at every step (the expert bias)."""
    batch, device = inputs_embeds.shape[0], inputs_embeds.device
    sample = decode.strategy == "sample"
    tokens = torch.full((batch, max_new_tokens), pad_id, dtype=torch.long, device=device)  # (B, N)
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    steps_gates: list[torch.Tensor] = []
    steps_alpha: list[torch.Tensor] = []
    decoder = CachedDecoder(model, prompt_mask, max_new_tokens)
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


def max_new_tokens_for(model, prompt_length: int, decode: DecodeConfig) -> int:
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
    model,
    tokenizer,
    images: torch.Tensor,
    view_mask: torch.Tensor,
    decode: DecodeConfig,
    return_evidence: bool = False,
    generator: torch.Generator | None = None,
    expert_probs: torch.Tensor | None = None,
) -> list[GeneratedReport]:
    """Reports for a batch of studies: images (B, V, C, H, W), view_mask (B, V) bool -> B GeneratedReports.
    `expert_probs` (B, K) replaces the experts' probabilities that the decoder reads (an oracle, a flipped
    expert, a clinician's override); the reports then carry those probabilities.

    Runs under `torch.inference_mode()` with the model in eval mode (its previous mode is restored). The study
    context is computed once; the prompt is run once; each step feeds one token with the KV cache. `generator`
    seeds sampling. Each report carries the expert probabilities (unless fusion=none); with `return_evidence` and
    fusion=layerwise also per-token gates (steps, L) and alpha (steps, L, K) (see the module docstring)."""
    from leadrrg.decoding_beam import beam_search

    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            images, view_mask = images.to(_device(model)), view_mask.to(_device(model))
            if expert_probs is not None:
                expert_probs = torch.as_tensor(expert_probs, dtype=torch.float32, device=images.device)
            context = model.encode_study(images, view_mask, expert_probs=expert_probs)
            inputs_embeds, prompt_mask = prompt_inputs(model, tokenizer, context)  # (B, P, D), (B, P)
            max_new = max_new_tokens_for(model, inputs_embeds.shape[1], decode)
            record = return_evidence and context.expert_tokens is not None
            logit_bias = expert_bias_for(model, tokenizer, context, decode)  # (B, vocab) or None
            args = (
                model,
                context,
                inputs_embeds,
                prompt_mask,
                decode,
                tokenizer.eos_id,
                tokenizer.pad_id,
                record,
            )
            if decode.strategy == "beam" and decode.num_beams > 1:
                hypotheses = beam_search(*args, max_new_tokens=max_new, logit_bias=logit_bias)
            else:
                hypotheses = greedy_or_sample(
                    *args, generator=generator, max_new_tokens=max_new, logit_bias=logit_bias
                )
            probs = context.expert_probs
    finally:
        model.train(was_training)
    names = list(model.config.experts.names)
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
            )
        )
    return reports


def expert_bias_for(model, tokenizer, context, decode: DecodeConfig) -> torch.Tensor | None:
    """The CCD-style expert logit bias (B, vocab) from `context.expert_probs` (B, K), or None when
    decode.expert_bias is 0 (see `leadrrg.expert_bias`)."""
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


def _device(model) -> torch.device:
    return next(model.parameters()).device


def expert_probs_sorted(report: GeneratedReport) -> Sequence[tuple[str, float]]:
    """(name, probability) pairs, most probable first (empty for fusion=none)."""
    return sorted((report.expert_probs or {}).items(), key=lambda item: -item[1])
