"""benchmarks/bench_gpu.py without CUDA: one clear sentence and exit status 2, nothing measured."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_gpu.py"


def test_bench_gpu_exits_clearly_without_cuda(monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(sys, "argv", ["bench_gpu.py"])
    assert module.main() == 2
    captured = capsys.readouterr()
    assert "needs a CUDA GPU" in captured.err and captured.out == ""
