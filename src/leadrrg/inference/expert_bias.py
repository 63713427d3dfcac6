"""A decoding-time expert logit bias in the style of CCD (clinical contrastive decoding, X-iZhang/CCD
`ccd/ccd_utils.py`): each expert's probability p pushes the first tokens of its finding words by
log(p / (1 - p)), clipped to [-log gamma, log gamma], times a strength (`DecodeConfig.expert_bias`).

It is a baseline of the faithfulness benchmark: a model whose experts are a side classifier, not fused into the
decoder, still lets them steer the words. `leadrrg.inference.decoding.generate_reports` builds the (B, vocab) bias once per
batch from `StudyContext.expert_probs` and adds it to the logits at every step, for every strategy.

Each word is tokenised as it appears inside a sentence (after a space), as written (lower case, or an acronym
such as PICC) and capitalised (a sentence start); the bias goes on the FIRST token of each form, the one the
decoder must choose to start the word. A token that several experts claim is dropped from all of them, and so is
a first token that carries fewer than `MIN_PREFIX_CHARS` characters of its word (a bare word boundary or a short
prefix such as "e" or "p", which starts many other words: with a small BPE vocabulary a finding word can begin
with one).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from leadrrg.constants import OBSERVATIONS
from leadrrg.errors import LeadrrgError

# The characteristic finding words of each CheXpert observation, as written inside a sentence. Only words that
# name their observation: shared or generic ones ("enlarged", "line", "lines", "lesion", "widened") are left
# out, since one token can carry only one expert's bias. No Finding has none.
FINDING_WORDS: dict[str, tuple[str, ...]] = {
    "No Finding": (),
    "Enlarged Cardiomediastinum": ("mediastinum", "mediastinal"),
    "Cardiomegaly": ("cardiomegaly",),
    "Lung Opacity": ("opacity", "opacities"),
    "Lung Lesion": ("nodule", "nodules", "mass", "masses"),
    "Edema": ("edema",),
    "Consolidation": ("consolidation",),
    "Pneumonia": ("pneumonia",),
    "Atelectasis": ("atelectasis",),
    "Pneumothorax": ("pneumothorax",),
    "Pleural Effusion": ("effusion", "effusions"),
    "Pleural Other": ("thickening",),
    "Fracture": ("fracture", "fractures"),
    "Support Devices": ("tube", "tubes", "catheter", "catheters", "pacemaker", "picc", "PICC"),
}

MIN_PREFIX_CHARS = 3  # a first token must carry at least this many characters of its word (or the whole word)
_CONTEXT = "the"  # words are tokenised after it, so that they are encoded as inside a sentence
PROB_EPS = 1e-6  # p is clamped to [eps, 1 - eps] before the log-odds (as in CCD)


def _word_forms(word: str) -> list[str]:
    """The word as written and capitalised (a sentence start), without duplicates."""
    return list(dict.fromkeys([word, word[:1].upper() + word[1:]]))


def _inside_sentence_ids(tokenizer, word: str) -> list[int]:
    """Token ids of `word` following a space inside a sentence: the tail of encode("the word") after
    encode("the"), or encode(" word") when the context merges with the word."""
    context = tokenizer.encode(_CONTEXT)
    ids = tokenizer.encode(f"{_CONTEXT} {word}")
    if len(ids) > len(context) and ids[: len(context)] == context:
        return ids[len(context) :]
    return tokenizer.encode(f" {word}")


def finding_token_ids(tokenizer, expert_names: Sequence[str]) -> list[list[int]]:
    """For each expert (a CheXpert observation name) the sorted ids of the first tokens of its finding words
    (`FINDING_WORDS`), shared tokens and too-short prefixes dropped (see the module docstring).
    `tokenizer` is a `leadrrg.data.tokenizer.ReportTokenizer` (its `encode` and `decode`)."""
    unknown = [name for name in expert_names if name not in FINDING_WORDS]
    if unknown:
        raise LeadrrgError(
            f"no finding words for the experts {unknown}; expected CheXpert observations: {', '.join(OBSERVATIONS)}"
        )
    claimed: list[set[int]] = []
    for name in expert_names:
        tokens = set()
        for word in FINDING_WORDS[name]:
            for form in _word_forms(word):
                ids = _inside_sentence_ids(tokenizer, form)
                if not ids:
                    continue
                prefix = tokenizer.decode(ids[:1]).strip()
                if len(prefix) >= min(MIN_PREFIX_CHARS, len(form)):
                    tokens.add(ids[0])
        claimed.append(tokens)
    owners: dict[int, int] = {}
    for tokens in claimed:
        for token in tokens:
            owners[token] = owners.get(token, 0) + 1
    return [sorted(token for token in tokens if owners[token] == 1) for tokens in claimed]


def expert_logit_bias(
    expert_probs: torch.Tensor,
    token_ids_per_expert: Sequence[Sequence[int]],
    vocab_size: int,
    strength: float,
    gamma: float,
) -> torch.Tensor:
    """expert_probs (B, K) -> an additive logit bias (B, vocab) float32: for each expert k,
    strength * clip(log(p_k / (1 - p_k)), -log gamma, log gamma) at each of its tokens, 0 elsewhere."""
    if expert_probs.dim() != 2 or expert_probs.shape[1] != len(token_ids_per_expert):
        raise LeadrrgError(
            f"expert_probs have shape {tuple(expert_probs.shape)}; expected (studies, {len(token_ids_per_expert)})"
        )
    if not gamma > 1:
        raise LeadrrgError(f"expert bias gamma is {gamma!r}; expected a number > 1")
    p = expert_probs.float().clamp(PROB_EPS, 1 - PROB_EPS)
    log_odds = torch.log(p) - torch.log1p(-p)  # (B, K)
    limit = math.log(gamma)
    per_expert = log_odds.clamp(-limit, limit) * strength  # (B, K)
    bias = per_expert.new_zeros(p.shape[0], vocab_size)  # (B, vocab)
    tokens = [token for ids in token_ids_per_expert for token in ids]
    if not tokens:
        return bias
    experts = [k for k, ids in enumerate(token_ids_per_expert) for _ in ids]
    token_index = torch.tensor(tokens, dtype=torch.long, device=p.device)  # (T,)
    expert_index = torch.tensor(experts, dtype=torch.long, device=p.device)  # (T,)
    if int(token_index.max()) >= vocab_size:
        raise LeadrrgError(
            f"finding token id {int(token_index.max())} is outside the vocabulary ({vocab_size})"
        )
    bias.index_add_(1, token_index, per_expert.index_select(1, expert_index))
    return bias
