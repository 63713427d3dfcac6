"""`leadrrg demo --out DIR`: the main job on the embedded default, end to end on a laptop CPU.

Synthesises SynthCXR (`DIR/data`), trains LEAD with the `demo` preset (`DIR/run`), generates reports for
the test and shift_test splits, evaluates them, and prints the metrics and a few reports beside their
references. Everything lands under DIR; running it again reuses what is complete and resumes the rest.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

SPLITS = ("test", "shift_test")

# (label, metric key, format) rows of the summary table.
SUMMARY_ROWS: tuple[tuple[str, str, str], ...] = (
    ("BLEU-4", "bleu_4", ".3f"),
    ("METEOR", "meteor", ".3f"),
    ("ROUGE-L", "rouge_l", ".3f"),
    ("CIDEr", "cider", ".3f"),
    ("CE-14 micro F1 (vs reference)", "ce14_micro_f1", ".3f"),
    ("CE-5 macro F1 (vs reference)", "ce5_macro_f1", ".3f"),
    ("CE-14 micro F1 (vs image truth)", "gt_ce14_micro_f1", ".3f"),
    ("hallucination rate (vs image truth)", "gt_hallucination_rate", ".3f"),
    ("reports with a hallucination", "gt_reports_with_hallucination", ".3f"),
    ("omission rate (vs image truth)", "gt_omission_rate", ".3f"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo", help="output folder (data, run, predictions, metrics)")
    parser.add_argument("--train", type=int, default=2000, help="SynthCXR training studies")
    parser.add_argument("--eval", type=int, default=200, help="studies in each of val, test and shift_test")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0, help="seed for data and training")
    parser.add_argument("--workers", type=int, default=2, help="processes for synthesis")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="typed dotted override of the demo preset, repeatable (e.g. --set train.max_steps=50)",
    )
    parser.add_argument("--examples", type=int, default=3, help="example reports to print per split")
    parser.add_argument("--no-meteor", action="store_true", help="skip METEOR (it starts a Java VM)")


def format_summary(metrics: dict[str, dict[str, Any]]) -> str:
    splits = list(metrics)
    lines = [f"{'metric':<38}" + "".join(f"{s:>12}" for s in splits)]
    for label, key, fmt in SUMMARY_ROWS:
        cells = []
        for split in splits:
            value = metrics[split].get(key)
            cells.append(f"{'n/a' if value is None else format(value, fmt):>12}")
        lines.append(f"{label:<38}" + "".join(cells))
    return "\n".join(lines)


def format_examples(records: list[dict[str, Any]], count: int) -> str:
    from leadrrg.constants import OBSERVATIONS

    blocks = []
    for record in records[:count]:
        truth = [name for name, value in zip(OBSERVATIONS, record.get("labels") or []) if value == 1]
        blocks.append(
            f"  [{record['id']}] image truth: {', '.join(truth) or 'n/a'}\n"
            f"    reference: {record['reference']}\n"
            f"    generated: {record['generated']}"
        )
    return "\n".join(blocks)


def run(args: argparse.Namespace) -> int:
    from leadrrg.config import apply_overrides, load_preset
    from leadrrg.data.synth import synthesize
    from leadrrg.experiment import run_experiment

    started = time.perf_counter()
    out = Path(args.out)
    data_dir = out / "data"
    if (data_dir / "manifest.jsonl").is_file():
        print(f"[1/3] SynthCXR: reusing {data_dir}")
    else:
        print(f"[1/3] SynthCXR: synthesising {args.train} training studies at {args.size} px into {data_dir}")
        counts = {"train": args.train, "val": args.eval, "test": args.eval, "shift_test": args.eval}
        synthesize(
            data_dir, counts, size=args.size, seed=args.seed, workers=args.workers, config=None, progress=True
        )
    synth_s = time.perf_counter() - started

    config = load_preset("demo")
    overrides = [f"data.root={data_dir}", f"train.seed={args.seed}", f"model.vision.image_size={args.size}"]
    config = apply_overrides(config, overrides + list(args.overrides))
    print(f"[2/3] training LEAD ({config.train.max_steps} steps, preset demo) into {out / 'run'}")
    result = run_experiment(config, out / "run", SPLITS, meteor=not args.no_meteor)

    print("[3/3] results (metrics in", result.run_dir / "metrics.json", ")")
    print(format_summary(result.metrics))
    for split in SPLITS:
        print(f"\nexamples from {split}:")
        print(format_examples(result.predictions[split], args.examples))
    total = time.perf_counter() - started
    stages = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in result.seconds.items())
    print(
        f"\ndemo finished in {total:.0f} s (synthesis {synth_s:.0f} s, {stages}); everything is under {out}"
    )
    return 0
