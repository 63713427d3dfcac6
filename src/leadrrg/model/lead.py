"""LeadModel: the LEAD pipeline assembled from its stages (one file each in `leadrrg.model`).

images (B, V, C, H, W) -> vision tokens (B, V*N, Dv) -> visual prompt tokens (B, V*N', D)
                       -> experts: e (B, K, De), s (B, K) -> p (B, K) -> Z^l (B, L, K, D)
                       -> gated injection in every decoder layer (`model/injection.py`)

`fusion=layerwise` is LEAD; `fusion=input` appends the K confidence-weighted expert features (projected to D)
as extra input tokens after the visual tokens and injects nothing; `fusion=aux` trains the experts with the
classification loss but fuses nothing (the LVLM + classifier baseline); `fusion=none` is a plain LVLM.

What the decoder reads as p during training is the grounding policy of `model/grounding.py` (docs/FAITHFULNESS.md);
the losses are in `model/losses.py`, what a study gives the decoder (`StudyContext`) in `model/context.py`. Decode policy (`decode.expert_threshold`, `decode.derive_no_finding`) is
applied by inference (`leadrrg.inference.steps.decoding_context`) through `encode_images` + `fuse_experts`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from leadrrg.config import ModelConfig
from leadrrg.constants import IGNORE_INDEX, OBSERVATIONS
from leadrrg.errors import LeadrrgError
from leadrrg.model.balance import ContextBalance
from leadrrg.model.context import EncodedStudy, StudyContext
from leadrrg.model.decoder import (
    BACKBONES,
    build_causal_lm,
    get_decoder_layers,
    keep_trainable_fp32,
    set_decoder_layers,
)
from leadrrg.model.experts import ExpertModule
from leadrrg.model.grounding import decoder_attribute_probs, decoder_probs, drop_visual_tokens
from leadrrg.model.injection import (
    ExpertInputTokens,
    ExpertProjections,
    InjectedLayer,
    InjectionTrace,
    injecting,
    wrap_layers,
)
from leadrrg.model.losses import attribute_loss, classification_loss, report_token_loss
from leadrrg.model.projector import Projector, pool_view_grids
from leadrrg.model.vision import MultiViewEncoder


def insert_prompt_positions(sequence: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
    """Insert `prompt` (B, P, ...) after the first position of `sequence` (B, T, ...) -> (B, 1 + P + T - 1, ...)."""
    return torch.cat([sequence[:, :1], prompt.to(sequence.dtype), sequence[:, 1:]], dim=1)


class LeadModel(nn.Module):
    """Vision encoder + projector + experts + an HF causal LM whose layers are wrapped with LEAD's gates."""

    def __init__(self, config: ModelConfig, vocab_size: int, pad_token_id: int):
        super().__init__()
        self.config = config
        injection = config.injection
        self.backbone = BACKBONES.get(config.decoder.backbone)
        self.vision = MultiViewEncoder(config.vision, config.max_views)
        self.lm = build_causal_lm(config.decoder, vocab_size, pad_token_id)
        model_size = self.lm.get_input_embeddings().embedding_dim
        num_layers = len(get_decoder_layers(self.lm, self.backbone))
        vision_size, num_experts = self.vision.hidden_size, config.experts.num_experts
        if config.visual_pool > 1 and min(self.vision.encoder.grid) == 1:
            raise LeadrrgError(
                f"model.visual_pool is {config.visual_pool} but vision encoder {config.vision.name!r} gives no square "
                "token grid; set model.visual_pool=1"
            )
        self.projector = Projector(vision_size, model_size)
        self.experts = ExpertModule(config.experts, vision_size) if injection.has_experts else None
        reads_attributes = config.experts.attributes and injection.decoder_reads_experts
        self.balance = None
        if self.experts is not None and config.grounding.balance == "context":
            self.balance = ContextBalance(num_experts, config.grounding.balance_clip)
        self.expert_input = None
        self.expert_projections = None
        if injection.layerwise:
            self.expert_projections = ExpertProjections(
                injection, num_experts, config.experts.hidden_size, model_size, num_layers, reads_attributes
            )
            # Wrapped after LoRA was injected: LoRA already sits in the projections, the new gates stay trainable.
            layers = get_decoder_layers(self.lm, self.backbone)
            wrapped = wrap_layers(layers, model_size, injection.gate, injection.gate_bias_init)
            set_decoder_layers(self.lm, self.backbone, wrapped)
        elif injection.decoder_reads_experts:  # fusion=input
            self.expert_input = ExpertInputTokens(
                injection.confidence, num_experts, config.experts.hidden_size, model_size, reads_attributes
            )
        self.label_columns = _label_columns(config.experts.names)
        keep_trainable_fp32(self)

    # ----------------------------------------------------------------------------------------------
    # Pipeline

    def encode_images(self, images: torch.Tensor, view_mask: torch.Tensor) -> EncodedStudy:
        """images (B, V, C, H, W), view_mask (B, V) bool -> visual prompt tokens and the experts' e and s."""
        vision = self.vision(images, view_mask)  # tokens (B, V*N, Dv), token_mask (B, V*N)
        prompt_source = vision.tokens
        if self.experts is not None and self.config.grounding.detach_vision:
            prompt_source = prompt_source.detach()  # the LM loss stops here: only L_cls trains the encoder
        pooled, prompt_mask = pool_view_grids(
            prompt_source, vision.token_mask, vision.num_views, vision.grid, self.config.visual_pool
        )  # (B, V*N', Dv), (B, V*N')
        visual_tokens = self.projector(pooled)  # (B, V*N', D)
        if self.experts is None:
            return EncodedStudy(visual_tokens, prompt_mask)
        features, expert_logits = self.experts(vision.tokens, vision.token_mask)  # (B, K, De), (B, K)
        attribute_logits = (
            None if self.experts.attribute_heads is None else self.experts.attribute_heads(features)
        )  # (B, K, 2, 3)
        if self.config.grounding.detach_experts:
            features = features.detach()  # the LM loss stops here: only L_cls trains the experts
        return EncodedStudy(visual_tokens, prompt_mask, features, expert_logits, attribute_logits)

    def fuse_experts(
        self,
        study: EncodedStudy,
        probs: torch.Tensor | None = None,
        read: torch.Tensor | None = None,
        attributes: torch.Tensor | None = None,
    ) -> StudyContext:
        """The StudyContext the decoder reads: the experts' features e weighted by `read` (B, K) (default
        `probs`, the p the context reports), with the side and severity `attributes` (B, K, 2, 3) it reads, become
        expert input tokens (fusion=input) or Z^l (fusion=layerwise)."""
        visual_tokens, prompt_mask = study.visual_tokens, study.visual_mask
        if study.expert_features is None:  # fusion=none
            return StudyContext(visual_tokens, prompt_mask)
        read = probs if read is None else read
        logits = {"expert_logits": study.expert_logits, "attribute_logits": study.attribute_logits}
        if self.expert_input is not None:
            expert_input = self.expert_input(study.expert_features, read, attributes)  # (B, K, D)
            visual_tokens = torch.cat([visual_tokens, expert_input], dim=1)  # (B, V*N' + K, D)
            prompt_mask = torch.cat([prompt_mask, prompt_mask.new_ones(expert_input.shape[:2])], dim=1)
            return StudyContext(visual_tokens, prompt_mask, expert_probs=probs, **logits)
        if self.expert_projections is None:  # fusion=aux: the experts are a side classifier
            return StudyContext(visual_tokens, prompt_mask, expert_probs=probs, **logits)
        expert_tokens = self.expert_projections(study.expert_features, read, attributes)  # Z (B, L, K, D)
        return StudyContext(
            visual_tokens, prompt_mask, expert_probs=probs, expert_tokens=expert_tokens, **logits
        )

    def encode_study(
        self,
        images: torch.Tensor,
        view_mask: torch.Tensor,
        expert_probs: torch.Tensor | None = None,
        expert_labels: torch.Tensor | None = None,
        decoder_labels: torch.Tensor | None = None,
        attribute_probs: torch.Tensor | None = None,
        decoder_attributes: torch.Tensor | None = None,
    ) -> StudyContext:
        """images (B, V, C, H, W), view_mask (B, V) bool -> StudyContext (computed once per study).
        `expert_probs` (B, K) replaces the experts' probabilities for the decoder (oracle, flip, override), and
        `attribute_probs` (B, K, 2, 3) their side and severity; `expert_labels` / `decoder_labels` (B, 14 or K)
        and `decoder_attributes` (B, 14 or K, 2: the side and severity the target report states) are used in
        training only, for truth forcing and counterfactual studies (`model.grounding`)."""
        study = self.encode_images(images, view_mask)
        if study.expert_logits is None:
            return self.fuse_experts(study)
        labels = read_labels = read_attributes = None
        if self.training and expert_labels is not None:
            labels = self.select_expert_labels(expert_labels)  # (B, K)
            if decoder_labels is not None:
                read_labels = self.select_expert_labels(decoder_labels)
            if decoder_attributes is not None:
                read_attributes = self.select_expert_labels(decoder_attributes)  # (B, K, 2)
        grounding, policy = self.config.grounding, self.config.label_policy
        probs = decoder_probs(
            grounding, policy, study.expert_logits, expert_probs, labels, read_labels
        )  # (B, K)
        attributes = None
        if study.attribute_logits is not None:
            attributes = decoder_attribute_probs(
                grounding, study.attribute_logits, attribute_probs, read_attributes
            )
        return self.fuse_experts(study, probs, attributes=attributes)

    def embed_inputs(
        self, context: StudyContext, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """[BOS, prompt tokens, input_ids[1:]]: input_ids (B, T) -> inputs_embeds (B, 1 + P + T - 1, D) and the
        matching attention mask (tokens of missing views masked out)."""
        token_embeds = self.lm.get_input_embeddings()(input_ids)  # (B, T, D)
        inputs_embeds = insert_prompt_positions(token_embeds, context.visual_tokens)  # (B, S, D)
        mask = insert_prompt_positions(attention_mask, context.visual_mask)  # (B, S)
        return inputs_embeds, mask

    def forward(
        self,
        images: torch.Tensor,
        view_mask: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        target_ids: torch.Tensor,
        expert_labels: torch.Tensor | None = None,
        decoder_labels: torch.Tensor | None = None,
        expert_attributes: torch.Tensor | None = None,
        decoder_attributes: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor | None]:
        """Training losses. images (B, V, C, H, W), view_mask (B, V), input_ids / attention_mask / target_ids (B, T)
        (targets -100 outside the report), expert_labels (B, 14 or K) 1/0/-1/NaN (the experts learn them),
        decoder_labels (B, 14 or K) what truth forcing feeds the decoder (default expert_labels), expert_attributes /
        decoder_attributes (B, 14 or K, 2) side and severity value indices (IGNORE_INDEX: unknown) the experts learn
        (the image's) / the decoder reads (its target report's) ->
        {loss, lm_loss, cls_loss, expert_logits (B, K) or None for fusion=none, lm_tokens (the report tokens
        lm_loss averages over: `model.losses.target_token_count(target_ids)`)}."""
        context = self.encode_study(
            images,
            view_mask,
            expert_labels=expert_labels,
            decoder_labels=decoder_labels,
            decoder_attributes=decoder_attributes,
        )  # (B, P, D), Z (B, L, K, D)
        grounding = self.config.grounding
        if self.training and grounding.visual_dropout > 0:  # modality dropout (expert input tokens stay)
            num_expert_tokens = self.config.experts.num_experts if self.expert_input is not None else 0
            context.visual_mask = drop_visual_tokens(grounding, context.visual_mask, num_expert_tokens)
        inputs_embeds, mask = self.embed_inputs(context, input_ids, attention_mask)  # (B, S, D), (B, S)
        prompt_targets = target_ids.new_full(context.visual_mask.shape, IGNORE_INDEX)  # (B, P)
        targets = insert_prompt_positions(target_ids, prompt_targets)  # (B, S)
        # The LM head only where the next token is a report token: BOS, the visual prompt, the instruction and the
        # padding of shorter reports predict nothing, and at a pretrained vocabulary (49,152 for SmolLM2) their
        # logits would be half the head's work and memory.
        predicting = targets[:, 1:] != IGNORE_INDEX  # (B, S-1): position t predicts target t+1
        with self.injecting(context):
            hidden_states = self.decoder_hidden_states(inputs_embeds, mask)  # (B, S, D)
        logits = self.lm.get_output_embeddings()(hidden_states[:, :-1][predicting])  # (N, vocab)
        lm_loss = report_token_loss(logits, targets[:, 1:][predicting])
        cls_loss = lm_loss.new_zeros(())
        if context.expert_logits is not None and expert_labels is not None:
            labels = self.select_expert_labels(expert_labels)  # (B, K)
            cls_loss = classification_loss(
                context.expert_logits, labels, self.config.label_policy, self.balance
            )
            if context.attribute_logits is not None and expert_attributes is not None:
                attributes = self.select_expert_labels(expert_attributes)  # (B, K, 2)
                cls_loss = cls_loss + attribute_loss(context.attribute_logits, attributes)
        loss = lm_loss + self.config.cls_loss_weight * cls_loss
        return {
            "loss": loss,
            "lm_loss": lm_loss,
            "cls_loss": cls_loss,
            "expert_logits": context.expert_logits,
            "lm_tokens": predicting.sum(),
        }

    def classification_forward(
        self,
        images: torch.Tensor,
        view_mask: torch.Tensor,
        expert_labels: torch.Tensor,
        expert_attributes: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """L_cls alone: vision encoder and experts, no decoder (stage 1, `grounding.expert_warmup_steps`).
        images (B, V, C, H, W), view_mask (B, V), expert_labels (B, 14 or K), expert_attributes (B, 14 or K, 2)
        -> the joint stage's cls_loss."""
        vision = self.vision(images, view_mask)
        features, logits = self.experts(vision.tokens, vision.token_mask)  # (B, K, De), (B, K)
        labels = self.select_expert_labels(expert_labels)
        loss = classification_loss(logits, labels, self.config.label_policy, self.balance)
        if self.experts.attribute_heads is not None and expert_attributes is not None:
            attributes = self.select_expert_labels(expert_attributes)  # (B, K, 2)
            loss = loss + attribute_loss(self.experts.attribute_heads(features), attributes)
        return loss

    def lm_forward(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor,
        past_key_values=None,
        use_cache: bool = False,
        position_ids: torch.Tensor | None = None,
        logits_to_keep: int = 0,
        cache_position: torch.Tensor | None = None,
    ):
        """One decoder call: inputs_embeds (B, S, D), attention_mask (B, past + S) -> HF CausalLMOutputWithPast
        (`logits` (B, S, vocab), or the last `logits_to_keep` positions when > 0; `past_key_values` a transformers
        Cache when use_cache). Call it inside `injecting(context)` for LEAD's injection."""
        embeds = inputs_embeds.to(self.lm.get_input_embeddings().weight.dtype)
        static_slots = (
            {} if cache_position is None else {"cache_position": cache_position}
        )  # a static cache's
        return self.lm(
            inputs_embeds=embeds,
            attention_mask=attention_mask,
            past_key_values=past_key_values,
            use_cache=use_cache,
            position_ids=position_ids,
            logits_to_keep=logits_to_keep,
            **static_slots,
        )

    def decoder_hidden_states(
        self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """The decoder without its LM head, as training reads it: inputs_embeds (B, S, D), attention_mask (B, S) ->
        the last hidden states after the final norm (B, S, D), what the head maps to logits. Call it inside
        `injecting(context)` for LEAD's injection."""
        embeds = inputs_embeds.to(self.lm.get_input_embeddings().weight.dtype)
        decoder = self.lm.get_decoder()  # the `*Model` inside the `*ForCausalLM` (LlamaModel, GPT2Model, ...)
        return decoder(inputs_embeds=embeds, attention_mask=attention_mask, use_cache=False).last_hidden_state

    @contextlib.contextmanager
    def injecting(self, context: StudyContext, record: bool = False) -> Iterator[InjectionTrace | None]:
        """The one scope in which the study's Z^l reach the decoder layers; cleared on exit (also on errors).
        Yields an InjectionTrace (gates (B, T, L), alpha (B, T, L, K)) when `record` and fusion=layerwise."""
        if not self.config.injection.layerwise:
            yield None
            return
        if context.expert_tokens is None:
            raise ValueError(
                "this StudyContext has no expert tokens; build it with encode_study of a layerwise model"
            )
        with injecting(self.injected_layers(), context.expert_tokens, record=record) as trace:
            yield trace

    # ----------------------------------------------------------------------------------------------
    # Helpers for training and decoding

    def injected_layers(self) -> list[InjectedLayer]:
        layers = get_decoder_layers(self.lm, self.backbone)
        return [layer for layer in layers if isinstance(layer, InjectedLayer)]

    def embed_tokens(self, token_ids: torch.Tensor) -> torch.Tensor:
        """(B, T) -> (B, T, D) input embeddings of the decoder."""
        return self.lm.get_input_embeddings()(token_ids)

    def select_expert_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """(B, 14) CheXpert-order labels or (B, K) -> (B, K) in the experts' order."""
        k = self.config.experts.num_experts
        if self.label_columns is not None and labels.shape[1] == len(OBSERVATIONS):
            return labels[:, self.label_columns.to(labels.device)]
        if labels.shape[1] != k:
            raise LeadrrgError(f"expert labels have {labels.shape[1]} columns; expected {k} (one per expert)")
        return labels

    def trainable_parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters by learning-rate group: `new` (vision encoder from scratch, projector, experts,
        projections, gates, and a from-scratch LLM) and `pretrained` (LoRA adapters or the fine-tuned weights of
        a pretrained LLM, and a pretrained, unfrozen vision encoder)."""
        pretrained_ids: set[int] = set()
        if self.config.decoder.pretrained_path is not None:
            gate_ids = {id(p) for layer in self.injected_layers() for p in layer.gate.parameters()}
            pretrained_ids |= {id(p) for p in self.lm.parameters() if id(p) not in gate_ids}
        if self.config.vision.name == "hf":
            pretrained_ids |= {id(p) for p in self.vision.encoder.parameters()}
        groups: dict[str, list[nn.Parameter]] = {"new": [], "pretrained": []}
        for parameter in self.parameters():
            if parameter.requires_grad:
                groups["pretrained" if id(parameter) in pretrained_ids else "new"].append(parameter)
        return groups


def _label_columns(names: list[str]) -> torch.Tensor | None:
    """Column of each expert in CheXpert-order label arrays, or None when an expert is not a CheXpert label."""
    if not all(name in OBSERVATIONS for name in names):
        return None
    return torch.tensor([OBSERVATIONS.index(name) for name in names], dtype=torch.long)
