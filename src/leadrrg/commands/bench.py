"""`leadrrg bench faithfulness`: LEAD against its baselines and ablations, same data, budget and seeds.

Trains every variant (`experiments/variants.json`) for every seed (`OUT/<variant>/seed<k>`), generates on the
evaluation splits, evaluates, and writes `OUT/results.json` (every metric of every run) and `OUT/results.md`
(mean ± sample standard deviation over seeds); `leadrrg.experiments.faithfulness` does the work. Re-entrant:
finished runs are reused, interrupted ones resumed. `--priors K` / `--prior-seeds A,B` run the same on SynthCXR's
random priors (`data/synth/priors.py`), each with its own data and runs in `OUT/prior<S>`, and report each
prior and the mean over priors, so a recipe is selected on priors we generate, never on one.
Speed benchmarks are scripts: `benchmarks/bench_train.py`, `bench_decode.py`, `bench_synth.py`,
`bench_labeler.py`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from leadrrg.commands import add_overrides_argument
from leadrrg.errors import LeadrrgError
from leadrrg.experiments.variants import MAIN_VARIANTS, VARIANTS, parse_variants


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
    faith.add_argument(
        "--priors",
        type=int,
        metavar="K",
        help="train and score on K of SynthCXR's random priors (seeds 0..K-1; each its own data in "
        "OUT/prior<S>), reporting each prior and the mean over priors (default: the development prior only)",
    )
    faith.add_argument(
        "--prior-seeds",
        metavar="A,B,C",
        help="the random priors' seeds (instead of 0..K-1; --priors, if given, must match their number)",
    )
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


def command_line(args: argparse.Namespace) -> str:
    """The command as results.md records it."""
    return (
        "leadrrg bench faithfulness "
        + " ".join(
            f"--{k.replace('_', '-')} {v}"
            for k, v in vars(args).items()
            if k in ("out", "data", "preset", "seeds", "variants", "splits", "flip", "priors", "prior_seeds")
            and v
        )
        + "".join(f" --set {o}" for o in args.overrides)
        + (" --no-meteor" if args.no_meteor else "")
    )


def prior_seeds(args: argparse.Namespace) -> list[int] | None:
    """The random priors to bench on (--priors / --prior-seeds), or None for the development prior alone."""
    if args.prior_seeds is None and args.priors is None:
        return None
    if args.data or args.format:
        raise LeadrrgError(
            "--priors and --prior-seeds synthesise each prior's data; --data and --format do not apply"
        )
    if args.prior_seeds is None:
        if args.priors < 1:
            raise LeadrrgError(f"--priors is {args.priors}; expected at least 1 prior")
        return list(range(args.priors))
    try:
        chosen = [int(s) for s in args.prior_seeds.split(",") if s.strip()]
    except ValueError:
        raise LeadrrgError(f"--prior-seeds {args.prior_seeds!r}; expected comma-separated integers") from None
    if not chosen or len(set(chosen)) != len(chosen) or min(chosen) < 0:
        raise LeadrrgError(f"--prior-seeds {args.prior_seeds!r}; expected distinct non-negative integers")
    if args.priors is not None and args.priors != len(chosen):
        raise LeadrrgError(
            f"--priors {args.priors} but --prior-seeds names {len(chosen)}; expected the same number"
        )
    return chosen


def run(args: argparse.Namespace) -> int:
    # Imported here: the benchmark pulls in training and evaluation, which `leadrrg --help` should not load.
    from leadrrg.experiments.faithfulness import results_markdown, run_faithfulness, synth_bench_data

    out = Path(args.out)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    variants = parse_variants(args.variants)
    splits = [s.strip() for s in args.splits.split(",") if s.strip()]
    priors = prior_seeds(args)
    if priors is not None:
        return _run_priors(args, out, priors, variants, seeds, splits)
    data_dir = Path(args.data) if args.data else out / "data"
    if not args.data:
        synth_bench_data(data_dir, args.train, args.eval, args.size)

    base = [f"data.root={data_dir}"] + ([f"data.format={args.format}"] if args.format else [])
    started = time.perf_counter()
    results = run_faithfulness(
        out,
        variants,
        seeds,
        splits,
        base + list(args.overrides),
        preset=args.preset,
        meteor=not args.no_meteor,
        flip=args.flip,
    )
    markdown = results_markdown(results, splits, command_line(args))
    (out / "results.md").write_text(markdown)
    print(markdown)
    print(f"benchmark finished in {time.perf_counter() - started:.0f} s; results in {out / 'results.md'}")
    return 0


def _run_priors(
    args: argparse.Namespace,
    out: Path,
    priors: list[int],
    variants: list[str],
    seeds: list[int],
    splits: list[str],
) -> int:
    from leadrrg.experiments.faithfulness import priors_markdown, run_faithfulness_priors

    started = time.perf_counter()
    payload = run_faithfulness_priors(
        out,
        priors,
        (args.train, args.eval, args.size),
        variants,
        seeds,
        splits,
        list(args.overrides),
        preset=args.preset,
        meteor=not args.no_meteor,
        flip=args.flip,
    )
    markdown = priors_markdown(payload, splits, command_line(args))
    (out / "results.md").write_text(markdown)
    print(markdown)
    print(
        f"benchmark over {len(priors)} priors finished in {time.perf_counter() - started:.0f} s; results in "
        f"{out / 'results.md'}"
    )
    return 0
