"""`leadrrg metrics setup DIR`: record DIR as the folder holding the weights of the model-based metrics
(BERTScore, RadGraph-F1, RaTEScore, CheXbert) and say what is still missing there; `leadrrg metrics status
[--metrics-dir DIR]`: the same check without recording. Nothing is downloaded (docs/METRICS.md)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    setup = actions.add_parser(
        "setup", help="record DIR as the metrics folder (overridden by $LEADRRG_METRICS_DIR)"
    )
    setup.add_argument("directory", metavar="DIR", help="folder that holds (or will hold) the model folders")
    status = actions.add_parser(
        "status", help="which model-based metrics can run, and what to put where for the rest"
    )
    status.add_argument(
        "--metrics-dir", help="folder to check (default: $LEADRRG_METRICS_DIR, else the recorded one)"
    )


def _print_status(root, source: str) -> int:
    from leadrrg.metrics.field import FIELD_METRICS, unavailable

    print(f"metrics folder: {root if root is not None else '(none)'} ({source})")
    ready = 0
    for name in FIELD_METRICS:
        reason = unavailable(name, root)
        ready += reason is None
        print(f"  {name:<22} {'ready' if reason is None else 'missing: ' + reason}")
    print(
        f"{ready} of {len(FIELD_METRICS)} ready; `leadrrg evaluate` reports the others as missing with these reasons"
    )
    return 0


def run(args: argparse.Namespace) -> int:
    from leadrrg.metrics.local_models import metrics_dir, record_metrics_dir

    if args.action == "setup":
        written = record_metrics_dir(args.directory)
        print(f"recorded in {written}")
        root, source = metrics_dir()
        return _print_status(root, source)
    root, source = metrics_dir(args.metrics_dir)
    return _print_status(root, source)
