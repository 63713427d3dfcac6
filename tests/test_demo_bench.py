"""End-to-end contracts of `leadrrg demo` and `leadrrg bench faithfulness` on a tiny budget."""

import json

import pytest

from leadrrg.cli import main
from leadrrg.commands.bench import aggregate, results_table

TINY = [
    "--set",
    "train.max_steps=2",
    "--set",
    "train.batch_size=4",
    "--set",
    "train.eval_every=2",
    "--set",
    "train.save_every=2",
    "--set",
    "decode.max_new_tokens=8",
    "--no-meteor",
]


def test_demo_end_to_end_and_rerun_reuses(tmp_path, capsys):
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--train", "24", "--eval", "6", "--size", "64", "--workers", "1"]
    assert main(args + TINY) == 0
    printed = capsys.readouterr().out
    assert "hallucination rate (vs image truth)" in printed and "examples from shift_test" in printed
    metrics = json.loads((out / "run" / "metrics.json").read_text())
    assert set(metrics) == {"test", "shift_test"}
    assert metrics["shift_test"]["meta"]["num_studies"] == 6
    lines = (out / "run" / "preds_test.jsonl").read_text().splitlines()
    assert len(lines) == 6 and {"id", "reference", "generated", "labels"} <= set(json.loads(lines[0]))
    # A second run reuses the data, the finished run and its predictions.
    assert main(args + TINY) == 0
    assert "SynthCXR: reusing" in capsys.readouterr().out


def test_bench_faithfulness_tiny(tmp_path):
    out = tmp_path / "bench"
    args = ["bench", "faithfulness", "--out", str(out), "--train", "24", "--eval", "6", "--size", "64"]
    args += ["--seeds", "0,1", "--variants", "lvlm,lead"] + TINY
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results) == {"lvlm", "lead"} and set(results["lead"]) == {"0", "1"}
    table = (out / "results.md").read_text()
    assert "| lvlm | 2 |" in table and "| lead | 2 |" in table and "### shift_test" in table


def test_bench_rejects_unknown_variant(tmp_path, capsys):
    assert main(["bench", "faithfulness", "--out", str(tmp_path), "--variants", "lead,deep"]) == 2
    assert "unknown variant(s) deep" in capsys.readouterr().err


def test_aggregate_and_table():
    assert aggregate([1.0, 3.0]) == (2.0, pytest.approx(2**0.5))
    assert aggregate([None, None]) == (None, None)
    results = {"a": {"0": {"test": {"bleu_4": 0.5}}, "1": {"test": {"bleu_4": 0.7}}}}
    assert "| a | 2 | 0.600 ± 0.141 |" in results_table(results, "test")
