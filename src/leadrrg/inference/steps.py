"""The parts both decoding loops share (`leadrrg.inference.decoding` greedy / sampling, `leadrrg.inference.beam`):
`decoding_context` (the one place where decode policy meets the model: what the decoder reads as p), the cached
decoder, the prompt, evidence capture, logit processing, `DecodeState` (what a loop is given) and `Hypotheses`
(what it returns). A leaf module: it imports neither loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from leadrrg.config import DecodeConfig
from leadrrg.model.grounding import decoder_attribute_probs, decoder_probs, with_derived_no_finding

if TYPE_CHECKING:
    from leadrrg.data.tokenizer import ReportTokenizer
    from leadrrg.model.context import StudyContext
    from leadrrg.model.injection import InjectionTrace
    from leadrrg.model.lead import LeadModel


@dataclass
class DecodeState:
    """What a decoding loop needs, prepared once per batch by `generate_reports`."""

    model: LeadModel
    context: StudyContext  # of the batch
    inputs_embeds: torch.Tensor  # (B, P, D) the prompt [BOS, visual tokens, "Findings:"]
    prompt_mask: torch.Tensor  # (B, P)
    decode: DecodeConfig
    eos_id: int
    pad_id: int
    record: bool  # keep per-token gates / alpha (evidence)
    max_new_tokens: int
    logit_bias: torch.Tensor | None = None  # (B, vocab) the expert bias, or None


# --------------------------------------------------------------------------------------------------
# The cached decoder: prompt once, then one token per call


class CachedDecoder:
    """Runs the LM on the prompt once, then on one new token per call with the KV cache.

    The attention mask is preallocated for the whole generation: (B, P + max_new_tokens), the prompt part
    copied from the study's mask (missing views masked), the rest ones. Call inside `model.injecting`.

    `cache="static"` preallocates the cache for P + max_new_tokens positions (transformers' StaticCache) and
    feeds every step the same shapes (the whole mask, the slot as `cache_position`): what CUDA graphs and
    `torch.compile` need. `compile=True` compiles the one-token step (`torch.compile`, mode reduce-overhead on
    CUDA); it pays only with the static cache, whose shapes do not change from step to step."""

    def __init__(
        self,
        model: LeadModel,
        prompt_mask: torch.Tensor,
        max_new_tokens: int,
        cache: str = "dynamic",
        compile: bool = False,
    ):
        batch, prompt_length = prompt_mask.shape
        self.model = model
        self.mask = prompt_mask.new_ones(batch, prompt_length + max_new_tokens)  # (B, P + N)
        self.mask[:, :prompt_length] = prompt_mask
        self.length = 0  # positions in the cache
        self.static = cache == "static"
        self.cache = None
        self.forward = model.lm_forward
        if compile:
            mode = "reduce-overhead" if prompt_mask.device.type == "cuda" else None
            self.forward = torch.compile(model.lm_forward, mode=mode, dynamic=False)

    def prefill(self, inputs_embeds: torch.Tensor) -> torch.Tensor:
        """inputs_embeds (B, P, D) -> next-token logits (B, vocab) at the last prompt position."""
        self.length = inputs_embeds.shape[1]
        if self.static:
            from transformers import StaticCache

            self.cache = StaticCache(config=self.model.lm.config, max_cache_len=self.mask.shape[1])
        out = self.model.lm_forward(
            inputs_embeds,
            self.mask[:, : self.length],
            past_key_values=self.cache,
            use_cache=True,
            logits_to_keep=1,
        )
        self.cache = out.past_key_values
        return out.logits[:, -1].float()  # float32 logits also from a half-precision model (decode.dtype)

    def step(self, token_ids: torch.Tensor) -> torch.Tensor:
        """token_ids (B,) -> next-token logits (B, vocab); the cache grows by one position."""
        self.length += 1
        embeds = self.model.embed_tokens(token_ids[:, None])  # (B, 1, D)
        if self.static:  # same shapes every step: the full mask, the new token's slot
            slot = torch.full((1,), self.length - 1, dtype=torch.long, device=embeds.device)
            out = self.forward(
                embeds, self.mask, past_key_values=self.cache, use_cache=True, cache_position=slot
            )
        else:
            out = self.forward(
                embeds, self.mask[:, : self.length], past_key_values=self.cache, use_cache=True
            )
        self.cache = out.past_key_values
        return out.logits[:, -1].float()

    def repeat_interleave(self, repeats: int) -> None:
        """Each row repeated `repeats` times (beam search: B studies -> B * num_beams beams)."""
        self.cache.batch_repeat_interleave(repeats)
        self.mask = self.mask.repeat_interleave(repeats, dim=0)

    def reorder(self, rows: torch.Tensor) -> None:
        """Keep rows `rows` (B',) of the cache and mask, in that order (beam search)."""
        self.cache.reorder_cache(rows)
        self.mask = self.mask.index_select(0, rows)


def decoding_context(
    model: LeadModel,
    images: torch.Tensor,
    view_mask: torch.Tensor,
    decode: DecodeConfig,
    expert_probs: torch.Tensor | None = None,
    attribute_probs: torch.Tensor | None = None,
) -> StudyContext:
    """The StudyContext the decoder reads, where decode policy meets the model: the experts' p (or
    `expert_probs` (B, K)) is reported as is, and the decoder reads it thresholded when `decode.expert_threshold`
    > 0: p > each expert's threshold (`decode.threshold_for`: its calibrated one, else decode.expert_threshold)
    reads 1, the rest 0, the 0/1 evidence truth forcing trained it on (with `decode.hedge_band` and a decoder
    trained with `model.grounding.hedge`, p in the band below the threshold reads 1/2: hedged), with No Finding
    then derived as CheXpert defines it when `decode.derive_no_finding` (as in every label the decoder was
    trained on: 1 iff no other finding but Support Devices reads 1). With attribute experts the decoder reads each
    expert's side and severity (or `attribute_probs` (B, K, 2, 3)) the same way: the most likely value as 1 when
    thresholding (the one-hot values training reads), the soft values otherwise."""
    study = model.encode_images(images, view_mask)
    if study.expert_logits is None:  # fusion=none: nothing to read
        return model.fuse_experts(study)
    config = model.config
    probs = decoder_probs(config.grounding, config.label_policy, study.expert_logits, expert_probs)  # (B, K)
    read = probs
    if decode.expert_threshold > 0:
        names = list(config.experts.names)
        thresholds = probs.new_tensor([decode.threshold_for(name) for name in names])  # (K,)
        read = (probs > thresholds).to(probs)
        if decode.hedge_band > 0 and config.grounding.hedge:
            floors = probs.new_tensor([decode.hedge_floor(name) for name in names])  # (K,)
            read = torch.where((probs > floors) & (read == 0), 0.5, read)  # the uncertainty band: hedge it
        if decode.derive_no_finding:
            read = with_derived_no_finding(read, names)
    attributes = None
    if study.attribute_logits is not None:
        attributes = decoder_attribute_probs(
            config.grounding, study.attribute_logits, attribute_probs
        )  # (B, K, 2, 3)
        if decode.expert_threshold > 0:
            stated = attributes.sum(dim=-1, keepdim=True) > 0  # an override may leave a value unread (zeros)
            attributes = F.one_hot(attributes.argmax(dim=-1), attributes.shape[-1]).to(attributes) * stated
    return model.fuse_experts(study, probs, read, attributes)


def prompt_inputs(
    model: LeadModel, tokenizer: ReportTokenizer, context: StudyContext
) -> tuple[torch.Tensor, torch.Tensor]:
    """[BOS, visual tokens, "Findings:"] for every study: -> inputs_embeds (B, P, D), attention mask (B, P)."""
    batch = context.visual_tokens.shape[0]
    ids = torch.tensor([tokenizer.bos_id, *tokenizer.prompt_ids], device=context.visual_tokens.device)
    ids = ids.expand(batch, -1)  # (B, 1 + prompt)
    return model.embed_inputs(context, ids, torch.ones_like(ids))


def take_evidence(trace: InjectionTrace | None) -> tuple[torch.Tensor, torch.Tensor] | None:
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


Generators = torch.Generator | Sequence[torch.Generator] | None  # one for the batch, or one per row


def sample_next(logits: torch.Tensor, decode: DecodeConfig, generator: Generators) -> torch.Tensor:
    """Temperature, top-k, top-p (nucleus), then a draw: logits (B, vocab) -> token ids (B,). `generator`: one for
    the batch, or one per row (each row then draws from its own, as it would decoded alone)."""
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
    if generator is None or isinstance(generator, torch.Generator):
        return torch.multinomial(probs, 1, generator=generator).squeeze(1)
    return torch.cat(
        [torch.multinomial(row[None], 1, generator=g) for row, g in zip(probs, generator)]
    ).squeeze(1)


# --------------------------------------------------------------------------------------------------
# What a loop returns


@dataclass
class Hypotheses:
    """Decoded token ids per study (EOS excluded) and, with evidence, (steps, L) / (steps, L, K) per study."""

    token_ids: list[list[int]]
    gates: list[torch.Tensor] | None = None
    alpha: list[torch.Tensor] | None = None
