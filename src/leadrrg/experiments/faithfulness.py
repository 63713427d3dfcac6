"""The faithfulness benchmark: LEAD against its baselines and ablations, same data, budget and seeds.

Trains every variant (`experiments.variants`) for every seed (`OUT/<variant>/seed<k>`), generates on the
evaluation splits, evaluates, optionally diagnoses (`leadrrg diagnose`), and writes `OUT/results.json` (every
metric of every run) and `OUT/results.md` (mean ± sample standard deviation over seeds). Re-entrant: finished
runs are reused, interrupted ones resumed (`experiments.runner`). `run_faithfulness_priors` does the same on
each of SynthCXR's random priors (`OUT/prior<S>/`, own data) and adds the mean over priors (± sd, [min, max]).
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from leadrrg.config import apply_overrides, load_preset
from leadrrg.data.synth.generate import SynthConfig, synthesize
from leadrrg.data.synth.priors import random_prior
from leadrrg.errors import LeadrrgError
from leadrrg.experiments.runner import diagnose_experiment, run_experiment
from leadrrg.experiments.variants import VARIANTS

# variant -> seed -> split -> metric -> value (plus "train": the training summary)
Results = dict[str, dict[str, dict[str, Any]]]

# Prior S's benchmark data is drawn with data seed PRIOR_DATA_SEED + S (the development prior's with 1000).
PRIOR_DATA_SEED = 2000

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
    ("silent omission (truth)", "gt_silent_omission_rate"),
    ("hedged share", "gt_hedged_share"),
    ("laterality acc. (truth)", "gt_laterality_accuracy"),
    ("severity acc. (truth)", "gt_severity_accuracy"),
)

# (column header, metric key, split) of the diagnosis table.
DIAGNOSIS_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("expert macro AUROC (test)", "diag_expert_macro_auroc", "test"),
    ("expert macro AUROC (shift)", "diag_expert_macro_auroc", "shift_test"),
    ("report F1 vs truth, own experts (shift)", "diag_report_f1_vs_truth", "shift_test"),
    ("report F1 vs truth, oracle experts (shift)", "diag_oracle_report_f1_vs_truth", "shift_test"),
    ("flip: follows", "diag_flip_follow_rate", "shift_test"),
    ("flip: others unchanged", "diag_flip_others_unchanged_rate", "shift_test"),
    ("side flip: follows", "diag_side_flip_follow_rate", "shift_test"),
    ("side flip: others unchanged", "diag_side_flip_others_unchanged_rate", "shift_test"),
)


def aggregate(values: list[float | None]) -> tuple[float | None, float | None]:
    """(mean, sample standard deviation) of the values present; (None, None) when there are none."""
    present = [v for v in values if v is not None]
    if not present:
        return None, None
    spread = statistics.stdev(present) if len(present) > 1 else 0.0
    return statistics.fmean(present), spread


def _cell(values: list[float | None], ranges: bool) -> str:
    mean, spread = aggregate(values)
    if mean is None:
        return "n/a"
    present = [v for v in values if v is not None]
    return f"{mean:.3f} ± {spread:.3f}" + (f" [{min(present):.3f}, {max(present):.3f}]" if ranges else "")


def results_table(results: Results, split: str, unit: str = "seeds", ranges: bool = False) -> str:
    """Markdown table for one split: rows are variants, cells mean ± std over seeds (over priors when
    `results` holds per-prior means, `unit="priors"`; `ranges` adds [min, max])."""
    header = f"| variant | {unit} | " + " | ".join(name for name, _ in COLUMNS) + " |"
    lines = [header, "|" + "---|" * (len(COLUMNS) + 2)]
    for variant, by_seed in results.items():
        runs = [metrics[split] for metrics in by_seed.values() if split in metrics]
        if not runs:
            continue
        cells = [_cell([run.get(key) for run in runs], ranges) for _, key in COLUMNS]
        lines.append(f"| {variant} | {len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def diagnosis_table(results: Results, unit: str = "seeds", ranges: bool = False) -> str:
    """Markdown table of the diagnosis measures (mean ± std over seeds) for the variants that have them."""
    header = f"| variant | {unit} | " + " | ".join(name for name, _, _ in DIAGNOSIS_COLUMNS) + " |"
    lines = [header, "|" + "---|" * (len(DIAGNOSIS_COLUMNS) + 2)]
    for variant, by_seed in results.items():
        cells, seeds = [], 0
        for _, key, split in DIAGNOSIS_COLUMNS:
            values = [metrics.get(split, {}).get(key) for metrics in by_seed.values()]
            seeds = max(seeds, sum(v is not None for v in values))
            cells.append(_cell(values, ranges))
        if seeds:
            lines.append(f"| {variant} | {seeds} | " + " | ".join(cells) + " |")
    return "\n".join(lines) if len(lines) > 2 else ""


def _tables(results: Results, splits: Sequence[str], unit: str = "seeds", ranges: bool = False) -> list[str]:
    parts = []
    for split in splits:
        parts += [f"### {split}", "", results_table(results, split, unit, ranges), ""]
    diagnosis = diagnosis_table(results, unit, ranges)
    if diagnosis:
        parts += ["### diagnosis (leadrrg diagnose)", "", diagnosis, ""]
    return parts


def results_markdown(results: Results, splits: Sequence[str], command: str) -> str:
    """results.md: the command, one table per split, and the diagnosis table when there is one."""
    return "\n".join([f"Command: `{command}`", "", *_tables(results, splits)])


def synth_bench_data(
    data_dir: Path, train: int, evaluation: int, size: int, prior_seed: int | None = None
) -> None:
    """SynthCXR for the benchmark in `data_dir`, unless it is there already: the development prior (data seed
    1000) or, with `prior_seed`, `random_prior(prior_seed)` (data seed PRIOR_DATA_SEED + prior_seed)."""
    config = None if prior_seed is None else random_prior(prior_seed)
    if (data_dir / "manifest.jsonl").is_file():
        if config is not None:
            _check_prior(data_dir, config)
        return
    counts = {"train": train, "val": evaluation, "test": evaluation, "shift_test": evaluation}
    seed = 1000 if prior_seed is None else PRIOR_DATA_SEED + prior_seed
    synthesize(data_dir, counts, size=size, seed=seed, workers=2, config=config, progress=True)


def _check_prior(data_dir: Path, config: SynthConfig) -> None:
    path = data_dir / "synth_config.json"
    held = SynthConfig.from_dict(json.loads(path.read_text())) if path.is_file() else None
    if held != config:
        raise LeadrrgError(
            f"{data_dir} holds SynthCXR data of another prior than random prior {config.prior_seed} "
            f"({path.name} differs or is missing); remove it or choose another --out"
        )


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


# --------------------------------------------------------------------------------------------------
# Over a family of priors


def prior_means(by_prior: dict[str, Results]) -> Results:
    """variant -> prior -> split -> metric -> mean over that prior's seeds (numeric metrics only)."""
    means: Results = {}
    for prior, results in by_prior.items():
        for variant, by_seed in results.items():
            by_split: dict[str, dict[str, list[float]]] = {}
            for metrics in by_seed.values():
                for split, values in metrics.items():
                    if split == "train" or not isinstance(values, dict):
                        continue
                    for key, value in values.items():
                        if isinstance(value, (int, float)) and not isinstance(value, bool):
                            by_split.setdefault(split, {}).setdefault(key, []).append(value)
            means.setdefault(variant, {})[prior] = {
                split: {key: statistics.fmean(v) for key, v in keys.items()}
                for split, keys in by_split.items()
            }
    return means


def over_priors(by_prior: dict[str, Results]) -> dict[str, Any]:
    """variant -> split -> metric -> {mean, sd, min, max, priors} of the per-prior means (sd: sample sd)."""
    summary: dict[str, Any] = {}
    for variant, per_prior in prior_means(by_prior).items():
        for split in sorted({split for metrics in per_prior.values() for split in metrics}):
            keys = sorted({key for metrics in per_prior.values() for key in metrics.get(split, {})})
            for key in keys:
                values = [m[split][key] for m in per_prior.values() if key in m.get(split, {})]
                mean, spread = aggregate(values)
                summary.setdefault(variant, {}).setdefault(split, {})[key] = {
                    "mean": mean,
                    "sd": spread,
                    "min": min(values),
                    "max": max(values),
                    "priors": len(values),
                }
    return summary


def run_faithfulness_priors(
    out: Path,
    prior_seeds: Sequence[int],
    data: tuple[int, int, int],
    variants: Sequence[str],
    seeds: Sequence[int],
    splits: Sequence[str],
    overrides: Sequence[str],
    **options: Any,
) -> dict[str, Any]:
    """`run_faithfulness` on each of SynthCXR's random priors `prior_seeds`, each with its own data
    (`data` = (train, evaluation, size) studies; `OUT/prior<S>/data`) and runs (`OUT/prior<S>/<variant>/seed<k>`,
    `OUT/prior<S>/results.json`). Writes and returns `OUT/results.json`: {"prior_seeds", "priors": prior ->
    Results, "over_priors": `over_priors`}. `options` are run_faithfulness's (preset, meteor, flip)."""
    by_prior: dict[str, Results] = {}
    started = time.perf_counter()
    for prior_seed in prior_seeds:
        prior_out = out / f"prior{prior_seed}"
        print(f"=== prior {prior_seed} ({time.perf_counter() - started:.0f} s elapsed)", flush=True)
        synth_bench_data(prior_out / "data", *data, prior_seed=prior_seed)
        prior_overrides = [*overrides, f"data.root={prior_out / 'data'}"]  # each prior reads its own data
        by_prior[str(prior_seed)] = run_faithfulness(
            prior_out, variants, seeds, splits, prior_overrides, **options
        )
    payload = {"prior_seeds": list(prior_seeds), "priors": by_prior, "over_priors": over_priors(by_prior)}
    (out / "results.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return payload


def priors_markdown(payload: dict[str, Any], splits: Sequence[str], command: str) -> str:
    """results.md over priors: the mean over priors (± sample sd over priors, [min, max]; each prior's value
    is the mean over its seeds), then each prior's own tables (mean ± sd over seeds)."""
    by_prior = payload["priors"]
    seeds = ", ".join(str(s) for s in payload["prior_seeds"])
    parts = [
        f"Command: `{command}`",
        "",
        f"SynthCXR random priors {seeds} (`random_prior(S)`, data seed {PRIOR_DATA_SEED} + S).",
        "",
        f"## mean over {len(by_prior)} priors",
        "",
        "Each prior's value is its mean over seeds; cells are mean ± sample sd over priors [min, max].",
        "",
        *_tables(prior_means(by_prior), splits, unit="priors", ranges=True),
    ]
    for prior, results in by_prior.items():
        parts += [f"## prior {prior}", "", *_tables(results, splits)]
    return "\n".join(parts)
