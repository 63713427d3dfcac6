"""LeadModel contracts: zero start, losses, switches, scoped injection, cached decoding, checkpoints."""

from __future__ import annotations

import itertools

import pytest
import torch
from safetensors.torch import load_file, save_file

from leadrrg.config import ModelConfig
from leadrrg.constants import OBSERVATIONS
from leadrrg.model.decoder import BACKBONES, get_decoder_layers, set_decoder_layers
from leadrrg.model.lead import LeadModel
from leadrrg.model.losses import classification_loss, expert_targets
from tests.test_model_helpers import (
    BOS,
    EXPERTS,
    build,
    perturb_zero_init,
    tiny_batch,
    tiny_config,
    tiny_decoder,
)

FAMILIES = ["llama", "qwen2", "mistral", "gpt2"]


def _logits(model: LeadModel, batch: dict, injected: bool = True) -> torch.Tensor:
    context = model.encode_study(batch["images"], batch["view_mask"])
    embeds, mask = model.embed_inputs(context, batch["input_ids"], batch["attention_mask"])
    if not injected:
        return model.lm_forward(embeds, mask).logits
    with model.injecting(context):
        return model.lm_forward(embeds, mask).logits


def _unwrapped_logits(model: LeadModel, batch: dict) -> torch.Tensor:
    """The same weights with the HF decoder layers unwrapped: what the base LLM computes."""
    wrapped = get_decoder_layers(model.lm, model.backbone)
    set_decoder_layers(model.lm, model.backbone, torch.nn.ModuleList(layer.layer for layer in wrapped))
    try:
        return _logits(model, batch, injected=False)
    finally:
        set_decoder_layers(model.lm, model.backbone, wrapped)


def test_default_config_is_the_demo_model():
    config = ModelConfig()
    assert (config.vision.name, config.vision.image_size, config.vision.channels) == ("cnn_small", 128, 1)
    assert (config.decoder.backbone, config.decoder.hidden_size, config.decoder.num_layers) == (
        "llama",
        128,
        4,
    )
    assert config.decoder.pretrained_path is None and config.injection.fusion == "layerwise"


def test_forward_returns_named_losses_and_clears_context():
    model = build(tiny_config())
    batch = tiny_batch()
    out = model(**batch)
    assert set(out) == {"loss", "lm_loss", "cls_loss", "expert_logits", "lm_tokens"}
    assert out["expert_logits"].shape == (2, len(EXPERTS))
    assert torch.allclose(out["loss"], out["lm_loss"] + 4.0 * out["cls_loss"])
    assert all(layer.expert_tokens is None for layer in model.injected_layers())
    with (
        pytest.raises(RuntimeError, match="inside"),
        model.injecting(model.encode_study(batch["images"], batch["view_mask"])),
    ):
        assert model.injected_layers()[0].expert_tokens is not None
        raise RuntimeError("raised inside the scope")
    assert all(layer.expert_tokens is None for layer in model.injected_layers())


def test_lm_loss_is_next_token_cross_entropy_on_report_tokens():
    model = build(tiny_config())
    perturb_zero_init(model)
    batch = tiny_batch()
    logits = _logits(model, batch)  # (B, 1 + P + T - 1, vocab)
    prompt = logits.shape[1] - batch["input_ids"].shape[1]  # P - 0: visual positions after BOS
    text_logits = logits[:, prompt:-1]  # positions predicting input_ids[1:]
    expected = torch.nn.functional.cross_entropy(
        text_logits.reshape(-1, text_logits.shape[-1]),
        batch["target_ids"][:, 1:].reshape(-1),
        ignore_index=-100,
    )
    assert torch.allclose(model(**batch)["lm_loss"], expected, atol=1e-6)


def test_study_context_shapes_and_index_select():
    model = build(tiny_config())
    batch = tiny_batch()
    context = model.encode_study(batch["images"], batch["view_mask"])
    n = model.vision.encoder.grid[0] * model.vision.encoder.grid[1]
    assert context.visual_tokens.shape == (2, 2 * n, 32)
    assert context.visual_mask[1].tolist() == [True] * n + [False] * n
    assert context.expert_tokens.shape == (2, 2, len(EXPERTS), 32)
    beams = context.index_select(torch.tensor([0, 0, 1, 1, 1]))
    assert beams.expert_tokens.shape[0] == 5 and torch.equal(beams.visual_tokens[4], context.visual_tokens[1])


def test_labels_policy():
    labels = torch.tensor([[1.0, 0.0, -1.0, float("nan")]])
    assert expert_targets(labels, "ones")[0].tolist() == [[1, 0, 1, 0]]
    targets, weights = expert_targets(labels, "ignore")
    assert targets.tolist() == [[1, 0, 0, 0]] and weights.tolist() == [[1, 1, 0, 1]]
    logits = torch.tensor([[2.0, -1.0, 5.0, 0.5]])
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        logits[:, [0, 1, 3]], torch.tensor([[1.0, 0, 0]])
    )
    assert torch.allclose(classification_loss(logits, labels, "ignore"), expected)
    model = build(tiny_config())
    full = torch.arange(len(OBSERVATIONS), dtype=torch.float32)[None]
    assert model.select_expert_labels(full).tolist() == [[float(OBSERVATIONS.index(n)) for n in EXPERTS]]


def test_zero_initialised_lead_equals_base_decoder():
    model = build(tiny_config())
    batch = tiny_batch()
    assert torch.equal(_logits(model, batch), _unwrapped_logits(model, batch))
    perturb_zero_init(model)
    assert not torch.allclose(_logits(model, batch), _unwrapped_logits(model, batch))


def test_gradients_reach_every_parameter_from_scratch():
    model = build(tiny_config()).train()
    perturb_zero_init(model)
    model(**tiny_batch())["loss"].backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert missing == []
    groups = model.trainable_parameter_groups()
    assert groups["pretrained"] == [] and len(groups["new"]) == len(list(model.parameters()))


_SWITCHES = (
    [dict(fusion="layerwise", projection=p, gate=g, confidence=c) for p, g, c in
     itertools.product(["per_layer", "shared"], ["dynamic", "static", "open"], ["mixture", "product", "none"])]
    + [dict(fusion="layerwise", projection=p, rank=4) for p in ["per_layer", "shared"]]
    + [dict(fusion="layerwise", confidence="explicit")]
    + [dict(fusion="input", confidence=c) for c in ["mixture", "explicit", "product", "none"]]
    + [dict(fusion="aux"), dict(fusion="none")]
)  # fmt: skip


@pytest.mark.parametrize("switches", _SWITCHES, ids=lambda s: "-".join(str(v) for v in s.values()))
def test_every_switch_builds_and_trains(switches):
    model = build(tiny_config(**switches)).train()
    batch = tiny_batch()
    optimizer = torch.optim.AdamW(
        [p for group in model.trainable_parameter_groups().values() for p in group], lr=3e-3
    )
    losses = []
    for _ in range(3):
        out = model(**batch)
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        losses.append(out["loss"].item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]
    if switches["fusion"] == "none":
        assert (
            out["expert_logits"] is None and out["cls_loss"].item() == 0.0 and model.injected_layers() == []
        )
    if switches["fusion"] == "input":
        context = model.encode_study(batch["images"], batch["view_mask"])
        n = model.vision.encoder.grid[0] * model.vision.encoder.grid[1]
        assert context.visual_tokens.shape[1] == 2 * n + len(EXPERTS) and context.expert_tokens is None


def test_visual_pool_shortens_the_prompt():
    config = tiny_config()
    config.visual_pool = 2
    model = build(config)
    batch = tiny_batch()
    context = model.encode_study(batch["images"], batch["view_mask"])
    h, w = model.vision.encoder.grid
    assert context.visual_tokens.shape[1] == 2 * ((h + 1) // 2) * ((w + 1) // 2)
    assert torch.isfinite(model(**batch)["loss"])


@pytest.mark.parametrize("family", FAMILIES)
def test_cached_and_uncached_logits_agree_under_injection(family):
    model = build(tiny_config(decoder=tiny_decoder(backbone=family)))
    perturb_zero_init(model)
    batch = tiny_batch()
    context = model.encode_study(batch["images"], batch["view_mask"])
    ids = batch["input_ids"][:1]  # the study with both views; BOS + 6 tokens
    context = context.index_select(torch.tensor([0]))
    embeds, mask = model.embed_inputs(context, ids, torch.ones_like(ids))
    prefix = 1 + context.num_prompt_tokens + 1  # BOS, visual tokens, first token
    with model.injecting(context, record=True) as trace:
        full = model.lm_forward(embeds, mask).logits
        uncached_positions = trace.gates().shape[1]
    with model.injecting(context, record=True) as trace:
        out = model.lm_forward(embeds[:, :prefix], mask[:, :prefix], use_cache=True)
        steps, cache = [out.logits], out.past_key_values
        for t in range(prefix, embeds.shape[1]):
            out = model.lm_forward(
                embeds[:, t : t + 1], mask[:, : t + 1], past_key_values=cache, use_cache=True
            )
            steps.append(out.logits)
            cache = out.past_key_values
        assert trace.gates().shape == (1, embeds.shape[1], 2) and uncached_positions == embeds.shape[1]
    cached = torch.cat(steps, dim=1)
    assert torch.allclose(cached, full, atol=1e-5), (cached - full).abs().max()
    assert not any(layer.expert_tokens is not None for layer in model.injected_layers())


def test_gradient_checkpointing_trains():
    config = tiny_config(decoder=tiny_decoder(gradient_checkpointing=True))
    model = build(config).train()
    assert all(layer.layer.gradient_checkpointing for layer in model.injected_layers())
    perturb_zero_init(model)
    model(**tiny_batch())["loss"].backward()
    assert all(p.grad is not None for p in model.parameters())


def test_state_dict_round_trip_through_safetensors(tmp_path):
    model = build(tiny_config(), seed=0)
    perturb_zero_init(model)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "model.safetensors")
    other = build(tiny_config(), seed=1)
    other.load_state_dict(load_file(tmp_path / "model.safetensors"), strict=True)
    batch = tiny_batch()
    assert torch.equal(_logits(model, batch), _logits(other, batch))
    assert torch.equal(model(**batch)["loss"], other(**batch)["loss"])


# --------------------------------------------------------------------------------------------------
# Pretrained decoders (tiny random HF models saved locally) with LoRA


@pytest.fixture(scope="module")
def pretrained_dirs(tmp_path_factory):
    from transformers import AutoModelForCausalLM

    dirs = {}
    for family in FAMILIES:
        torch.manual_seed(0)
        hf_config = BACKBONES.get(family).make_config(tiny_decoder(), 60, 0)
        path = tmp_path_factory.mktemp(family)
        AutoModelForCausalLM.from_config(hf_config).save_pretrained(path)
        dirs[family] = path
    return dirs


def _pretrained_config(family, path, **injection):
    return tiny_config(
        decoder=tiny_decoder(backbone=family, pretrained_path=str(path), lora_r=4, lora_dropout=0.0),
        **injection,
    )


@pytest.mark.parametrize("family", FAMILIES)
def test_pretrained_lora_zero_start_equals_the_raw_hf_model(family, pretrained_dirs):
    from transformers import AutoModelForCausalLM

    model = build(_pretrained_config(family, pretrained_dirs[family]))
    raw = AutoModelForCausalLM.from_pretrained(pretrained_dirs[family], local_files_only=True).eval()
    batch = tiny_batch()
    context = model.encode_study(batch["images"], batch["view_mask"])
    embeds, mask = model.embed_inputs(context, batch["input_ids"], batch["attention_mask"])
    with model.injecting(context):
        lead_logits = model.lm_forward(embeds, mask).logits
    assert torch.equal(lead_logits, raw(inputs_embeds=embeds, attention_mask=mask).logits)
    wrapper = model.injected_layers()[0]
    from peft.tuners.lora import LoraLayer

    assert any(
        isinstance(m, LoraLayer) for m in wrapper.layer.modules()
    )  # LoRA sits inside the wrapped layers
    attention = "attn" if family == "gpt2" else "self_attn"
    assert getattr(wrapper, attention) is getattr(
        wrapper.layer, attention
    )  # attribute lookups reach the HF layer


@pytest.mark.parametrize("family", FAMILIES)
def test_pretrained_trains_only_lora_and_new_modules(family, pretrained_dirs):
    model = build(_pretrained_config(family, pretrained_dirs[family])).train()
    perturb_zero_init(model)
    groups = model.trainable_parameter_groups()
    names = {id(p): n for n, p in model.named_parameters()}
    assert groups["pretrained"] and all("lora_" in names[id(p)] for p in groups["pretrained"])
    assert all(not names[id(p)].startswith("lm.") or ".gate." in names[id(p)] for p in groups["new"])
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith("lm.") for n in frozen)
    optimizer = torch.optim.AdamW([p for g in groups.values() for p in g], lr=1e-2)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_B" in n}
    loss = model(**tiny_batch())["loss"]
    loss.backward()
    for name, parameter in model.named_parameters():
        assert (parameter.grad is not None) == parameter.requires_grad, name
    optimizer.step()
    for name, parameter in model.named_parameters():
        if name in frozen:
            assert torch.equal(parameter, frozen[name]), name
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters() if n in before)


def test_pretrained_with_input_fusion_and_prompt_ids(pretrained_dirs):
    model = build(_pretrained_config("llama", pretrained_dirs["llama"], fusion="input")).train()
    batch = tiny_batch()
    batch["input_ids"][:, 0] = BOS
    assert torch.isfinite(model(**batch)["loss"])


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_a_bf16_base_keeps_fp32_master_weights_that_one_step_moves(family, pretrained_dirs):
    # With decoder.load_dtype=bfloat16 the frozen base is bf16, but what trains must stay fp32: an AdamW step of
    # 1e-3 on a bf16 LayerNorm weight near 1 rounds back to the same value (bf16 has 8 bits of mantissa).
    config = _pretrained_config(family, pretrained_dirs[family])
    config.decoder.load_dtype = "bfloat16"
    model = build(config).train()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(p.dtype == torch.float32 for p in trainable.values()), sorted(
        n for n, p in trainable.items() if p.dtype != torch.float32
    )[:5]
    assert any(p.dtype == torch.bfloat16 for p in model.parameters() if not p.requires_grad)
    gate_norms = {n: p.detach().clone() for n, p in trainable.items() if ".gate.norm.weight" in n}
    assert gate_norms
    optimizer = torch.optim.AdamW(list(trainable.values()), lr=1e-3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(**tiny_batch())["loss"]
    loss.backward()
    optimizer.step()
    for name, before in gate_norms.items():
        assert not torch.equal(trainable[name].detach(), before), name


def test_the_lm_loss_averages_over_the_tokens_target_token_count_counts():
    from leadrrg.model.losses import target_token_count

    model = build(tiny_config()).train()
    batch = tiny_batch()
    out = model(**batch)
    assert int(out["lm_tokens"]) == int(target_token_count(batch["target_ids"])) > 0


@pytest.mark.parametrize("family", FAMILIES)
def test_the_lm_head_sees_only_report_positions_and_gives_the_full_heads_loss(family, pretrained_dirs):
    """Training maps only the positions whose next token is a report token to logits (at a pretrained vocabulary
    the rest would be half of the head's work); the loss and every gradient are those of the full logits."""
    from leadrrg.model.losses import next_token_loss, target_token_count

    model = build(_pretrained_config(family, pretrained_dirs[family])).eval()  # eval: no truth forcing
    perturb_zero_init(model)
    batch = tiny_batch()
    trainable = [p for p in model.parameters() if p.requires_grad]
    logits = _logits(model, batch)  # (B, S, vocab), every position
    prompt = logits.shape[1] - batch["input_ids"].shape[1] + 1  # BOS and the visual tokens
    targets = torch.cat([torch.full((2, prompt), -100), batch["target_ids"][:, 1:]], dim=1)  # (B, S)
    expected = next_token_loss(logits, targets)
    expected_grads = torch.autograd.grad(expected, trainable, allow_unused=True)  # experts: L_cls only
    head_rows = []
    hook = model.lm.get_output_embeddings().register_forward_hook(
        lambda module, args, out: head_rows.append(args[0].shape[0])
    )
    try:
        loss = model(**batch)["lm_loss"]
    finally:
        hook.remove()
    assert head_rows == [int(target_token_count(batch["target_ids"]))]
    torch.testing.assert_close(loss, expected)
    grads = torch.autograd.grad(loss, trainable, allow_unused=True)
    assert sum(g is not None for g in grads) > len(model.injected_layers())  # LoRA and gates at least
    for grad, expected_grad in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(grad, expected_grad)


def test_a_batch_without_report_tokens_has_a_zero_lm_loss():
    model = build(tiny_config())
    batch = tiny_batch()
    batch["target_ids"] = torch.full_like(batch["target_ids"], -100)
    out = model(**batch)
    assert float(out["lm_loss"]) == 0.0 and int(out["lm_tokens"]) == 0
    out["loss"].backward()  # still in the graph (cls_loss trains the experts)
