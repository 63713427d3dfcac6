"""Optimizer groups (per-group lr, no decay on norms/biases/embeddings) and the warmup + cosine schedule."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from leadrrg.config import TrainConfig
from leadrrg.train.optim import build_optimizer, lr_factor, named_parameter_groups, set_learning_rates


class TwoGroupModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed_tokens = nn.Embedding(10, 4)
        self.proj = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)
        self.llm_lora_A = nn.Linear(4, 2, bias=False)
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)

    def trainable_parameter_groups(self):
        return {
            "new": [
                self.embed_tokens.weight,
                self.proj.weight,
                self.proj.bias,
                self.norm.weight,
                self.norm.bias,
            ],
            "pretrained": [self.llm_lora_A.weight],
        }


def test_groups_learning_rates_and_weight_decay():
    config = TrainConfig(lr=1e-3, lr_llm=2e-4, weight_decay=0.1)
    optimizer, names = build_optimizer(TwoGroupModel(), config)
    by_name = {g["name"]: g for g in optimizer.param_groups}
    assert set(by_name) == {"new", "new.no_decay", "pretrained"}
    assert by_name["new"]["lr"] == 1e-3 and by_name["pretrained"]["lr"] == 2e-4
    assert by_name["new"]["weight_decay"] == 0.1 and by_name["new.no_decay"]["weight_decay"] == 0.0
    assert len(by_name["new"]["params"]) == 1  # proj.weight; embedding, norm and biases are not decayed
    assert len(by_name["new.no_decay"]["params"]) == 4
    assert sorted(names) == sorted(
        ["embed_tokens.weight", "proj.weight", "proj.bias", "norm.weight", "norm.bias", "llm_lora_A.weight"]
    )
    assert "frozen.weight" not in names


def test_a_model_without_groups_trains_everything_at_lr():
    model = nn.Linear(3, 3)
    groups = named_parameter_groups(model)
    assert list(groups) == ["new"] and len(groups["new"]) == 2


def test_parameters_missing_from_the_groups_fail():
    model = TwoGroupModel()
    model.trainable_parameter_groups = lambda: {"new": [model.proj.weight]}
    with pytest.raises(ValueError, match="missing"):
        named_parameter_groups(model)


def test_schedule_warmup_then_cosine_to_min_ratio():
    config = TrainConfig(max_steps=110, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_factor(0, config) == pytest.approx(0.1)
    assert lr_factor(9, config) == pytest.approx(1.0)
    assert lr_factor(10, config) == pytest.approx(1.0)
    assert lr_factor(60, config) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_factor(110, config) == pytest.approx(0.1)
    assert lr_factor(500, config) == pytest.approx(0.1)
    values = [lr_factor(s, config) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    no_warmup = TrainConfig(max_steps=10, warmup_steps=0)
    assert lr_factor(0, no_warmup) == pytest.approx(1.0)


def test_set_learning_rates_scales_every_group():
    config = TrainConfig(lr=1e-3, lr_llm=2e-4, max_steps=20, warmup_steps=4)
    optimizer, _ = build_optimizer(TwoGroupModel(), config)
    factor = set_learning_rates(optimizer, 1, config)
    assert factor == pytest.approx(0.5)
    lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
    assert lrs["new"] == pytest.approx(5e-4) and lrs["pretrained"] == pytest.approx(1e-4)
    assert torch.is_tensor(optimizer.param_groups[0]["params"][0])


def test_accumulated_micro_batches_train_as_one_batch_of_unequal_reports(tmp_path):
    # The step's LM loss is the mean over all its report tokens: 2 micro-batches of 2 = 1 batch of 4, even when
    # the micro-batches hold reports of different lengths (a mean of per-batch means would weigh them otherwise).
    from leadrrg.collectives import DistContext
    from leadrrg.config import apply_overrides
    from leadrrg.model.losses import target_token_count
    from leadrrg.train.build import build_task, make_train_loader, set_loader_epoch
    from leadrrg.train.optim import build_optimizer
    from leadrrg.train.step import train_step
    from tests.test_train_helpers import make_synth, tiny_config

    data_root = make_synth(tmp_path / "data", train=8, val=2)
    grads = {}
    for accum, size in ((1, 4), (2, 2)):
        config = tiny_config(data_root, f"train.batch_size={size}", f"train.grad_accum_steps={accum}")
        config = apply_overrides(
            config, ["model.injection.fusion=none", "train.grad_clip=0", "data.max_report_tokens=96"]
        )
        task = build_task(config, DistContext())
        task.model.train()
        loader, sampler = make_train_loader(task, DistContext())
        set_loader_epoch(loader, sampler, 0, 0)
        batches = list(iter(loader))[: 4 // size]
        if accum == 2:
            counts = [int(target_token_count(b["target_ids"])) for b in batches]
            assert counts[0] != counts[1], counts  # the case that matters
        optimizer, _ = build_optimizer(task.model, config.train)
        optimizer.zero_grad = lambda set_to_none=True: None  # keep the gradients to compare
        train_step(task.model, optimizer, iter(batches), config.train, torch.device("cpu"))
        grads[accum] = {n: p.grad.clone() for n, p in task.model.named_parameters() if p.grad is not None}
    for name, grad in grads[1].items():
        assert torch.allclose(grads[2][name], grad, atol=1e-6, rtol=1e-4), name
