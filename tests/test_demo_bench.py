"""End-to-end contracts of `leadrrg demo` and `leadrrg bench faithfulness` on a tiny budget."""

import json

import pytest

from leadrrg.cli import main
from leadrrg.experiments.faithfulness import aggregate, results_table

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
    "--set",
    "model.grounding.expert_warmup_steps=2",  # stage 1 runs (the preset's 600 steps would take minutes)
    "--no-meteor",
]


def test_demo_end_to_end_and_rerun_reuses(tmp_path, capsys):
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--train", "24", "--eval", "6", "--size", "64", "--workers", "1"]
    assert main(args + TINY) == 0
    printed = capsys.readouterr().out
    assert "hallucination rate (vs image truth)" in printed and "examples from shift_test" in printed
    assert "plain LVLM" in printed and "LEAD" in printed and "flip example" in printed
    for name in ("lead", "lvlm"):
        metrics = json.loads((out / name / "metrics.json").read_text())
        assert {"test", "shift_test"} <= set(metrics)
        assert metrics["shift_test"]["meta"]["num_studies"] == 6
    lines = (out / "lead" / "preds_test.jsonl").read_text().splitlines()
    assert len(lines) == 6 and {"id", "reference", "generated", "labels"} <= set(json.loads(lines[0]))
    # A second run reuses the data, the finished runs and their predictions.
    before = (out / "lead" / "preds_test.jsonl").stat().st_mtime_ns
    assert main(args + TINY) == 0
    captured = capsys.readouterr()
    assert "SynthCXR: reusing" in captured.out
    assert "test: reusing" in captured.err and "same weights, data and decode settings" in captured.err
    assert (out / "lead" / "preds_test.jsonl").stat().st_mtime_ns == before
    # More steps: the runs train on and the predictions are made again, never reused stale.
    longer = [a if a != "train.max_steps=2" else "train.max_steps=3" for a in TINY]
    assert main(args + longer) == 0
    capsys.readouterr()
    assert (out / "lead" / "preds_test.jsonl").stat().st_mtime_ns != before
    # Data made with other sizes is refused, and a bad override fails before anything is synthesised.
    assert main(["demo", "--out", str(out), "--train", "30", "--eval", "6", "--size", "64"] + TINY) == 2
    assert "holds SynthCXR data made with" in capsys.readouterr().err
    assert main(["demo", "--out", str(tmp_path / "new"), "--set", "train.max_steps=x"]) == 2
    assert not (tmp_path / "new").exists()


def test_bench_faithfulness_tiny(tmp_path):
    out = tmp_path / "bench"
    args = ["bench", "faithfulness", "--out", str(out), "--train", "24", "--eval", "6", "--size", "64"]
    args += ["--seeds", "0,1", "--variants", "lvlm,lead", "--flip", "0"] + TINY
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results) == {"lvlm", "lead"} and set(results["lead"]) == {"0", "1"}
    table = (out / "results.md").read_text()
    assert "| lvlm | 2 |" in table and "| lead | 2 |" in table and "### shift_test" in table


def test_bench_rejects_unknown_variant(tmp_path, capsys):
    assert main(["bench", "faithfulness", "--out", str(tmp_path), "--variants", "lead,deep"]) == 2
    assert "unknown variant(s) deep" in capsys.readouterr().err


def test_bench_decode_time_variant_reuses_the_trained_run(tmp_path):
    out = tmp_path / "bench"
    args = ["bench", "faithfulness", "--out", str(out), "--train", "24", "--eval", "6", "--size", "64"]
    args += ["--seeds", "0", "--variants", "lvlm_cls,lvlm_cls_bias", "--flip", "3"] + TINY
    assert main(args) == 0
    assert not (out / "lvlm_cls_bias" / "seed0" / "model.safetensors").exists()  # decodes lvlm_cls's weights
    assert (out / "lvlm_cls_bias" / "seed0" / "preds_shift_test.jsonl").is_file()
    results = json.loads((out / "results.json").read_text())
    shift = results["lvlm_cls"]["0"]["shift_test"]
    assert 0.0 <= shift["diag_flip_follow_rate"] <= 1.0 and "diag_expert_macro_auroc" in shift
    assert "### diagnosis" in (out / "results.md").read_text()


def test_aggregate_and_table():
    assert aggregate([1.0, 3.0]) == (2.0, pytest.approx(2**0.5))
    assert aggregate([None, None]) == (None, None)
    results = {"a": {"0": {"test": {"bleu_4": 0.5}}, "1": {"test": {"bleu_4": 0.7}}}}
    assert "| a | 2 | 0.600 ± 0.141 |" in results_table(results, "test")


def test_every_bench_variant_is_a_valid_config_of_the_demo_preset():
    from leadrrg.config import apply_overrides, load_preset
    from leadrrg.experiments.variants import VARIANTS

    for name, variant in VARIANTS.items():
        trained = VARIANTS[variant.trained_as].overrides if variant.trained_as else variant.overrides
        config = apply_overrides(load_preset("demo"), [*trained, *variant.decode])  # raises on a bad key
        assert variant.trained_as is None or variant.trained_as in VARIANTS, name
        assert config.train.max_steps > 0
