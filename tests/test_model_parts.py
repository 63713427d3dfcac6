"""Shapes and contracts of the model stages: vision encoders, projector, experts, injection."""

from __future__ import annotations

import json

import pytest
import torch

from leadrrg.config import ExpertConfig, InjectionConfig, VisionConfig
from leadrrg.errors import LeadrrgError
from leadrrg.model.experts import ExpertModule
from leadrrg.model.injection import (
    ExpertGate,
    ExpertProjections,
    confidence_weighting,
    injecting,
    wrap_layers,
)
from leadrrg.model.projector import Projector, pool_view_grids
from leadrrg.model.vision import VISION_ENCODERS, MultiViewEncoder, create_vision_encoder


@pytest.mark.parametrize("name", ["cnn_small", "vit_small"])
def test_from_scratch_encoders_give_tokens_and_pooled(name):
    config = VisionConfig(name=name, image_size=32, hidden_size=16, num_layers=3, num_heads=2, patch_size=8)
    encoder = create_vision_encoder(config)
    tokens, pooled = encoder(torch.randn(3, 1, 32, 32))
    h, w = encoder.grid
    assert tokens.shape == (3, h * w, 16) and pooled.shape == (3, 16)


def test_unknown_encoder_lists_valid_names():
    with pytest.raises(LeadrrgError, match="cnn_small"):
        VISION_ENCODERS.get("resnet9000")


def test_default_demo_encoder_is_an_8x8_grid():
    encoder = create_vision_encoder(VisionConfig())
    assert encoder.grid == (8, 8)
    assert encoder(torch.randn(1, 1, 128, 128))[0].shape == (1, 64, 128)


def test_multi_view_concatenates_views_and_masks_missing_ones():
    torch.manual_seed(0)
    encoder = MultiViewEncoder(VisionConfig(image_size=32, hidden_size=16, num_layers=3), max_views=2)
    images = torch.randn(2, 2, 1, 32, 32)
    view_mask = torch.tensor([[True, True], [True, False]])
    out = encoder(images, view_mask)
    n = encoder.encoder.grid[0] * encoder.encoder.grid[1]
    assert out.tokens.shape == (2, 2 * n, 16) and out.pooled.shape == (2, 16)
    assert out.token_mask[0].all() and out.token_mask[1, :n].all() and not out.token_mask[1, n:].any()
    # A missing view must not change what the experts read.
    experts = ExpertModule(ExpertConfig(names=["a", "b"], hidden_size=8, num_heads=2), vision_size=16)
    features, logits = experts(out.tokens, out.token_mask)
    assert features.shape == (2, 2, 8) and logits.shape == (2, 2)
    images2 = images.clone()
    images2[1, 1] = torch.randn(1, 32, 32)
    out2 = encoder(images2, view_mask)
    assert torch.allclose(experts(out2.tokens, out2.token_mask)[1][1], logits[1], atol=1e-6)
    assert torch.allclose(out2.pooled[1], out.pooled[1], atol=1e-6)


def test_pool_and_project_view_grids():
    tokens = torch.randn(2, 2 * 16, 8)  # two views of a 4x4 grid
    mask = torch.tensor([[True] * 32, [True] * 16 + [False] * 16])
    pooled, pooled_mask = pool_view_grids(tokens, mask, num_views=2, grid=(4, 4), factor=2)
    assert pooled.shape == (2, 8, 8) and pooled_mask.tolist()[1] == [True] * 4 + [False] * 4
    assert torch.allclose(pooled[0, 0], tokens[0, [0, 1, 4, 5]].mean(0))
    assert Projector(8, 12)(pooled).shape == (2, 8, 12)


@pytest.mark.parametrize("mode", ["mixture", "explicit", "product", "none"])
def test_confidence_weighting(mode):
    features, probs, absent = torch.randn(2, 3, 4), torch.rand(2, 3), torch.randn(3, 4)
    present = torch.randn(3, 4)
    out = confidence_weighting(features, probs, absent, mode, present)
    expected = {
        "mixture": probs[..., None] * features + (1 - probs[..., None]) * absent,
        "explicit": probs[..., None] * (features + present) + (1 - probs[..., None]) * absent,
        "product": probs[..., None] * features,
        "none": features,
    }[mode]
    assert torch.allclose(out, expected)


@pytest.mark.parametrize("projection", ["per_layer", "shared"])
@pytest.mark.parametrize("rank", [0, 3])
def test_projections_start_at_zero_and_have_layer_shape(projection, rank):
    config = InjectionConfig(projection=projection, rank=rank)
    projections = ExpertProjections(config, num_experts=3, expert_size=8, model_size=12, num_layers=4)
    z = projections(torch.randn(2, 3, 8), torch.rand(2, 3))
    assert z.shape == (2, 4, 3, 12) and not z.any()
    with torch.no_grad():
        projections.up.normal_()
    z = projections(torch.randn(2, 3, 8), torch.rand(2, 3))
    assert torch.equal(z[:, 0], z[:, 1]) == (projection == "shared")


@pytest.mark.parametrize("mode", ["dynamic", "static", "open"])
def test_gate_shapes_and_zero_context_is_identity(mode):
    gate = ExpertGate(12, mode)
    hidden = torch.randn(2, 5, 12)
    out, g, alpha = gate(hidden, torch.zeros(2, 3, 12))
    assert torch.equal(out, hidden) and g.shape == (2, 5) and alpha.shape == (2, 5, 3)
    assert torch.allclose(alpha.sum(-1), torch.ones(2, 5))
    out, _, _ = gate(hidden, torch.randn(2, 3, 12))
    assert not torch.equal(out, hidden)


class _EchoLayer(torch.nn.Module):
    """Stands in for an HF decoder layer: returns a tuple and records the extra arguments it was given."""

    attention_type = "full_attention"

    def forward(self, hidden_states, *args, **kwargs):
        self.seen = (args, kwargs)
        return (hidden_states * 2,)


def test_wrapper_passes_arguments_through_and_scope_always_clears():
    layers = wrap_layers(torch.nn.ModuleList([_EchoLayer(), _EchoLayer()]), 4, "dynamic", 0.0)
    hidden = torch.randn(1, 3, 4)
    out = layers[0](hidden, "positional", attention_mask="mask")
    assert torch.equal(out[0], hidden * 2) and layers[0].layer.seen == (
        ("positional",),
        {"attention_mask": "mask"},
    )
    assert layers[0].attention_type == "full_attention"  # attribute misses reach the wrapped layer
    z = torch.randn(1, 2, 5, 4)
    with injecting(list(layers), z, record=True) as trace:
        assert layers[1].expert_tokens is not None
        layers[0](hidden)
        layers[1](hidden)
        assert trace.gates().shape == (1, 3, 2) and trace.alpha().shape == (1, 3, 2, 5)
    assert all(layer.expert_tokens is None for layer in layers)
    with pytest.raises(RuntimeError, match="boom"), injecting(list(layers), z):
        raise RuntimeError("boom")
    assert all(layer.expert_tokens is None for layer in layers)
    with pytest.raises(ValueError, match="index_select"), injecting(list(layers), z):
        layers[0](torch.randn(3, 3, 4))
    assert all(layer.expert_tokens is None for layer in layers)


def _tiny_hf_vision_model(family: str):
    """A tiny random transformers vision model whose patch tokens are (B, 16, 16) for 32 px inputs."""
    import transformers as tf

    vit = dict(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        image_size=32,
        patch_size=8,
    )
    if family == "vit":
        return tf.ViTModel(tf.ViTConfig(**vit), add_pooling_layer=False)
    if family == "dinov2":
        return tf.Dinov2Model(tf.Dinov2Config(**vit))
    if family == "siglip":  # a full SigLIP checkpoint: the encoder keeps its vision tower
        text = dict(
            hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, vocab_size=50
        )
        return tf.SiglipModel(tf.SiglipConfig(vision_config=vit, text_config=text))
    if family == "convnext":
        return tf.ConvNextModel(
            tf.ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, image_size=32)
        )
    if family == "swin":
        return tf.SwinModel(
            tf.SwinConfig(
                image_size=32, patch_size=4, embed_dim=8, depths=[1, 1], num_heads=[2, 2], window_size=4
            )
        )
    raise ValueError(family)


@pytest.mark.parametrize("family", ["vit", "dinov2", "siglip", "convnext", "swin"])
def test_hf_vision_encoder_from_local_directory(tmp_path, family):
    _tiny_hf_vision_model(family).save_pretrained(tmp_path)
    stats = {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(stats))
    config = VisionConfig(name="hf", pretrained_path=str(tmp_path), image_size=32)
    encoder = create_vision_encoder(config)
    tokens, pooled = encoder(torch.randn(2, 1, 32, 32))  # grayscale, repeated to 3 channels inside
    assert tokens.shape == (2, 16, 16) and pooled.shape == (2, 16) and encoder.grid == (4, 4)
    assert torch.allclose(encoder.pixel_mean.flatten(), torch.tensor(stats["image_mean"]))
    # Every parameter left trainable gets a gradient from the tokens (DDP needs that: a pooler or head is frozen).
    trainable = [p for p in encoder.parameters() if p.requires_grad]
    grads = torch.autograd.grad(encoder(torch.randn(2, 1, 32, 32))[0].sum(), trainable, allow_unused=True)
    assert trainable and all(g is not None for g in grads)


def test_hf_vision_encoder_errors_are_clear(tmp_path):
    with pytest.raises(LeadrrgError, match="pretrained_path"):
        create_vision_encoder(VisionConfig(name="hf"))
    with pytest.raises(LeadrrgError, match="config.json"):
        create_vision_encoder(VisionConfig(name="hf", pretrained_path=str(tmp_path)))


def test_lead_model_with_hf_vision_encoder_trains_it_as_pretrained(tmp_path):
    from tests.test_model_helpers import build, tiny_batch, tiny_config

    _tiny_hf_vision_model("vit").save_pretrained(tmp_path)
    model = build(
        tiny_config(vision=VisionConfig(name="hf", pretrained_path=str(tmp_path), image_size=32))
    ).train()
    assert torch.isfinite(model(**tiny_batch())["loss"])
    pretrained = {id(p) for p in model.trainable_parameter_groups()["pretrained"]}
    assert pretrained == {id(p) for p in model.vision.encoder.parameters() if p.requires_grad}
    frozen = VisionConfig(name="hf", pretrained_path=str(tmp_path), image_size=32, freeze=True)
    model = build(tiny_config(vision=frozen))
    assert model.trainable_parameter_groups()["pretrained"] == []
    assert not model.train().vision.encoder.model.training  # a frozen encoder stays in eval mode


def test_expert_readouts_max_pooled_evidence_reaches_every_expert():
    torch.manual_seed(0)
    config = ExpertConfig(names=["a", "b"], hidden_size=8, num_heads=2)
    assert config.readout == "query_max"
    tokens, mask = torch.randn(2, 6, 16), torch.ones(2, 6, dtype=torch.bool)
    paper = ExpertModule(ExpertConfig(names=["a", "b"], hidden_size=8, num_heads=2, readout="query"), 16)
    assert paper.max_projection is None
    experts = ExpertModule(config, 16)
    # A spike in one token's channels moves the logits through the max even where attention barely looks.
    spiked = tokens.clone()
    spiked[:, 3] += 10.0 * torch.randn(16)
    assert not torch.allclose(experts(spiked, mask)[1], experts(tokens, mask)[1])
    # Masked tokens are not evidence, and a study without any valid token stays finite.
    masked = mask.clone()
    masked[:, 3] = False
    assert torch.allclose(experts(spiked, masked)[1], experts(tokens, masked)[1], atol=1e-6)
    empty = torch.zeros_like(mask)
    empty[0] = True
    assert torch.isfinite(experts(tokens, empty)[0]).all()
    with pytest.raises(LeadrrgError, match="experts.readout"):
        ExpertConfig(readout="mean")
