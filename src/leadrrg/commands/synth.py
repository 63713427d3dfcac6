"""`leadrrg synth`: write a SynthCXR data set (images, reports, labels) and optionally a preview sheet."""

from __future__ import annotations

import argparse
import os


def _default_workers() -> int:
    return max(1, min(os.cpu_count() or 1, 4))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", required=True, metavar="DIR", help="output directory (must be empty or absent)"
    )
    parser.add_argument(
        "--train", type=int, default=2000, metavar="N", help="training studies (default 2000)"
    )
    parser.add_argument("--val", type=int, default=200, metavar="N", help="validation studies (default 200)")
    parser.add_argument("--test", type=int, default=200, metavar="N", help="test studies (default 200)")
    parser.add_argument(
        "--shift-test",
        type=int,
        default=200,
        metavar="N",
        help="shift-test studies, findings drawn independently (no co-occurrence prior; default 200)",
    )
    parser.add_argument(
        "--size", type=int, default=128, metavar="PX", help="image side in pixels (default 128)"
    )
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    parser.add_argument(
        "--workers",
        type=int,
        default=_default_workers(),
        metavar="W",
        help="worker processes (default min(cpu_count, 4)); the output does not depend on it",
    )
    parser.add_argument(
        "--config", metavar="FILE.json", help="a SynthConfig JSON (prevalences, co-occurrence)"
    )
    parser.add_argument(
        "--prior-seed",
        type=int,
        metavar="S",
        help="draw the studies from SynthCXR's random prior S (its own syndromes and implications; "
        "leadrrg.data.synth.priors), written to synth_config.json; default: the development prior",
    )
    parser.add_argument(
        "--preview", metavar="FILE.png", help="also write a labelled contact sheet of studies"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing non-empty output directory"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--reports",
        choices=("synthetic", "iu"),
        default="synthetic",
        help="synthetic: SynthCXR reports written from drawn findings (default); iu: SynthCXR-IU, the real "
        "IU X-Ray reports (from the torchxrayvision==1.5.7 wheel) with images rendered from their labels "
        "(splits by uid hash 70/10/20; --train/--val/--test/--shift-test and --config do not apply)",
    )
    parser.add_argument(
        "--iu-wheel",
        metavar="PATH",
        help="--reports iu: a local torchxrayvision-1.5.7 wheel (default: fetched with pip and cached)",
    )
    parser.add_argument(
        "--limit", type=int, metavar="N", help="--reports iu: only the first N reports with findings"
    )


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from leadrrg.data.synth.generate import SynthConfig, synthesize, write_contact_sheet
    from leadrrg.errors import LeadrrgError
    from leadrrg.io import check_writable, output_error, read_text

    check_writable(args.out, "--out")  # read-only or forbidden: said before any work
    if args.preview:
        check_writable(args.preview, "--preview")
    if args.reports == "iu":
        return _run_iu(args)
    if args.iu_wheel or args.limit is not None:
        raise LeadrrgError("--iu-wheel and --limit apply to --reports iu only")
    counts = {"train": args.train, "val": args.val, "test": args.test, "shift_test": args.shift_test}
    for split, n in counts.items():
        if n < 0:
            raise LeadrrgError(
                f"--{split.replace('_', '-')} is {n}; expected a non-negative number of studies"
            )
    if args.preview and not args.preview.lower().endswith(".png"):
        raise LeadrrgError(f"--preview {args.preview!r} must name a .png file")
    config = None
    if args.prior_seed is not None:
        from leadrrg.data.synth.priors import check_prior_seed, random_prior

        if args.config:
            raise LeadrrgError("--prior-seed and --config both choose the prior; pass one of them")
        config = random_prior(check_prior_seed(args.prior_seed, "--prior-seed"))
    if args.config:
        path = Path(args.config)
        text = read_text(path, "--config", "a SynthConfig JSON file")
        try:
            config = SynthConfig.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise LeadrrgError(f"--config {path} is not valid JSON ({exc})") from None
        except LeadrrgError as exc:
            raise LeadrrgError(f"--config {path}: {exc}") from None
    try:
        out = synthesize(
            args.out,
            counts,
            size=args.size,
            seed=args.seed,
            workers=args.workers,
            config=config,
            overwrite=args.overwrite,
            progress=not args.quiet,
        )
    except OSError as exc:  # e.g. the disk filled up: nothing is left half-written (atomic_directory)
        raise output_error(exc, args.out, "--out") from None
    total = sum(counts.values())
    prior = "" if args.prior_seed is None else f", random prior {args.prior_seed}"
    print(f"wrote {total} studies to {out} ({', '.join(f'{k} {v}' for k, v in counts.items())}{prior})")
    if args.preview:
        sheet = write_contact_sheet(out, args.preview)
        print(f"wrote preview {sheet}")
    return 0


def _run_iu(args: argparse.Namespace) -> int:
    import json
    import time

    from leadrrg.data.synth.iu import synthesize_iu
    from leadrrg.errors import LeadrrgError

    if args.config or args.preview or args.prior_seed is not None:
        raise LeadrrgError("--config, --prior-seed and --preview apply to --reports synthetic only")
    from leadrrg.io import output_error

    start = time.perf_counter()
    try:
        out = synthesize_iu(
            args.out,
            size=args.size,
            seed=args.seed,
            workers=args.workers,
            wheel=args.iu_wheel,
            limit=args.limit,
            overwrite=args.overwrite,
            progress=not args.quiet,
        )
    except OSError as exc:  # e.g. the disk filled up
        raise output_error(exc, args.out, "--out") from None
    counts = json.loads((out / "synth_iu.json").read_text())["counts"]
    splits = ", ".join(f"{k} {v}" for k, v in counts["splits"].items())
    print(
        f"wrote {counts['written']} SynthCXR-IU studies to {out} ({splits}) in {time.perf_counter() - start:.1f} s"
    )
    return 0
