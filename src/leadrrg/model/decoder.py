"""Decoder-only LLM backbones: where their decoder layers live and how to build each family.

Registry keys (`DecoderConfig.backbone`, never sniffed from model names): `llama`, `qwen2`, `mistral`, `gpt2`.
From scratch, a small config of the family is built from `DecoderConfig` sizes and the tokenizer's vocabulary;
pretrained, `AutoModelForCausalLM.from_pretrained(local_path, local_files_only=True)` with LoRA (peft) on the
family's attention and MLP projections and the base frozen.

transformers and peft are imported inside the functions that use them: they take seconds to import, and
`leadrrg.model` is imported by commands that only read a run directory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from leadrrg.config import DecoderConfig
from leadrrg.errors import LeadrrgError
from leadrrg.registry import Registry


@dataclass(frozen=True)
class BackboneSpec:
    """How to handle one decoder family.

    layers_path: dotted attribute path of the decoder-layer ModuleList on the `*ForCausalLM` model.
    lora_targets: module names LoRA adapts (attention and MLP projections).
    make_config: (decoder config, vocab size, pad id) -> a transformers config for a from-scratch model.
    lora_fan_in_fan_out: True for GPT-2's Conv1D projections."""

    layers_path: str
    lora_targets: tuple[str, ...]
    make_config: Callable[[DecoderConfig, int, int], object]
    lora_fan_in_fan_out: bool = False


BACKBONES: Registry[BackboneSpec] = Registry("decoder backbone")

_LLAMA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _llama_like_kwargs(config: DecoderConfig, vocab_size: int, pad_token_id: int) -> dict:
    return dict(
        vocab_size=vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_kv_heads,
        max_position_embeddings=config.max_positions,
        attention_dropout=config.dropout,
        pad_token_id=pad_token_id,
        bos_token_id=None,
        eos_token_id=None,
        tie_word_embeddings=False,
    )


def _llama_config(config: DecoderConfig, vocab_size: int, pad_token_id: int):
    from transformers import LlamaConfig

    return LlamaConfig(**_llama_like_kwargs(config, vocab_size, pad_token_id))


def _qwen2_config(config: DecoderConfig, vocab_size: int, pad_token_id: int):
    from transformers import Qwen2Config

    return Qwen2Config(**_llama_like_kwargs(config, vocab_size, pad_token_id))


def _mistral_config(config: DecoderConfig, vocab_size: int, pad_token_id: int):
    from transformers import MistralConfig

    return MistralConfig(**_llama_like_kwargs(config, vocab_size, pad_token_id), sliding_window=None)


def _gpt2_config(config: DecoderConfig, vocab_size: int, pad_token_id: int):
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=vocab_size,
        n_embd=config.hidden_size,
        n_layer=config.num_layers,
        n_head=config.num_heads,
        n_inner=config.intermediate_size,
        n_positions=config.max_positions,
        resid_pdrop=config.dropout,
        embd_pdrop=config.dropout,
        attn_pdrop=config.dropout,
        pad_token_id=pad_token_id,
        bos_token_id=None,
        eos_token_id=None,
        tie_word_embeddings=False,
    )


BACKBONES.add("llama", BackboneSpec("model.layers", _LLAMA_TARGETS, _llama_config))
BACKBONES.add("qwen2", BackboneSpec("model.layers", _LLAMA_TARGETS, _qwen2_config))
BACKBONES.add("mistral", BackboneSpec("model.layers", _LLAMA_TARGETS, _mistral_config))
BACKBONES.add(
    "gpt2",
    BackboneSpec("transformer.h", ("c_attn", "c_proj", "c_fc"), _gpt2_config, lora_fan_in_fan_out=True),
)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _resolve(root: nn.Module, dotted: str) -> tuple[nn.Module, str]:
    """(parent module, attribute name) of a dotted path such as `model.layers`."""
    *parents, name = dotted.split(".")
    module = root
    for part in parents:
        module = getattr(module, part)
    return module, name


def get_decoder_layers(lm: nn.Module, spec: BackboneSpec) -> nn.ModuleList:
    parent, name = _resolve(lm, spec.layers_path)
    return getattr(parent, name)


def set_decoder_layers(lm: nn.Module, spec: BackboneSpec, layers: nn.ModuleList) -> None:
    parent, name = _resolve(lm, spec.layers_path)
    setattr(parent, name, layers)


def build_causal_lm(config: DecoderConfig, vocab_size: int, pad_token_id: int) -> nn.Module:
    """A `*ForCausalLM`: from scratch (all parameters trainable) or pretrained from a local directory (LoRA
    adapters trainable, base frozen; `lora_r = 0` fine-tunes the whole LLM). Layers are not wrapped yet."""
    from transformers import AutoModelForCausalLM

    spec = BACKBONES.get(config.backbone)
    attention = (
        {} if config.attn_implementation == "auto" else {"attn_implementation": config.attn_implementation}
    )
    if config.pretrained_path is None:
        lm = AutoModelForCausalLM.from_config(spec.make_config(config, vocab_size, pad_token_id), **attention)
    else:
        path = Path(config.pretrained_path)
        if not (path / "config.json").is_file():
            raise LeadrrgError(
                f"decoder.pretrained_path {path} has no config.json; expected a local transformers causal-LM directory"
            )
        lm = AutoModelForCausalLM.from_pretrained(
            path, local_files_only=True, dtype=_DTYPES[config.load_dtype], **attention
        )
        if vocab_size > lm.get_input_embeddings().num_embeddings:
            raise LeadrrgError(
                f"the tokenizer has {vocab_size} tokens but the decoder in {path} embeds only "
                f"{lm.get_input_embeddings().num_embeddings}; use the model's own tokenizer"
            )
        if config.lora_r > 0:
            lm = apply_lora(lm, spec, config)
    if config.gradient_checkpointing:
        lm.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    lm.config.use_cache = False
    return lm


def apply_lora(lm: nn.Module, spec: BackboneSpec, config: DecoderConfig) -> nn.Module:
    """Inject LoRA adapters into the family's projections in place; freeze everything else of `lm`."""
    from peft import LoraConfig, inject_adapter_in_model

    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(spec.lora_targets),
        fan_in_fan_out=spec.lora_fan_in_fan_out,
        bias="none",
    )
    lm = inject_adapter_in_model(lora, lm)
    for name, parameter in lm.named_parameters():
        parameter.requires_grad = "lora_" in name  # peft's naming of adapter weights
    return lm


def keep_trainable_fp32(module: nn.Module) -> None:
    """Master weights: every trainable parameter stays fp32, also on a bf16 base (decoder.load_dtype=bfloat16,
    where peft's LoRA adapters take the base dtype); autocast does the compute. A bf16 parameter would lose AdamW
    updates below its 8-bit mantissa (a 1e-3 step on a weight near 1 rounds back to the same value)."""
    for parameter in module.parameters():
        if parameter.requires_grad and parameter.is_floating_point() and parameter.dtype != torch.float32:
            parameter.data = parameter.data.float()
