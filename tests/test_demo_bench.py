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


# -- bench faithfulness over SynthCXR's random priors (the train step monkeypatched: plumbing only) ---------


def _fake_run_one(calls):
    from pathlib import Path

    def run_one(out, variant, seed, overrides, preset, splits, meteor, flip):
        root = [o for o in overrides if o.startswith("data.root=")][-1].split("=", 1)[1]
        prior = json.loads((Path(root) / "synth_config.json").read_text())["prior_seed"]
        assert Path(root) == out / "data"  # each prior reads its own data, beside its runs
        calls.append((out.name, variant, seed, prior))
        value = 0.1 * prior + 0.01 * seed + (0.5 if variant == "lead" else 0.0)
        metrics = {"gt_hallucination_rate": value, "bleu_4": value, "diag_flip_follow_rate": value}
        return {split: dict(metrics) for split in splits} | {"train": {"steps": 2}}

    return run_one


def test_bench_faithfulness_over_priors(tmp_path, monkeypatch, capsys):
    from leadrrg.data.synth.generate import SynthConfig
    from leadrrg.data.synth.priors import random_prior
    from leadrrg.experiments import faithfulness

    calls = []
    monkeypatch.setattr(faithfulness, "run_one", _fake_run_one(calls))
    out = tmp_path / "bench"
    args = ["bench", "faithfulness", "--out", str(out), "--train", "12", "--eval", "3", "--size", "48"]
    args += [
        "--prior-seeds",
        "2,5",
        "--seeds",
        "0,1",
        "--variants",
        "lvlm,lead",
        "--flip",
        "0",
        "--no-meteor",
    ]
    assert main(args) == 0
    assert sorted(calls) == sorted(
        (f"prior{p}", v, s, p) for p in (2, 5) for v in ("lvlm", "lead") for s in (0, 1)
    )
    for prior in (2, 5):
        held = json.loads((out / f"prior{prior}" / "data" / "synth_config.json").read_text())
        assert SynthConfig.from_dict(held) == random_prior(prior)
        assert set(json.loads((out / f"prior{prior}" / "results.json").read_text())) == {"lvlm", "lead"}
    results = json.loads((out / "results.json").read_text())
    assert results["prior_seeds"] == [2, 5] and set(results["priors"]) == {"2", "5"}
    assert set(results["priors"]["5"]["lead"]) == {"0", "1"}  # per-prior, per-seed results are kept
    summary = results["over_priors"]["lead"]["shift_test"]["gt_hallucination_rate"]
    assert summary["priors"] == 2 and summary["min"] == pytest.approx(0.705) and summary["max"] == 1.005
    assert summary["mean"] == pytest.approx(0.855) and summary["sd"] == pytest.approx(0.3 / 2**0.5)
    table = (out / "results.md").read_text()
    assert "## mean over 2 priors" in table and "## prior 2" in table and "## prior 5" in table
    assert "| variant | priors |" in table and "| lead | 2 | 0.855 ± 0.212 [0.705, 1.005]" in table
    assert "--prior-seeds 2,5" in table
    # A second run reuses each prior's data; data of another prior is refused, never mixed in.
    before = (out / "prior2" / "data" / "manifest.jsonl").stat().st_mtime_ns
    assert main(args) == 0
    assert (out / "prior2" / "data" / "manifest.jsonl").stat().st_mtime_ns == before
    (out / "prior5" / "data" / "synth_config.json").write_text(random_prior(6).to_json())
    capsys.readouterr()
    assert main(args) == 2
    assert "another prior than random prior 5" in capsys.readouterr().err


def test_bench_priors_counts_from_zero_and_refuses_bad_arguments(tmp_path, monkeypatch, capsys):
    from leadrrg.experiments import faithfulness

    calls = []
    monkeypatch.setattr(faithfulness, "run_one", _fake_run_one(calls))
    out = tmp_path / "bench"
    base = ["bench", "faithfulness", "--out", str(out), "--train", "12", "--eval", "3", "--size", "48"]
    base += ["--seeds", "0", "--variants", "lead", "--flip", "0", "--no-meteor"]
    assert main([*base, "--priors", "2"]) == 0
    assert sorted({(c[0], c[3]) for c in calls}) == [("prior0", 0), ("prior1", 1)]
    assert not (out / "data").exists()
    for bad, message in [
        (["--priors", "0"], "--priors is 0"),
        (["--priors", "3", "--prior-seeds", "1,2"], "expected the same number"),
        (["--prior-seeds", "1,x"], "comma-separated integers"),
        (["--prior-seeds", "1,1"], "distinct non-negative"),
        (["--priors", "2", "--data", str(tmp_path)], "--data and --format do not apply"),
    ]:
        assert main([*base, *bad]) == 2, bad
        assert message in capsys.readouterr().err
