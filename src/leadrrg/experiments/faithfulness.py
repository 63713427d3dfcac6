"""The faithfulness benchmark: LEAD against its baselines and ablations, same data, budget and seeds.

Trains every variant (`experiments.variants`) for every seed (`OUT/<variant>/seed<k>`), generates on the
evaluation splits, evaluates, optionally diagnoses (`leadrrg diagnose`), and writes `OUT/results.json` (every
metric of every run) and `OUT/results.md` (mean ± sample standard deviation over seeds). Re-entrant: finished
runs are reused, interrupted ones resumed (`experiments.runner`).
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from leadrrg.config import apply_overrides, load_preset
from leadrrg.data.synth.generate import synthesize
from leadrrg.experiments.runner import diagnose_experiment, run_experiment
from leadrrg.experiments.variants import VARIANTS

# variant -> seed -> split -> metric -> value (plus "train": the training summary)
Results = dict[str, dict[str, dict[str, Any]]]

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

# (column header, metric key, split) of the diagnosis table.
DIAGNOSIS_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("expert macro AUROC (test)", "diag_expert_macro_auroc", "test"),
    ("expert macro AUROC (shift)", "diag_expert_macro_auroc", "shift_test"),
    ("report F1 vs truth, own experts (shift)", "diag_report_f1_vs_truth", "shift_test"),
    ("report F1 vs truth, oracle experts (shift)", "diag_oracle_report_f1_vs_truth", "shift_test"),
    ("flip: follows", "diag_flip_follow_rate", "shift_test"),
    ("flip: others unchanged", "diag_flip_others_unchanged_rate", "shift_test"),
)


def aggregate(values: list[float | None]) -> tuple[float | None, float | None]:
    """(mean, sample standard deviation) of the values present; (None, None) when there are none."""
    present = [v for v in values if v is not None]
    if not present:
        return None, None
    spread = statistics.stdev(present) if len(present) > 1 else 0.0
    return statistics.fmean(present), spread


def results_table(results: Results, split: str) -> str:
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


def diagnosis_table(results: Results) -> str:
    """Markdown table of the diagnosis measures (mean ± std over seeds) for the variants that have them."""
    header = "| variant | seeds | " + " | ".join(name for name, _, _ in DIAGNOSIS_COLUMNS) + " |"
    lines = [header, "|" + "---|" * (len(DIAGNOSIS_COLUMNS) + 2)]
    for variant, by_seed in results.items():
        cells, seeds = [], 0
        for _, key, split in DIAGNOSIS_COLUMNS:
            values = [metrics.get(split, {}).get(key) for metrics in by_seed.values()]
            seeds = max(seeds, sum(v is not None for v in values))
            mean, spread = aggregate(values)
            cells.append("n/a" if mean is None else f"{mean:.3f} ± {spread:.3f}")
        if seeds:
            lines.append(f"| {variant} | {seeds} | " + " | ".join(cells) + " |")
    return "\n".join(lines) if len(lines) > 2 else ""


def results_markdown(results: Results, splits: Sequence[str], command: str) -> str:
    """results.md: the command, one table per split, and the diagnosis table when there is one."""
    parts = [f"Command: `{command}`", ""]
    for split in splits:
        parts += [f"### {split}", "", results_table(results, split), ""]
    diagnosis = diagnosis_table(results)
    if diagnosis:
        parts += ["### diagnosis (leadrrg diagnose)", "", diagnosis, ""]
    return "\n".join(parts)


def synth_bench_data(data_dir: Path, train: int, evaluation: int, size: int) -> None:
    """SynthCXR for the benchmark in `data_dir`, unless it is there already."""
    if (data_dir / "manifest.jsonl").is_file():
        return
    counts = {"train": train, "val": evaluation, "test": evaluation, "shift_test": evaluation}
    synthesize(data_dir, counts, size=size, seed=1000, workers=2, config=None, progress=True)


def run_one(
    out: Path,
    variant: str,
    seed: int,
    overrides: Sequence[str],
    preset: str,
    splits: Sequence[str],
    meteor: bool,
    flip: int,
) -> dict[str, Any]:
    """Train (or reuse) one variant's run for one seed, generate, evaluate and diagnose: split -> metrics, plus
    "train" (the training summary)."""
    spec = VARIANTS[variant]
    trained_as = spec.trained_as or variant
    run_dir, results_dir = out / trained_as / f"seed{seed}", out / variant / f"seed{seed}"
    config = apply_overrides(
        load_preset(preset), [*overrides, *VARIANTS[trained_as].overrides, f"train.seed={seed}"]
    )
    result = run_experiment(
        config,
        run_dir,
        splits,
        meteor=meteor,
        quiet=True,
        results_dir=results_dir,
        decode_overrides=spec.decode,
    )
    by_split = {
        split: {k: v for k, v in metrics.items() if not isinstance(v, dict)}
        for split, metrics in result.metrics.items()
    }
    if flip:
        diagnosis = diagnose_experiment(
            run_dir,
            splits,
            result.train_summary["steps"],
            results_dir=results_dir,
            decode_overrides=spec.decode,
            deep_split="shift_test",
            flip=flip,
        )
        for split, measures in diagnosis.items():
            by_split[split].update(
                {f"diag_{k}": v for k, v in measures.items() if not isinstance(v, (dict, list))}
            )
            by_split[split]["diag_expert_auroc"] = measures.get("expert_auroc")
    return by_split | {"train": result.train_summary}


def run_faithfulness(
    out: Path,
    variants: Sequence[str],
    seeds: Sequence[int],
    splits: Sequence[str],
    overrides: Sequence[str],
    *,
    preset: str = "demo",
    meteor: bool = True,
    flip: int = 100,
) -> Results:
    """Every variant for every seed (`overrides` are the shared budget and data, applied to every variant),
    written to `out/results.json`; returns the results."""
    results: Results = {}
    started = time.perf_counter()
    for variant in variants:
        for seed in seeds:
            print(f"== {variant} seed {seed} ({time.perf_counter() - started:.0f} s elapsed)", flush=True)
            by_split = run_one(out, variant, seed, overrides, preset, splits, meteor, flip)
            results.setdefault(variant, {})[str(seed)] = by_split
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    return results
