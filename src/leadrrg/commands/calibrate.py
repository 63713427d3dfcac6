"""`leadrrg calibrate`: per-finding expert thresholds of a trained run, chosen on its validation split.

    leadrrg calibrate --run RUN [--split val] [--data DIR] [--device auto]

Writes RUN/thresholds.json (`leadrrg.inference.calibrate`: `--rule precision` or `max_f1` per finding, in
[0.05, 0.95], the global decode.expert_threshold for findings with too few positives). Training writes it at its
end; run this for a run trained before, or after its data moved. Test splits are refused. Decoding reads the file
with `--set decode.thresholds=calibrated`; the default (global) keeps decode.expert_threshold for every finding.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from leadrrg.commands import add_run_argument, check_run_dir, resolve_device


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_argument(parser, "trained run directory (written by leadrrg train)")
    parser.add_argument("--split", default="val", help="the validation split to calibrate on (default: val)")
    parser.add_argument("--data", help="data root (default: the run's data.root)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available) | cpu | cuda | cuda:N")
    parser.add_argument(
        "--rule",
        choices=("precision", "max_f1"),
        default="precision",
        help="precision: the lowest threshold with precision >= 0.9 on the split (default); max_f1: the F1 optimum",
    )


def run(args: argparse.Namespace) -> int:
    # torch: imported here, not by `leadrrg --help`
    from leadrrg.inference.calibrate import calibrate_run, check_calibration_split
    from leadrrg.runs.files import THRESHOLDS_FILE

    check_calibration_split(args.split)  # before paying for the model
    check_run_dir(Path(args.run))
    overrides = [f"data.root={args.data}"] if args.data else []
    content = calibrate_run(
        args.run,
        args.split,
        device=resolve_device(args.device),
        overrides=overrides,
        progress=True,
        rule=args.rule,
    )
    print(f"{'finding':<28} {'threshold':>9} {'F1':>6} {'F1 fb':>6} {'pos':>5} {'n':>5}")
    for name, entry in content["findings"].items():
        threshold = "fallback" if entry["threshold"] is None else f"{entry['threshold']:.2f}"
        f1 = "" if entry["f1"] is None else f"{entry['f1']:.3f}"
        print(
            f"{name:<28} {threshold:>9} {f1:>6} {entry['f1_at_fallback']:>6.3f} "
            f"{entry['positives']:>5} {entry['n']:>5}"
        )
    calibrated = len(content["thresholds"])
    print(
        f"\nwrote {Path(args.run) / THRESHOLDS_FILE}: {calibrated} of {len(content['findings'])} findings "
        f"calibrated on {content['studies']} {args.split!r} studies; the rest keep decode.expert_threshold "
        f"({content['fallback']}). F1 fb: F1 at the fallback threshold."
    )
    return 0
