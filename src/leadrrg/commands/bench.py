"""`leadrrg bench faithfulness`: LEAD against its baselines and ablations, same data, budget and seeds.

Trains every variant for every seed (`OUT/<variant>/seed<k>`), generates on the evaluation splits,
evaluates, and writes `OUT/results.json` (every metric of every run) and `OUT/results.md` (mean ± sample
standard deviation over seeds). Re-entrant: finished runs are reused, interrupted ones resumed.
Speed benchmarks are scripts: `benchmarks/bench_train.py`, `bench_decode.py`, `bench_synth.py`,
`bench_labeler.py`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

# variant -> config overrides (on top of the preset); the first is the baseline the others are read against.
VARIANTS: dict[str, tuple[str, ...]] = {
    "lvlm": ("model.injection.fusion=none",),
    "input": ("model.injection.fusion=input",),
    "lead": (),
    "lead_shared_proj": ("model.injection.projection=shared",),
    "lead_static_gate": ("model.injection.gate=static",),
    "lead_open_gate": ("model.injection.gate=open",),
    "lead_no_confidence": ("model.injection.confidence=none",),
}

# (column header, metric key) of the results table; `gt_` metrics compare with the image's ground truth.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("BLEU-4", "bleu_4"),
    ("METEOR", "meteor"),
    ("ROUGE-L", "rouge_l"),
    ("CIDEr", "cider"),
    ("CE14 micro-F1 (ref)", "ce14_micro_f1"),
    ("CE14 micro-F1 (truth)", "gt_ce14_micro_f1"),
    ("CE5 macro-F1 (truth)", "gt_ce5_macro_f1"),
    ("halluc. rate (truth)", "gt_hallucination_rate"),
    ("reports w/ halluc. (truth)", "gt_reports_with_hallucination"),
    ("omission (truth)", "gt_omission_rate"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bench", metavar="BENCHMARK", required=True)
    faith = sub.add_parser("faithfulness", help="LEAD vs plain LVLM, input fusion and ablations over seeds")
    faith.add_argument("--out", required=True, help="benchmark folder (runs, results.json, results.md)")
    faith.add_argument("--data", help="existing data root (default: synthesise SynthCXR into OUT/data)")
    faith.add_argument("--format", default=None, help="data format of --data (default: the preset's, synth)")
    faith.add_argument("--preset", default="demo", help="preset every variant starts from")
    faith.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds")
    faith.add_argument(
        "--variants", default=",".join(VARIANTS), help=f"comma-separated subset of: {', '.join(VARIANTS)}"
    )
    faith.add_argument("--splits", default="test,shift_test", help="evaluation splits present in the data")
    faith.add_argument("--train", type=int, default=2000, help="SynthCXR training studies when synthesising")
    faith.add_argument("--eval", type=int, default=200, help="SynthCXR studies per evaluation split")
    faith.add_argument("--size", type=int, default=128, help="SynthCXR image side when synthesising")
    faith.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="typed dotted override applied to every variant (the shared budget), repeatable",
    )
    faith.add_argument("--no-meteor", action="store_true", help="skip METEOR (it starts a Java VM per run)")


def aggregate(values: list[float | None]) -> tuple[float | None, float | None]:
    present = [v for v in values if v is not None]
    if not present:
        return None, None
    spread = statistics.stdev(present) if len(present) > 1 else 0.0
    return statistics.fmean(present), spread


def results_table(results: dict[str, dict[str, dict[str, dict[str, Any]]]], split: str) -> str:
    """Markdown table for one split: rows are variants, cells mean ± std over seeds."""
    header = "| variant | seeds | " + " | ".join(name for name, _ in COLUMNS) + " |"
    lines = [header, "|" + "---|" * (len(COLUMNS) + 2)]
    for variant, by_seed in results.items():
        runs = [metrics[split] for metrics in by_seed.values() if split in metrics]
        if not runs:
            continue
        cells = []
        for _, key in COLUMNS:
            mean, spread = aggregate([run.get(key) for run in runs])
            cells.append("n/a" if mean is None else f"{mean:.3f} ± {spread:.3f}")
        lines.append(f"| {variant} | {len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from leadrrg.config import apply_overrides, load_preset
    from leadrrg.errors import LeadrrgError
    from leadrrg.experiment import run_experiment

    out = Path(args.out)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise LeadrrgError(
            f"unknown variant(s) {', '.join(unknown)}; expected some of: {', '.join(VARIANTS)}"
        )
    splits = [s.strip() for s in args.splits.split(",") if s.strip()]

    data_dir = Path(args.data) if args.data else out / "data"
    if not args.data and not (data_dir / "manifest.jsonl").is_file():
        from leadrrg.data.synth import synthesize

        counts = {"train": args.train, "val": args.eval, "test": args.eval, "shift_test": args.eval}
        synthesize(data_dir, counts, size=args.size, seed=1000, workers=2, config=None, progress=True)

    base = [f"data.root={data_dir}"] + ([f"data.format={args.format}"] if args.format else [])
    results: dict[str, dict[str, dict[str, Any]]] = {}
    started = time.perf_counter()
    for variant in variants:
        for seed in seeds:
            config = apply_overrides(
                load_preset(args.preset),
                base + list(args.overrides) + list(VARIANTS[variant]) + [f"train.seed={seed}"],
            )
            print(f"== {variant} seed {seed} ({time.perf_counter() - started:.0f} s elapsed)", flush=True)
            result = run_experiment(
                config, out / variant / f"seed{seed}", splits, meteor=not args.no_meteor, quiet=True
            )
            results.setdefault(variant, {})[str(seed)] = {
                split: {k: v for k, v in metrics.items() if not isinstance(v, dict)}
                for split, metrics in result.metrics.items()
            } | {"train": result.train_summary}

    (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    command = (
        "leadrrg bench faithfulness "
        + " ".join(
            f"--{k.replace('_', '-')} {v}"
            for k, v in vars(args).items()
            if k in ("out", "data", "preset", "seeds", "variants", "splits") and v
        )
        + "".join(f" --set {o}" for o in args.overrides)
    )
    parts = [f"Command: `{command}`", ""]
    for split in splits:
        parts += [f"### {split}", "", results_table(results, split), ""]
    (out / "results.md").write_text("\n".join(parts))
    print("\n".join(parts))
    print(f"benchmark finished in {time.perf_counter() - started:.0f} s; results in {out / 'results.md'}")
    return 0
