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


def beam_search(state: DecodeState) -> Hypotheses:
    """inputs_embeds (B, P, D), prompt_mask (B, P) -> the best hypothesis per study (see the module docstring).
    `logit_bias` (B, vocab), the expert bias, is added to every beam's logits at every step."""
    model, context, decode = state.model, state.context, state.decode
    inputs_embeds, prompt_mask, record = state.inputs_embeds, state.prompt_mask, state.record
    eos_id, max_new_tokens, logit_bias = state.eos_id, state.max_new_tokens, state.logit_bias
    batch, device = inputs_embeds.shape[0], inputs_embeds.device
    num_beams = decode.num_beams
    decoder = CachedDecoder(model, prompt_mask, max_new_tokens)
    with model.injecting(context, record=record) as trace:
        logits = decoder.prefill(inputs_embeds)  # (B, vocab)
        evidence = take_evidence(trace)  # (B, L), (B, L, K) or None
    expand = torch.arange(batch, device=device).repeat_interleave(num_beams)  # (B * nb,)
    decoder.repeat_interleave(num_beams)
    logits = logits.index_select(0, expand)  # (B * nb, vocab)
    if evidence is not None:
        evidence = (evidence[0].index_select(0, expand), evidence[1].index_select(0, expand))
    if logit_bias is not None:
        logit_bias = logit_bias.index_select(0, expand)  # (B * nb, vocab)
    num_rows, vocab = logits.shape
    beam_scores = torch.zeros(batch, num_beams, device=device)
    beam_scores[:, 1:] = float("-inf")  # the first step expands beam 0 only (all beams are equal)
    beam_scores = beam_scores.view(-1)  # (B * nb,)
    tokens = torch.zeros(num_rows, 0, dtype=torch.long, device=device)  # (B * nb, step)
    history_gates = history_alpha = None  # (B * nb, step, L), (B * nb, step, L, K)
    if evidence is not None:
        history_gates = evidence[0].new_zeros(num_rows, 0, evidence[0].shape[-1])
        history_alpha = evidence[1].new_zeros(num_rows, 0, *evidence[1].shape[-2:])
    finished = [BeamHypotheses(num_beams, decode.length_penalty) for _ in range(batch)]
    done = [False] * batch
    processor = LogitsProcessor(decode, eos_id, num_rows, vocab, device, logit_bias)
    row_base = (torch.arange(batch, device=device) * num_beams)[:, None]  # (B, 1)
    with model.injecting(context.index_select(expand), record=record) as trace:
        for step in range(max_new_tokens):
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
                    if done[b]:
                        continue
                    row = rows_list[b][rank]
                    finished[b].add(
                        scores_list[b][rank],
                        step + 1,
                        tokens[row].tolist(),
                        history_gates[row].cpu() if history_gates is not None else None,
                        history_alpha[row].cpu() if history_alpha is not None else None,
                    )
            # The running beams go on with the num_beams best non-EOS candidates (at least nb of the 2 nb).
            next_scores, pick = top_scores.masked_fill(is_eos, float("-inf")).topk(
                num_beams, dim=1
            )  # (B, nb)
            rows = top_rows.gather(1, pick).view(-1)  # (B * nb,)
            next_ids = top_tokens.gather(1, pick).view(-1)  # (B * nb,)
            beam_scores = next_scores.view(-1)
            tokens = torch.cat([tokens.index_select(0, rows), next_ids[:, None]], dim=1)
            if history_gates is not None:
                history_gates = torch.cat([history_gates[rows], evidence[0][rows][:, None]], dim=1)
                history_alpha = torch.cat([history_alpha[rows], evidence[1][rows][:, None]], dim=1)
            processor.reorder(rows)
            processor.update(next_ids)
            best_running = next_scores[:, 0].tolist()
            for b in range(batch):
                done[b] = done[b] or finished[b].is_done(best_running[b], step + 1)
            if all(done) or step + 1 == max_new_tokens:
                break
            decoder.reorder(rows)
            logits = decoder.step(next_ids)
    # Studies still running at max_new_tokens: their beams compete with the finished hypotheses.
    length = tokens.shape[1]
    scores_list, tokens_list = beam_scores.tolist(), tokens.tolist()
    for b in range(batch):
        if done[b]:
            continue
        for row in range(b * num_beams, (b + 1) * num_beams):
            finished[b].add(
                scores_list[row],
                length,
                tokens_list[row],
                history_gates[row].cpu() if history_gates is not None else None,
                history_alpha[row].cpu() if history_alpha is not None else None,
            )
    best = [hypotheses.best() for hypotheses in finished]
    token_ids = [item[1] for item in best]
    if history_gates is None:
        return Hypotheses(token_ids)
    return Hypotheses(token_ids, [item[2] for item in best], [item[3] for item in best])
