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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leadrrg.commands import add_overrides_argument


@dataclass(frozen=True)
class Variant:
    """One benchmark variant: config overrides on top of the preset, decode-time overrides, and (for
    decoding-time variants) the variant whose trained runs it decodes with."""

    overrides: tuple[str, ...] = ()
    decode: tuple[str, ...] = ()
    trained_as: str | None = None
    about: str = ""


# The paper's recipe (joint training, L_LM + 4 x BCE, the decoder reads the experts' own p).
PAPER = (
    "model.experts.readout=query",
    "model.injection.confidence=mixture",
    "model.grounding.truth_forcing=0",
    "model.grounding.detach_experts=false",
    "model.grounding.balance=none",
    "model.grounding.expert_warmup_steps=0",
    "model.grounding.counterfactual=0",
    "decode.expert_threshold=0",  # its decoder was trained on its own soft p
)

VARIANTS: dict[str, Variant] = {
    "lvlm": Variant(
        (
            "model.injection.fusion=none",
            "model.grounding.expert_warmup_steps=0",
            "model.grounding.counterfactual=0",
        ),
        about="plain LVLM, no experts",
    ),
    "lvlm_long": Variant(
        (
            "model.injection.fusion=none",
            "model.grounding.expert_warmup_steps=0",
            "model.grounding.counterfactual=0",
            "train.max_steps=800",
        ),
        about="plain LVLM with twice the demo's steps: about the training time of LEAD with stage 1",
    ),
    "lvlm_cls": Variant(
        ("model.injection.fusion=aux", "model.grounding.counterfactual=0"),
        about="LVLM + the same experts and L_cls, nothing fused",
    ),
    "lvlm_cls_bias": Variant(
        decode=("decode.expert_bias=1.0",),
        trained_as="lvlm_cls",
        about="lvlm_cls + a CCD-style logit bias from the experts on finding words at decoding",
    ),
    "lead": Variant(about="LEAD, the default recipe"),
    "lead_paper": Variant(PAPER, about="LEAD as the paper describes it"),
    # Ablations of the default LEAD: one technique removed, or one architectural switch changed.
    "lead_no_truth_forcing": Variant(("model.grounding.truth_forcing=0",), about="decoder reads its own p"),
    "lead_half_truth_forcing": Variant(
        ("model.grounding.truth_forcing=0.5",), about="truth for half the studies"
    ),
    "lead_no_detach": Variant(("model.grounding.detach_experts=false",), about="LM loss trains the experts"),
    "lead_no_counterfactual": Variant(
        ("model.grounding.counterfactual=0",), about="no counterfactual studies (the lead_stage1 recipe)"
    ),
    "lead_no_stage1": Variant(("model.grounding.expert_warmup_steps=0",), about="joint training only"),
    "lead_long_stage1": Variant(
        ("model.grounding.expert_warmup_steps=3600",),
        about="a 3,600-step stage 1 (12x the demo's): where the experts alone reach AUROC 0.90 on shift_test",
    ),
    "lead_no_augment": Variant(
        ("data.augment=false",), about="training images as stored (no random affine, no intensity jitter)"
    ),
    "lead_stage1_no_augment": Variant(
        ("model.grounding.expert_warmup_augment=false",), about="stage 1 reads the images as stored"
    ),
    "lead_own_no_finding": Variant(
        decode=("decode.derive_no_finding=false",),
        trained_as="lead",
        about="the decoder reads the No Finding expert's own verdict, not CheXpert's rule",
    ),
    "lead_joint": Variant(
        (
            "model.grounding.expert_warmup_steps=0",
            "model.grounding.counterfactual=0",
            "model.grounding.balance=context",
        ),
        about="the default before stage 1 and counterfactual studies (joint training, context balance)",
    ),
    "lead_detach_vision": Variant(
        ("model.grounding.detach_vision=true",), about="only L_cls trains the vision encoder"
    ),
    "lead_query_readout": Variant(
        ("model.experts.readout=query",), about="experts read only their attended feature (no max-pooled one)"
    ),
    "lead_context_balance": Variant(
        ("model.grounding.balance=context",), about="context-balanced BCE for the experts"
    ),
    "lead_mixture": Variant(
        ("model.injection.confidence=mixture",), about="p e + (1 - p) a, no present vector"
    ),
    "lead_truth_jitter": Variant(("model.grounding.truth_jitter=0.5",), about="forced truth softened"),
    "lead_visual_dropout": Variant(("model.grounding.visual_dropout=0.5",), about="visual tokens dropped"),
    "input": Variant(("model.injection.fusion=input",), about="expert tokens as extra input tokens"),
    "lead_shared_proj": Variant(("model.injection.projection=shared",), about="one W for all layers"),
    "lead_static_gate": Variant(("model.injection.gate=static",), about="one learned scalar per layer"),
    "lead_open_gate": Variant(("model.injection.gate=open",), about="g = 1"),
    "lead_no_confidence": Variant(
        ("model.injection.confidence=none",), about="e instead of p (e + u) + (1 - p) a"
    ),
}
MAIN_VARIANTS = ("lvlm", "lvlm_cls", "lvlm_cls_bias", "lead", "lead_paper")


def parse_variants(text: str) -> list[str]:
    """`main`, `all` or a comma-separated list of variant names."""
    from leadrrg.errors import LeadrrgError

    if text == "main":
        return list(MAIN_VARIANTS)
    if text == "all":
        return list(VARIANTS)
    variants = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise LeadrrgError(
            f"unknown variant(s) {', '.join(unknown)}; expected main, all or some of: {', '.join(VARIANTS)}"
        )
    return variants


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
        "--variants",
        default="main",
        help=f"main ({', '.join(MAIN_VARIANTS)}), all, or a comma-separated subset of: {', '.join(VARIANTS)}",
    )
    faith.add_argument("--splits", default="test,shift_test", help="evaluation splits present in the data")
    faith.add_argument("--train", type=int, default=2000, help="SynthCXR training studies when synthesising")
    faith.add_argument("--eval", type=int, default=200, help="SynthCXR studies per evaluation split")
    faith.add_argument("--size", type=int, default=128, help="SynthCXR image side when synthesising")
    add_overrides_argument(
        faith, "typed dotted override applied to every variant (the shared budget), repeatable"
    )
    faith.add_argument("--no-meteor", action="store_true", help="skip METEOR (it starts a Java VM per run)")
    faith.add_argument(
        "--flip",
        type=int,
        default=100,
        metavar="N",
        help="diagnosis of every run with experts (leadrrg diagnose): expert AUROC and report F1 vs truth on every "
        "split, oracle and N flips on shift_test (0: no diagnosis)",
    )


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


# (column header, metric key, split or None for the deep split) of the diagnosis table.
DIAGNOSIS_COLUMNS: tuple[tuple[str, str, str | None], ...] = (
    ("expert macro AUROC (test)", "diag_expert_macro_auroc", "test"),
    ("expert macro AUROC (shift)", "diag_expert_macro_auroc", "shift_test"),
    ("report F1 vs truth, own experts (shift)", "diag_report_f1_vs_truth", "shift_test"),
    ("report F1 vs truth, oracle experts (shift)", "diag_oracle_report_f1_vs_truth", "shift_test"),
    ("flip: follows", "diag_flip_follow_rate", "shift_test"),
    ("flip: others unchanged", "diag_flip_others_unchanged_rate", "shift_test"),
)


def diagnosis_table(results: dict[str, dict[str, dict[str, dict[str, Any]]]]) -> str:
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


def run(args: argparse.Namespace) -> int:
    from leadrrg.config import apply_overrides, load_preset
    from leadrrg.experiments.runner import diagnose_experiment, run_experiment

    out = Path(args.out)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    variants = parse_variants(args.variants)
    splits = [s.strip() for s in args.splits.split(",") if s.strip()]

    data_dir = Path(args.data) if args.data else out / "data"
    if not args.data and not (data_dir / "manifest.jsonl").is_file():
        from leadrrg.data.synth.generate import synthesize

        counts = {"train": args.train, "val": args.eval, "test": args.eval, "shift_test": args.eval}
        synthesize(data_dir, counts, size=args.size, seed=1000, workers=2, config=None, progress=True)

    base = [f"data.root={data_dir}"] + ([f"data.format={args.format}"] if args.format else [])
    results: dict[str, dict[str, dict[str, Any]]] = {}
    started = time.perf_counter()
    for variant in variants:
        spec = VARIANTS[variant]
        trained_as = spec.trained_as or variant
        for seed in seeds:
            config = apply_overrides(
                load_preset(args.preset),
                base + list(args.overrides) + list(VARIANTS[trained_as].overrides) + [f"train.seed={seed}"],
            )
            print(f"== {variant} seed {seed} ({time.perf_counter() - started:.0f} s elapsed)", flush=True)
            result = run_experiment(
                config,
                out / trained_as / f"seed{seed}",
                splits,
                meteor=not args.no_meteor,
                quiet=True,
                results_dir=out / variant / f"seed{seed}",
                decode_overrides=spec.decode,
            )
            by_split = {
                split: {k: v for k, v in metrics.items() if not isinstance(v, dict)}
                for split, metrics in result.metrics.items()
            }
            if args.flip:
                diagnosis = diagnose_experiment(
                    out / trained_as / f"seed{seed}",
                    splits,
                    result.train_summary["steps"],
                    results_dir=out / variant / f"seed{seed}",
                    decode_overrides=spec.decode,
                    flip=args.flip,
                )
                for split, measures in diagnosis.items():
                    by_split[split].update(
                        {f"diag_{k}": v for k, v in measures.items() if not isinstance(v, (dict, list))}
                    )
                    by_split[split]["diag_expert_auroc"] = measures.get("expert_auroc")
            results.setdefault(variant, {})[str(seed)] = by_split | {"train": result.train_summary}

    (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    command = (
        "leadrrg bench faithfulness "
        + " ".join(
            f"--{k.replace('_', '-')} {v}"
            for k, v in vars(args).items()
            if k in ("out", "data", "preset", "seeds", "variants", "splits", "flip") and v
        )
        + "".join(f" --set {o}" for o in args.overrides)
        + (" --no-meteor" if args.no_meteor else "")
    )
    parts = [f"Command: `{command}`", ""]
    for split in splits:
        parts += [f"### {split}", "", results_table(results, split), ""]
    diagnosis = diagnosis_table(results)
    if diagnosis:
        parts += ["### diagnosis (leadrrg diagnose)", "", diagnosis, ""]
    (out / "results.md").write_text("\n".join(parts))
    print("\n".join(parts))
    print(f"benchmark finished in {time.perf_counter() - started:.0f} s; results in {out / 'results.md'}")
    return 0
