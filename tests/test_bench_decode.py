"""benchmarks/bench_decode.py on the demo model, a few tokens: our greedy tokens equal HF generate()'s from the
same evidence, and the bandwidth lines (bound, the BLAS kernel's own read rate, the float32 bound for bf16) print."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_decode.py"


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_bench_decode_prints_like_for_like_rows_and_the_bandwidth_lines(monkeypatch, capsys, dtype):
    spec = importlib.util.spec_from_file_location("bench_decode", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    argv = ["bench_decode.py", "--batch-sizes", "1", "--repeats", "1", "--new-tokens", "4", "--threads", "1"]
    monkeypatch.setattr(sys, "argv", [*argv, "--bandwidth-mb", "16", "--dtype", dtype])
    module.main()
    out = capsys.readouterr().out
    assert "our greedy tokens equal HF generate()'s: none True, layerwise True" in out
    assert "% of it" in out and "F.linear alone reads these weights at" in out
    assert ("against the float32 weights" in out) == (dtype != "float32")
