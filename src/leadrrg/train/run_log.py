"""A run's logs: logs.jsonl and a tracker (rank 0 only), a progress bar on a TTY, a plain line otherwise.

The tracker is `train.tracker`: TensorBoard (RUN/tb, the default), Weights & Biases or MLflow (optional extras,
`pip install 'leadrrg[wandb]'` / `'leadrrg[mlflow]'`, imported only when chosen; wandb runs offline unless
WANDB_MODE is set, into RUN/wandb; MLflow writes to a local `file:` store, RUN/mlruns, unless
MLFLOW_TRACKING_URI is set), or none (logs.jsonl only).

Nothing a run logged is deleted: a resume moves the records past its checkpoint (the steps it trains again)
to logs.superseded.jsonl, and a run that stops before its first checkpoint keeps its logs.
"""

from __future__ import annotations

import html
import importlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from leadrrg.collectives import DistContext
from leadrrg.config import RunConfig, to_dict
from leadrrg.errors import LeadrrgError
from leadrrg.io import atomic_write_text
from leadrrg.train import checkpoint as ckpt

logger = logging.getLogger(__name__)

TRACKER_PACKAGES = {"wandb": "wandb", "mlflow": "mlflow"}  # train.tracker -> the package (and extra) it needs


def tracker_package(tracker: str):
    """The module `train.tracker` needs (None for tensorboard and none); a LeadrrgError naming the extra to
    install when it is missing, said before any training."""
    package = TRACKER_PACKAGES.get(tracker)
    if package is None:
        return None
    try:
        return importlib.import_module(package)
    except ImportError:
        raise LeadrrgError(
            f"train.tracker={tracker} needs the {package} package, which is not installed; expected it "
            f"installed with `pip install 'leadrrg[{package}]'`, or another tracker "
            "(train.tracker=tensorboard, the default, or none)"
        ) from None


def _flat(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


class Tracker:
    """TensorBoard, wandb or MLflow behind one interface: scalar, text, close."""

    def __init__(self, name: str, run_dir: Path, config: RunConfig, start_step: int, resume: bool):
        self.name, self.module = name, tracker_package(name)
        if name == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter

            purge = start_step + 1 if resume else None
            self.writer = SummaryWriter(str(run_dir / ckpt.TB_DIR), purge_step=purge)
        elif name == "wandb":
            os.environ.setdefault("WANDB_MODE", "offline")  # nothing leaves the machine unless asked
            self.writer = self.module.init(
                project="leadrrg", name=run_dir.name, dir=str(run_dir), config=to_dict(config)
            )
        else:  # mlflow
            if not os.environ.get("MLFLOW_TRACKING_URI"):
                self.module.set_tracking_uri((run_dir / "mlruns").resolve().as_uri())
            self.module.set_experiment("leadrrg")
            self.writer = self.module.start_run(run_name=run_dir.name)
            self.module.log_params({k: str(v)[:500] for k, v in _flat(to_dict(config)).items()})

    def scalar(self, tag: str, value: float, step: int) -> None:
        if self.name == "tensorboard":
            self.writer.add_scalar(tag, value, step)
        elif self.name == "wandb":
            self.writer.log({tag: value}, step=step)
        else:
            self.module.log_metric(tag, value, step=step)

    def text(self, tag: str, text: str, step: int) -> None:
        if self.name == "tensorboard":
            self.writer.add_text(tag, text, step)
        elif self.name == "wandb":
            self.writer.log({tag: self.module.Html(f"<pre>{html.escape(text)}</pre>")}, step=step)
        else:
            self.module.log_text(text, f"{tag}/step_{step}.md")

    def close(self) -> None:
        if self.name == "tensorboard":
            self.writer.close()
        elif self.name == "wandb":
            self.writer.finish()
        else:
            self.module.end_run()


def _log_lines(path: Path) -> list[str]:
    """The complete JSON records of logs.jsonl; a line torn by a kill mid-write (or otherwise unreadable) is
    dropped with a warning."""
    kept = []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if isinstance(record, dict):
            kept.append(line)
        else:
            logger.warning(
                "%s line %d is not a complete JSON record (a write cut short?); dropped", path, number
            )
    return kept


def supersede_records(path: Path, start_step: int) -> None:
    """Move the records of logs.jsonl past `start_step` (steps a resume trains again) to logs.superseded.jsonl:
    logs.jsonl then reads as one uninterrupted run, and nothing a run logged is deleted."""
    lines = _log_lines(path)
    kept = [line for line in lines if json.loads(line).get("step", 0) <= start_step]
    dropped = [line for line in lines if json.loads(line).get("step", 0) > start_step]
    if dropped:
        with open(path.with_name(ckpt.SUPERSEDED_LOG_FILE), "a", encoding="utf-8") as handle:
            handle.write("".join(line + "\n" for line in dropped))
    atomic_write_text(path, "".join(line + "\n" for line in kept))


def logged_anything(run_dir: Path) -> bool:
    """Whether the run has written a log record (then a failure never deletes the run directory)."""
    path = run_dir / ckpt.LOG_FILE
    return path.is_file() and bool(_log_lines(path))


class RunLogger:
    """logs.jsonl + the tracker (rank 0 only), a progress bar on a TTY, one line per eval otherwise."""

    def __init__(
        self, run_dir: Path, ctx: DistContext, start_step: int, config: RunConfig, quiet: bool, resume: bool
    ):
        max_steps = config.train.max_steps
        self.enabled = ctx.is_main
        self.quiet = quiet
        self.writer = None
        self.bar = None
        self.plain = None
        if not self.enabled:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        self.path = run_dir / ckpt.LOG_FILE
        if resume and self.path.exists():
            supersede_records(self.path, start_step)
        self.handle = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
        tracker = config.train.tracker
        self.writer = None if tracker == "none" else Tracker(tracker, run_dir, config, start_step, resume)
        if not quiet and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(
                total=max_steps, initial=start_step, unit="step", desc="train", dynamic_ncols=True
            )
        elif not quiet:  # a log file or pipe: a plain line every 30 s, no carriage returns
            from leadrrg.progress import Progress

            self.plain = Progress(max_steps - start_step, "train", unit="steps")

    def log(self, kind: str, step: int, values: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {"kind": kind, "step": step, **values}
        self.handle.write(json.dumps(record) + "\n")
        self.handle.flush()
        for key, value in values.items():
            if isinstance(value, (int, float)) and value is not None and self.writer is not None:
                self.writer.scalar(f"{kind}/{key}", value, step)
        if kind == "train" and self.bar is not None:
            self.bar.set_postfix(loss=f"{values['loss']:.3f}", sps=f"{values['studies_per_s']:.1f}")
        if kind == "val" and not self.quiet:
            text = " ".join(f"{k}={v:.4g}" for k, v in values.items() if isinstance(v, float))
            (self.bar.write if self.bar is not None else lambda s: print(s, file=sys.stderr))(
                f"step {step}: {text}"
            )

    def log_text(self, tag: str, step: int, text: str) -> None:
        """A tracker text entry (markdown), e.g. sample reports generated at validation."""
        if self.writer is not None:
            self.writer.text(tag, text, step)

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.update(1)
        if self.plain is not None:
            self.plain.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.plain is not None:
            self.plain.close()
        if self.writer is not None:
            self.writer.close()
        if self.enabled:
            self.handle.close()
