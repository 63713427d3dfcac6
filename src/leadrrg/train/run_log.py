"""A run's logs: logs.jsonl and TensorBoard (rank 0 only), a progress bar on a TTY, a plain line otherwise.

Nothing a run logged is deleted: a resume moves the records past its checkpoint (the steps it trains again)
to logs.superseded.jsonl, and a run that stops before its first checkpoint keeps its logs.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

from leadrrg.collectives import DistContext
from leadrrg.io import atomic_write_text
from leadrrg.train import checkpoint as ckpt

logger = logging.getLogger(__name__)


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
    """logs.jsonl + TensorBoard (rank 0 only), a progress bar on a TTY, one line per eval otherwise."""

    def __init__(
        self, run_dir: Path, ctx: DistContext, start_step: int, max_steps: int, quiet: bool, resume: bool
    ):
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
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(run_dir / ckpt.TB_DIR), purge_step=start_step + 1 if resume else None)
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
            if isinstance(value, (int, float)) and value is not None:
                self.writer.add_scalar(f"{kind}/{key}", value, step)
        if kind == "train" and self.bar is not None:
            self.bar.set_postfix(loss=f"{values['loss']:.3f}", sps=f"{values['studies_per_s']:.1f}")
        if kind == "val" and not self.quiet:
            text = " ".join(f"{k}={v:.4g}" for k, v in values.items() if isinstance(v, float))
            (self.bar.write if self.bar is not None else lambda s: print(s, file=sys.stderr))(
                f"step {step}: {text}"
            )

    def log_text(self, tag: str, step: int, text: str) -> None:
        """A TensorBoard text entry (markdown), e.g. sample reports generated at validation."""
        if self.writer is not None:
            self.writer.add_text(tag, text, step)

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
            self.handle.close()
