"""CLI commands: one module per command, each with `add_arguments(parser)` and `run(args) -> int`; the argument
helpers and checks that several commands share are here (no command module imports another).

Every command module is imported to build `leadrrg --help`, so nothing at the top of one imports torch."""

from __future__ import annotations

import argparse
from pathlib import Path

from leadrrg.config import DATA_FORMATS, DataConfig
from leadrrg.errors import LeadrrgError
from leadrrg.io import path_problem


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


def check_run_dir(run_dir: Path) -> None:
    """A trained run directory with weights, or a LeadrrgError saying what to do."""
    problem = path_problem(run_dir, "directory")
    if problem:
        raise LeadrrgError(
            f"run directory {run_dir} {problem}; expected the --out directory of leadrrg train"
        )
    if not (run_dir / "model.safetensors").is_file():
        raise LeadrrgError(
            f"run directory {run_dir} has no model.safetensors; train it first (leadrrg train) or wait for its "
            "first checkpoint"
        )


def resolve_device(name: str):
    """`--device NAME` -> a torch.device (`leadrrg.inference.api.resolve_device`), its error naming the flag."""
    from leadrrg.inference.api import resolve_device as resolve  # torch: not at `leadrrg --help`

    try:
        return resolve(name)
    except LeadrrgError as exc:
        raise LeadrrgError(f"--{exc}") from None


def add_chexbert_arguments(parser: argparse.ArgumentParser) -> None:
    """--chexbert PATH, --bert-dir DIR and --device (`leadrrg evaluate`, `leadrrg compare`)."""
    parser.add_argument(
        "--chexbert",
        default=None,
        metavar="PATH",
        help="also label with CheXbert from this local checkpoint (chexbert.pth): chexbert14_* metrics beside ours",
    )
    parser.add_argument(
        "--bert-dir",
        default=None,
        metavar="DIR",
        help="local bert-base-uncased directory (config.json, vocab.txt) for --chexbert; nothing is downloaded",
    )
    parser.add_argument("--device", default="cpu", help="torch device for --chexbert (default: cpu)")


def chexbert_labeler(args: argparse.Namespace):
    """The CheXbertLabeler that --chexbert / --bert-dir name, or None when neither is given."""
    if args.chexbert is None and args.bert_dir is None:
        return None
    if args.chexbert is None or args.bert_dir is None:
        raise LeadrrgError("--chexbert needs --bert-dir (and --bert-dir needs --chexbert)")
    from leadrrg.labeler.chexbert import CheXbertLabeler  # torch: not at `leadrrg --help`

    return CheXbertLabeler(args.chexbert, args.bert_dir, device=args.device)


def add_bootstrap_arguments(parser: argparse.ArgumentParser, *, default: int, what: str) -> None:
    """--bootstrap N and --seed S (`leadrrg evaluate`, `leadrrg compare`)."""
    parser.add_argument(
        "--bootstrap",
        type=int,
        default=default,
        metavar="N",
        help=f"study-level bootstrap replicates: {what} (default: {default})",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap's resampling (default: 0)")


def check_bootstrap(args: argparse.Namespace, minimum: int) -> None:
    if args.bootstrap < minimum:
        raise LeadrrgError(f"--bootstrap {args.bootstrap}: expected a number of replicates >= {minimum}")


def add_reference_arguments(parser: argparse.ArgumentParser, split_help: str) -> None:
    """--data ROOT, --format FORMAT and --split SPLIT (`leadrrg evaluate`, `leadrrg compare`): the data set whose
    studies give predictions without references (a CSV of findings, impression, study_id) their reference."""
    parser.add_argument(
        "--data",
        default=None,
        metavar="ROOT",
        help="take each prediction's reference (and labels) from this data set's study with the same id",
    )
    parser.add_argument("--format", choices=DATA_FORMATS, default=None, help="data layout of --data")
    parser.add_argument("--split", default=None, help=split_help)


def reference_data(args: argparse.Namespace, section: str = "findings") -> DataConfig | None:
    """The DataConfig that --data / --format name (references of `section`), or None without --data."""
    if args.data is None:
        if args.format is not None:
            raise LeadrrgError("--format needs --data (the data root whose studies give the references)")
        return None
    if args.format is None:
        raise LeadrrgError(f"--data {args.data} needs --format, one of {', '.join(DATA_FORMATS)}")
    return DataConfig(root=args.data, format=args.format, section=section)


def add_model_metrics_arguments(parser: argparse.ArgumentParser) -> None:
    """`--metrics-dir DIR` and `--no-model-metrics` (evaluate, compare)."""
    parser.add_argument(
        "--metrics-dir",
        help="local folder with the weights of BERTScore, RadGraph, RaTEScore and CheXbert (default: "
        "$LEADRRG_METRICS_DIR, else the folder `leadrrg metrics setup DIR` recorded); nothing is downloaded",
    )
    parser.add_argument(
        "--no-model-metrics",
        action="store_true",
        help="skip BERTScore, RadGraph-F1, RaTEScore and CheXbert from the metrics folder (they are then not reported)",
    )


def model_metrics(args: argparse.Namespace, chexbert_fn):
    """(CheXbert labeler, field-metrics function) from the metrics folder; --chexbert/--bert-dir win over it."""
    from leadrrg.metrics.field import chexbert_labeler as chexbert_from_dir
    from leadrrg.metrics.field import field_metrics
    from leadrrg.metrics.local_models import metrics_dir

    root, _ = metrics_dir(args.metrics_dir)
    reason = None
    if chexbert_fn is None:
        chexbert_fn, reason = chexbert_from_dir(root, args.device)

    def field_fn(references: list[str], generated: list[str]) -> dict:
        scores = field_metrics(references, generated, root=root, device=args.device)
        if reason is not None:
            scores["missing"]["chexbert14_micro_f1"] = reason
        return scores

    return chexbert_fn, field_fn
