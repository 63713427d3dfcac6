"""The demo and the benchmarks generate where the run trained (train.device), not on the CPU."""

from __future__ import annotations

import torch

from leadrrg.config import RunConfig, apply_overrides
from leadrrg.runs.files import training_device


def test_training_device_follows_train_device(monkeypatch):
    auto = RunConfig()
    assert auto.train.device == "auto"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert training_device(auto) == torch.device("cuda")
    assert training_device(apply_overrides(RunConfig(), ["train.device=cuda:1"])) == torch.device("cuda:1")
    assert training_device(apply_overrides(RunConfig(), ["train.device=cpu"])) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert training_device(auto) == torch.device("cpu")
    assert training_device(apply_overrides(RunConfig(), ["train.device=cuda"])) == torch.device("cpu")
