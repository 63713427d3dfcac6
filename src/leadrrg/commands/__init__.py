"""CLI commands: one module per command, each with `add_arguments(parser)` and `run(args) -> int`."""

from __future__ import annotations

import argparse
from collections.abc import Sequence


def add_run_argument(
    parser: argparse.ArgumentParser, help_text: str = "trained run directory (written by leadrrg train)"
) -> None:
    """`--run DIR`, also spelled `--run-dir` (torchrun takes `--run` for its own `--run-path`), in `args.run`."""
    parser.add_argument(
        "--run",
        "--run-dir",
        dest="run",
        required=True,
        help=f"{help_text}; --run-dir is the same, and the one torchrun accepts",
    )


def add_overrides_argument(parser: argparse.ArgumentParser, help_text: str) -> None:
    """`--set KEY=VALUE`, repeatable, collected in `args.overrides`."""
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help_text
    )


def check_trained_overrides(overrides: Sequence[str], allowed: Sequence[str], when: str) -> None:
    """Refuse a `--set` outside the `allowed` sections (e.g. `decode.`) for a command that uses a trained model."""
    from leadrrg.errors import LeadrrgError

    for text in overrides:
        if not text.strip().startswith(tuple(allowed)):
            sections = " and ".join(f"{prefix}*" for prefix in allowed)
            raise LeadrrgError(
                f"--set {text!r}: only {sections} can be changed {when} (the model is trained)"
            )
