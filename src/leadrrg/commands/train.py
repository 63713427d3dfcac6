"""`leadrrg train --preset NAME|FILE.json --data DIR --out RUN [--set key=value ...] [--resume]`.

`--preset` takes a shipped preset's name or a JSON file of the same form (partial; defaults fill the rest);
`--config FILE.json` a full run config (e.g. another run's config.json). `--print-config` prints the resolved
config (preset, then --data, then --set) as JSON and exits without training.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from leadrrg.commands import add_overrides_argument
from leadrrg.errors import LeadrrgError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--preset", help="named preset (e.g. demo) or a preset JSON file; optional with --resume"
    )
    source.add_argument("--config", help="a full run config JSON file (e.g. another run's config.json)")
    parser.add_argument("--data", help="data root directory (sets data.root)")
    parser.add_argument("--out", help="run directory to create (or to continue with --resume)")
    parser.add_argument(
        "--print-config", action="store_true", help="print the resolved config as JSON and exit (no training)"
    )
    add_overrides_argument(
        parser, "typed dotted config override, repeatable (e.g. --set train.max_steps=200)"
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its last checkpoint"
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bar, per-evaluation lines or stage-1 announcement (stage 1: "
        "model.grounding.expert_warmup_steps steps before train.max_steps joint steps; 0 skips it)",
    )


def build_config(args: argparse.Namespace):
    """The run config: the preset (or, with --resume, the run's own config.json), then --data, then --set."""
    from leadrrg.config import apply_overrides, load_preset, load_run_config

    if args.preset and (args.preset.endswith(".json") or Path(args.preset).is_file()):
        config = preset_file(Path(args.preset))
    elif args.preset:
        config = load_preset(args.preset)
    elif getattr(args, "config", None):
        config = load_run_config(args.config)  # a run's config.json keeps the behaviour it was trained with
    elif args.resume:
        if not args.out:
            raise LeadrrgError("--resume needs --out, the run directory to continue")
        if not (Path(args.out) / "config.json").is_file():
            raise LeadrrgError(
                f"cannot resume: {args.out} is not a leadrrg run (no config.json); start it without --resume"
            )
        config = load_run_config(Path(args.out) / "config.json")
    else:
        raise LeadrrgError(
            "no --preset given (nor --config); expected e.g. --preset demo (or --resume to continue a run)"
        )
    overrides = list(args.overrides)
    if args.data:
        overrides.insert(0, f"data.root={args.data}")
    return apply_overrides(config, overrides) if overrides else config


def preset_file(path: Path):
    """A preset JSON file of the shipped presets' form (partial) -> RunConfig."""
    import json

    from leadrrg.config import RunConfig, from_dict

    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise LeadrrgError(
            f"preset file {path} does not exist; expected a preset name or a JSON file"
        ) from None
    except json.JSONDecodeError as exc:
        raise LeadrrgError(f"preset file {path} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise LeadrrgError(f"preset file {path} holds {type(data).__name__}; expected a JSON object")
    data.setdefault("preset", path.stem)
    return from_dict(RunConfig, data)


def duration(seconds: float) -> str:
    """`42 s`, `1 min 42 s`, `2 h 05 min`."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def format_summary(summary: dict[str, Any]) -> str:
    """The line `leadrrg train` ends with: steps of both stages and the whole wall time, with its two parts."""

    def number(value, fmt):
        return "n/a" if value is None else format(value, fmt)

    stage1 = summary.get("stage1_steps", 0)
    wall = summary.get("wall_time_s", summary["train_time_s"])
    steps = f"{summary['steps']} steps ({summary['epochs']:.2f} epochs)"
    if stage1:
        stage1_s = summary["stage1_time_s"]
        steps = (
            f"{stage1} stage-1 + {steps.replace('steps', 'joint steps', 1)} in {duration(wall)} "
            f"(stage 1 {duration(stage1_s)}, joint {duration(wall - stage1_s)})"
        )
    else:
        steps += f" in {duration(wall)}"
    return (
        f"trained {steps}: "
        f"val loss {number(summary['final_val_loss'], '.4f')}, "
        f"expert AUROC {number(summary['val_expert_macro_auroc'], '.3f')}, "
        f"{summary['studies_per_s']:.1f} studies/s, peak memory {summary['peak_memory_mb']:.0f} MiB\n"
        f"run directory: {summary['run_dir']}"
    )


def run(args: argparse.Namespace) -> int:
    config = build_config(args)
    if args.print_config:
        import json

        from leadrrg.config import to_dict

        print(json.dumps(to_dict(config), indent=2))
        return 0
    if not args.out:
        raise LeadrrgError("--out is required: the run directory to create (or to continue with --resume)")
    from leadrrg.train.loop import train

    summary = train(config, args.out, resume=args.resume, quiet=args.quiet)
    if summary.get("world_size", 1) == 1 or _is_rank_zero():
        print(format_summary(summary), file=sys.stdout)
    return 0


def _is_rank_zero() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"
