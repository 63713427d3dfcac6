"""Batched beam search with the KV cache for `leadrrg.inference.decoding.generate_reports`.

The prompt runs once per study; its cache, attention mask and StudyContext are then repeated to
B * num_beams rows. Each step scores every (beam, token) continuation of a study by its summed log-probability,
keeps the 2 * num_beams best candidates, finishes those ending in EOS (when ranked within the first num_beams)
and continues with the num_beams best non-EOS ones; the cache, the logit processors' state, the tokens and the
evidence are reordered to the surviving beams. A finished hypothesis is scored sum log-prob / length **
length_penalty, its length counting the EOS (whose log-probability is in the sum). A study is done when it has
num_beams finished hypotheses and its best running beam, normalised at the current length, cannot beat the worst
of them (Hugging Face's default `early_stopping=False` rule); at max_new_tokens the running beams join the
finished ones. The best hypothesis is returned, with its own evidence rows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from leadrrg.inference.steps import CachedDecoder, DecodeState, Hypotheses, LogitsProcessor, take_evidence


class BeamHypotheses:
    """The best `num_beams` finished hypotheses of one study: (score, token ids, gates, alpha)."""

    def __init__(self, num_beams: int, length_penalty: float):
        self.num_beams = num_beams
        self.length_penalty = length_penalty
        self.items: list[tuple[float, list[int], torch.Tensor | None, torch.Tensor | None]] = []

    def score(self, sum_logprobs: float, length: int) -> float:
        return sum_logprobs / max(length, 1) ** self.length_penalty

    def add(
        self,
        sum_logprobs: float,
        length: int,
        token_ids: list[int],
        gates: torch.Tensor | None,
        alpha: torch.Tensor | None,
    ) -> None:
        score = self.score(sum_logprobs, length)
        if len(self.items) < self.num_beams or score > self.items[-1][0]:
            self.items.append((score, token_ids, gates, alpha))
            self.items.sort(key=lambda item: -item[0])
            del self.items[self.num_beams :]

    def is_done(self, best_running_sum: float, length: int) -> bool:
        if len(self.items) < self.num_beams:
            return False
        return self.items[-1][0] >= self.score(best_running_sum, length)

    def best(self) -> tuple[float, list[int], torch.Tensor | None, torch.Tensor | None]:
        return self.items[0]


class EvidenceHistory:
    """The evidence rows of every running beam so far: gates (B * nb, step, L), alpha (B * nb, step, L, K); holds
    nothing when no evidence is recorded."""

    def __init__(self, evidence: tuple[torch.Tensor, torch.Tensor] | None, num_rows: int):
        self.gates = self.alpha = None
        if evidence is not None:
            self.gates = evidence[0].new_zeros(num_rows, 0, evidence[0].shape[-1])
            self.alpha = evidence[1].new_zeros(num_rows, 0, *evidence[1].shape[-2:])

    def extend(self, rows: torch.Tensor, evidence: tuple[torch.Tensor, torch.Tensor] | None) -> None:
        """Keep the histories of `rows` (B * nb,) and append this step's evidence of those rows."""
        if self.gates is not None:
            self.gates = torch.cat([self.gates[rows], evidence[0][rows][:, None]], dim=1)
            self.alpha = torch.cat([self.alpha[rows], evidence[1][rows][:, None]], dim=1)

    def of(self, row: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(gates (step, L), alpha (step, L, K)) of one beam, on the CPU, or (None, None)."""
        if self.gates is None:
            return None, None
        return self.gates[row].cpu(), self.alpha[row].cpu()


def prefill_beams(
    state: DecodeState, decoder: CachedDecoder, expand: torch.Tensor
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
    """The prompt once per study, then the cache and the outputs repeated to the beams (`expand` (B * nb,)):
    -> next-token logits (B * nb, vocab), evidence ((B * nb, L), (B * nb, L, K)) or None."""
    with state.model.injecting(state.context, record=state.record) as trace:
        logits = decoder.prefill(state.inputs_embeds)  # (B, vocab)
        evidence = take_evidence(trace)  # (B, L), (B, L, K) or None
    decoder.repeat_interleave(state.decode.num_beams)
    if evidence is not None:
        evidence = (evidence[0].index_select(0, expand), evidence[1].index_select(0, expand))
    return logits.index_select(0, expand), evidence


def beam_search(state: DecodeState) -> Hypotheses:
    """inputs_embeds (B, P, D), prompt_mask (B, P) -> the best hypothesis per study (see the module docstring).
    `logit_bias` (B, vocab), the expert bias, is added to every beam's logits at every step."""
    model, context, decode, eos_id = state.model, state.context, state.decode, state.eos_id
    batch, device = state.inputs_embeds.shape[0], state.inputs_embeds.device
    num_beams = decode.num_beams
    decoder = CachedDecoder(model, state.prompt_mask, state.max_new_tokens)
    expand = torch.arange(batch, device=device).repeat_interleave(num_beams)  # (B * nb,)
    logits, evidence = prefill_beams(state, decoder, expand)  # (B * nb, vocab)
    logit_bias = (
        None if state.logit_bias is None else state.logit_bias.index_select(0, expand)
    )  # (B * nb, vocab)
    num_rows, vocab = logits.shape
    beam_scores = torch.zeros(batch, num_beams, device=device)
    beam_scores[:, 1:] = float("-inf")  # the first step expands beam 0 only (all beams are equal)
    beam_scores = beam_scores.view(-1)  # (B * nb,)
    tokens = torch.zeros(num_rows, 0, dtype=torch.long, device=device)  # (B * nb, step)
    history = EvidenceHistory(evidence, num_rows)
    finished = [BeamHypotheses(num_beams, decode.length_penalty) for _ in range(batch)]
    done = [False] * batch
    processor = LogitsProcessor(decode, eos_id, num_rows, vocab, device, logit_bias)
    row_base = (torch.arange(batch, device=device) * num_beams)[:, None]  # (B, 1)
    with model.injecting(context.index_select(expand), record=state.record) as trace:
        for step in range(state.max_new_tokens):
            if step > 0:
                evidence = take_evidence(trace)
            logits = processor(logits, tokens, step)
            logprobs = F.log_softmax(logits.float(), dim=-1)  # (B * nb, vocab)
            scores = (logprobs + beam_scores[:, None]).view(batch, num_beams * vocab)
            top_scores, top_index = scores.topk(2 * num_beams, dim=1)  # (B, 2 nb), best first
            top_rows = row_base + torch.div(top_index, vocab, rounding_mode="floor")  # (B, 2 nb) source rows
            top_tokens = top_index % vocab
            is_eos = top_tokens == eos_id
            # Hypotheses that end here: EOS among the num_beams best candidates of a study still running.
            eos_hits = is_eos[:, :num_beams].nonzero().tolist()
            if eos_hits:
                scores_list, rows_list = top_scores.tolist(), top_rows.tolist()
                for b, rank in eos_hits:
                    if not done[b]:
                        row = rows_list[b][rank]
                        finished[b].add(
                            scores_list[b][rank], step + 1, tokens[row].tolist(), *history.of(row)
                        )
            # The running beams go on with the num_beams best non-EOS candidates (at least nb of the 2 nb).
            next_scores, pick = top_scores.masked_fill(is_eos, float("-inf")).topk(
                num_beams, dim=1
            )  # (B, nb)
            rows = top_rows.gather(1, pick).view(-1)  # (B * nb,)
            next_ids = top_tokens.gather(1, pick).view(-1)  # (B * nb,)
            beam_scores = next_scores.view(-1)
            tokens = torch.cat([tokens.index_select(0, rows), next_ids[:, None]], dim=1)
            history.extend(rows, evidence)
            processor.reorder(rows)
            processor.update(next_ids)
            best_running = next_scores[:, 0].tolist()
            for b in range(batch):
                done[b] = done[b] or finished[b].is_done(best_running[b], step + 1)
            if all(done) or step + 1 == state.max_new_tokens:
                break
            decoder.reorder(rows)
            logits = decoder.step(next_ids)
    # Studies still running at max_new_tokens: their beams compete with the finished hypotheses.
    scores_list, tokens_list = beam_scores.tolist(), tokens.tolist()
    for b in range(batch):
        if done[b]:
            continue
        for row in range(b * num_beams, (b + 1) * num_beams):
            finished[b].add(scores_list[row], tokens.shape[1], tokens_list[row], *history.of(row))
    best = [hypotheses.best() for hypotheses in finished]
    token_ids = [item[1] for item in best]
    if history.gates is None:
        return Hypotheses(token_ids)
    return Hypotheses(token_ids, [item[2] for item in best], [item[3] for item in best])
