"""Tiny configs and inputs shared by the model tests (CPU, seconds); no tests of its own."""

from __future__ import annotations

import torch

from leadrrg.config import DecoderConfig, ExpertConfig, InjectionConfig, ModelConfig, VisionConfig
from leadrrg.constants import OBSERVATIONS
from leadrrg.model.lead import LeadModel

VOCAB = 50
PAD = 0
BOS = 1
EXPERTS = ["Cardiomegaly", "Edema", "Pleural Effusion"]


def tiny_decoder(**overrides) -> DecoderConfig:
    values = dict(
        hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=48, max_positions=96
    )
    values.update(overrides)
    return DecoderConfig(**values)


def tiny_config(
    vision: VisionConfig | None = None, decoder: DecoderConfig | None = None, **injection
) -> ModelConfig:
    return ModelConfig(
        vision=vision or VisionConfig(image_size=32, hidden_size=16, num_layers=3),
        experts=ExpertConfig(names=list(EXPERTS), hidden_size=16, num_heads=2),
        injection=InjectionConfig(**injection),
        decoder=decoder or tiny_decoder(),
        max_views=2,
    )


def tiny_batch(
    batch: int = 2, length: int = 7, image_size: int = 32, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Two studies: the first with two views, the second with its second view missing and a padded report."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 2, 1, image_size, image_size, generator=generator)
    view_mask = torch.ones(batch, 2, dtype=torch.bool)
    view_mask[1:, 1] = False
    input_ids = torch.randint(4, VOCAB, (batch, length), generator=generator)
    input_ids[:, 0] = BOS
    attention_mask = torch.ones(batch, length, dtype=torch.long)
    attention_mask[1:, -2:] = 0
    input_ids[1:, -2:] = PAD
    target_ids = input_ids.masked_fill(attention_mask == 0, -100)
    target_ids[:, :2] = -100  # BOS and the prompt
    labels = torch.full((batch, len(OBSERVATIONS)), float("nan"))
    labels[:, OBSERVATIONS.index("Cardiomegaly")] = 1.0
    labels[:, OBSERVATIONS.index("Edema")] = -1.0
    labels[:, OBSERVATIONS.index("Pleural Effusion")] = 0.0
    attributes = torch.full((batch, len(OBSERVATIONS), 2), -100, dtype=torch.long)  # side, severity
    attributes[:, OBSERVATIONS.index("Edema")] = torch.tensor([2, 0])  # bilateral, mild
    return dict(
        images=images,
        view_mask=view_mask,
        input_ids=input_ids,
        attention_mask=attention_mask,
        target_ids=target_ids,
        expert_labels=labels,
        expert_attributes=attributes,
        decoder_attributes=attributes,
    )


def build(config: ModelConfig, seed: int = 0) -> LeadModel:
    torch.manual_seed(seed)
    return LeadModel(config, vocab_size=VOCAB, pad_token_id=PAD).eval()


def perturb_zero_init(model: LeadModel, seed: int = 1) -> None:
    """Give the zero-initialised factors (W^l / U^l, LoRA B) random values so injection is active."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("expert_projections.up") or "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)


def grounded_model(**grounding) -> LeadModel:
    """A tiny LEAD with `model.grounding` fields set as given and its zero-initialised factors made active."""
    config = tiny_config()
    for key, value in grounding.items():
        setattr(config.grounding, key, value)
    model = build(config)
    perturb_zero_init(model)
    return model
