"""AdamW with per-group learning rates and a warmup + cosine schedule.

The model names its parameter groups (`model.trainable_parameter_groups()`): pretrained-LLM parameters
(LoRA adapters, or a fully fine-tuned pretrained LLM) train at `train.lr_llm`, everything else (vision,
projector, experts, injection, from-scratch decoders) at `train.lr`. Norms, biases and embeddings get no
weight decay.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch
from torch import nn

from leadrrg.config import TrainConfig

# Group names that train at `lr_llm` (LeadModel names its groups `new` and `pretrained`: LoRA adapters or
# fine-tuned pretrained weights); any other group name trains at `lr`.
LLM_GROUPS = frozenset({"pretrained", "llm", "lora"})
NO_DECAY_KEYS = ("norm", "bias", "embed", "wte", "wpe")


def _is_no_decay(name: str, param: nn.Parameter) -> bool:
    # 1-d tensors (norm weights, biases, gate scalars) and embedding tables are not decayed.
    return param.ndim < 2 or any(key in name.lower() for key in NO_DECAY_KEYS)


def named_parameter_groups(model: nn.Module) -> dict[str, list[tuple[str, nn.Parameter]]]:
    """The model's named trainable groups: `{group: [(name, param), ...]}`.

    Uses `model.trainable_parameter_groups()` when the model defines it (a mapping of group name to
    named parameters, or to parameters), otherwise puts every trainable parameter in one group "new".
    """
    names = {id(p): n for n, p in model.named_parameters()}
    groups_fn = getattr(model, "trainable_parameter_groups", None)
    raw: Mapping[str, Iterable] = (
        groups_fn() if callable(groups_fn) else {"new": list(model.named_parameters())}
    )
    groups: dict[str, list[tuple[str, nn.Parameter]]] = {}
    seen: set[int] = set()
    for group_name, entries in raw.items():
        for entry in entries:
            name, param = entry if isinstance(entry, tuple) else (names[id(entry)], entry)
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            groups.setdefault(group_name, []).append((name, param))
    missing = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in seen]
    if missing:
        raise ValueError(f"trainable parameters missing from the model's parameter groups: {missing[:5]}")
    return groups


def build_optimizer(model: nn.Module, config: TrainConfig) -> tuple[torch.optim.AdamW, list[str]]:
    """AdamW over the model's trainable parameters; returns the optimizer and the parameter names in
    optimizer order (the keys under which its state is checkpointed)."""
    param_groups, param_names = [], []
    for group_name, named in named_parameter_groups(model).items():
        lr = config.lr_llm if group_name in LLM_GROUPS else config.lr
        for decay in (True, False):
            chosen = [(n, p) for n, p in named if _is_no_decay(n, p) != decay]
            if not chosen:
                continue
            param_groups.append(
                {
                    "params": [p for _, p in chosen],
                    "lr": lr,
                    "initial_lr": lr,
                    "weight_decay": config.weight_decay if decay else 0.0,
                    "name": f"{group_name}{'' if decay else '.no_decay'}",
                }
            )
            param_names.extend(n for n, _ in chosen)
    if not param_groups:
        raise ValueError("the model has no trainable parameters")
    # fused/foreach kernels differ in rounding between devices; the default keeps CPU runs reproducible.
    optimizer = torch.optim.AdamW(param_groups, lr=config.lr, betas=(0.9, 0.95), eps=1e-8)
    return optimizer, param_names


def lr_factor(step: int, config: TrainConfig) -> float:
    """Multiplier on each group's base lr at optimizer step `step` (0-based): linear warmup from
    1/warmup to 1, then cosine decay to `min_lr_ratio` at `max_steps`."""
    if config.warmup_steps > 0 and step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    decay_steps = max(config.max_steps - config.warmup_steps, 1)
    progress = min(max(step - config.warmup_steps, 0) / decay_steps, 1.0)
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    return config.min_lr_ratio + (1.0 - config.min_lr_ratio) * cosine


def set_learning_rates(optimizer: torch.optim.Optimizer, step: int, config: TrainConfig) -> float:
    """Set every group's lr for `step`; returns the factor. The schedule is a pure function of the
    step, so resuming needs only the step count."""
    factor = lr_factor(step, config)
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] * factor
    return factor
