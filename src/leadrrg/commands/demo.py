"""`leadrrg demo --out DIR`: the main job on the embedded default, end to end on a laptop CPU.

Synthesises SynthCXR (`DIR/data`), trains LEAD with the `demo` preset (`DIR/lead`) and the plain LVLM on the same
data and budget (`DIR/lvlm`), generates reports for the test and shift_test splits, evaluates them (each run's
`metrics.json` holds both splits), and prints the two models side by side, a few reports, and one flip example:
the same image with one expert forced off and on. Everything lands under DIR; running it again reuses what is
complete and still current and resumes the rest; data synthesised with other sizes is refused, not reused.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from leadrrg.commands import add_overrides_argument
from leadrrg.config import apply_overrides, load_preset
from leadrrg.constants import OBSERVATIONS

if TYPE_CHECKING:
    from leadrrg.experiments.demo import FlipExample

SPLITS = ("test", "shift_test")
MODELS = (
    ("lvlm", "plain LVLM", ("model.injection.fusion=none",)),
    ("lead", "LEAD", ()),
)

# (label, metric key, format) rows of the summary table.
SUMMARY_ROWS: tuple[tuple[str, str, str], ...] = (
    ("hallucination rate (vs image truth)", "gt_hallucination_rate", ".3f"),
    ("reports with a hallucination", "gt_reports_with_hallucination", ".3f"),
    ("omission rate (vs image truth)", "gt_omission_rate", ".3f"),
    ("silent omission (not even hedged)", "gt_silent_omission_rate", ".3f"),
    ("laterality accuracy (vs image truth)", "gt_laterality_accuracy", ".3f"),
    ("severity accuracy (vs image truth)", "gt_severity_accuracy", ".3f"),
    ("CE-14 micro F1 (vs image truth)", "gt_ce14_micro_f1", ".3f"),
    ("CE-14 micro F1 (vs reference)", "ce14_micro_f1", ".3f"),
    ("CE-5 macro F1 (vs reference)", "ce5_macro_f1", ".3f"),
    ("BLEU-4", "bleu_4", ".3f"),
    ("METEOR", "meteor", ".3f"),
    ("ROUGE-L", "rouge_l", ".3f"),
    ("CIDEr", "cider", ".3f"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo", help="output folder (data, run, predictions, metrics)")
    parser.add_argument("--train", type=int, default=2000, help="SynthCXR training studies")
    parser.add_argument("--eval", type=int, default=200, help="studies in each of val, test and shift_test")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0, help="seed for data and training")
    parser.add_argument("--workers", type=int, default=2, help="processes for synthesis")
    add_overrides_argument(
        parser, "typed dotted override of the demo preset, repeatable (e.g. --set train.max_steps=50)"
    )
    parser.add_argument("--examples", type=int, default=3, help="example reports to print per split")
    parser.add_argument("--no-meteor", action="store_true", help="skip METEOR (it starts a Java VM)")


def format_summary(metrics: dict[str, dict[str, dict[str, Any]]]) -> str:
    """metrics: model label -> split -> metrics; one column per (split, model)."""
    columns = [(split, label) for split in SPLITS for label in metrics if split in metrics[label]]
    lines = [f"{'':<38}" + "".join(f"{split:>14}" for split, _ in columns)]
    lines.append(f"{'metric':<38}" + "".join(f"{label:>14}" for _, label in columns))
    for name, key, fmt in SUMMARY_ROWS:
        cells = []
        for split, label in columns:
            value = metrics[label][split].get(key)
            cells.append(f"{'n/a' if value is None else format(value, fmt):>14}")
        lines.append(f"{name:<38}" + "".join(cells))
    return "\n".join(lines)


def format_examples(by_model: dict[str, list[dict[str, Any]]], count: int) -> str:
    labels = list(by_model)
    blocks = []
    for index, record in enumerate(by_model[labels[0]][:count]):
        truth = [name for name, value in zip(OBSERVATIONS, record.get("labels") or []) if value == 1]
        lines = [
            f"  [{record['id']}] image truth: {', '.join(truth) or 'n/a'}",
            f"    reference: {record['reference']}",
        ]
        lines += [f"    {label + ':':<11}{by_model[label][index]['generated']}" for label in labels]
        blocks.append("\n".join(lines))
    return "\n".join(blocks)


def format_flip(example: FlipExample | None) -> str:
    if example is None:
        return "  (no shift_test study with a finding its experts see: no flip example)"
    study, finding = example.study, example.finding
    truth = (study.attributes or {}).get(finding) or {}
    stated = ", ".join(f"{truth[key]}" for key in ("side", "severity", "zone") if truth.get(key))
    where = f" (the image has it: {stated})" if stated else ""
    return (
        f"  [{study.id}] {', '.join(study.images)}; its {finding} expert says p = {example.own_p:.2f}{where}\n"
        f"    {finding} forced off (p = 0): {example.forced_off}\n"
        f"    {finding} forced on  (p = 1): {example.forced_on}"
    )


def run(args: argparse.Namespace) -> int:
    # Imported here: the demo pulls in training and inference, which `leadrrg --help` should not load.
    from leadrrg.experiments.demo import check_demo_data, flip_example, synthesize_demo_data
    from leadrrg.experiments.runner import run_experiment

    started = time.perf_counter()
    out = Path(args.out)
    data_dir = out / "data"
    overrides = [f"data.root={data_dir}", f"train.seed={args.seed}", f"model.vision.image_size={args.size}"]
    configs = {
        name: apply_overrides(load_preset("demo"), overrides + list(args.overrides) + list(switches))
        for name, _, switches in MODELS
    }  # a bad --set fails here, before anything is synthesised
    counts = {"train": args.train, "val": args.eval, "test": args.eval, "shift_test": args.eval}
    if (data_dir / "manifest.jsonl").is_file():
        check_demo_data(data_dir, counts, args.size, args.seed)
        print(f"[1/4] SynthCXR: reusing {data_dir}")
    else:
        print(f"[1/4] SynthCXR: synthesising {args.train} training studies at {args.size} px into {data_dir}")
        synthesize_demo_data(data_dir, counts, args.size, args.seed, args.workers)
    synth_s = time.perf_counter() - started

    results = {}
    for step, (name, label, _) in enumerate(MODELS, start=2):
        config = configs[name]
        print(f"[{step}/4] training {label} ({config.train.max_steps} steps, preset demo) into {out / name}")
        results[label] = run_experiment(config, out / name, SPLITS, meteor=not args.no_meteor)

    print(
        "\nresults on the same data and budget (metrics in",
        out / "lead" / "metrics.json, lvlm/metrics.json):",
    )
    print(format_summary({label: result.metrics for label, result in results.items()}))
    for split in SPLITS:
        print(f"\nexamples from {split}:")
        print(
            format_examples(
                {label: result.predictions[split] for label, result in results.items()}, args.examples
            )
        )
    print("\nflip example (LEAD follows its experts: the same image, one expert forced off and on):")
    print(format_flip(flip_example(out / "lead", "shift_test")))
    total = time.perf_counter() - started
    stages = ", ".join(
        f"{label} {name} {seconds:.0f} s"
        for label, r in results.items()
        for name, seconds in r.seconds.items()
    )
    print(
        f"\ndemo finished in {total:.0f} s (synthesis {synth_s:.0f} s, {stages}); everything is under {out}"
    )
    return 0
