"""What keeps a run directory whole around training: one training process per run directory (a lock), and a
stop on Ctrl-C (SIGINT) or SIGTERM that first saves the steps trained since the last checkpoint.

- `run_lock`: `RUN/.lock` (an `fcntl.flock`, holding the PID) for the whole of `leadrrg train`, so a second
  `train` or `train --resume` into the same `--out` is refused before it touches anything, and nothing of the
  first is deleted. Under torchrun rank 0 holds it. A read-only or forbidden `--out` fails here, before any work.
- `StopRequest`: installed around the training steps. The first SIGINT or SIGTERM asks the loop to stop at the
  end of the current step: the checkpoint of that step is saved, the stop is logged, and `KeyboardInterrupt`
  ends the command (exit 130). A second signal stops at once (the steps since the last checkpoint are lost, as
  the message of the first one says).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import torch

from leadrrg.collectives import DistContext
from leadrrg.errors import LeadrrgError
from leadrrg.io import exclusive_lock, output_error

logger = logging.getLogger(__name__)

LOCK_FILE = ".lock"
SIGNALS = (signal.SIGINT, signal.SIGTERM)
# What a full, read-only or forbidden run directory raises (the environment, not a bug).
OUTPUT_ERRNOS = {errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM}


@contextlib.contextmanager
def run_lock(run_dir: Path, ctx: DistContext) -> Iterator[None]:
    """Hold `RUN/.lock` (rank 0) for the block. A run directory made only to hold the lock is removed after when
    the block left nothing else in it."""
    if not ctx.is_main:
        yield
        return
    made = not run_dir.exists()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise output_error(exc, run_dir, "run directory") from None
    try:
        with exclusive_lock(run_dir / LOCK_FILE, f"run directory {run_dir}"):
            yield
    finally:
        if made:
            with contextlib.suppress(OSError):
                run_dir.rmdir()  # only when empty


@contextlib.contextmanager
def run_outputs(run_dir: Path) -> Iterator[None]:
    """A full, read-only or forbidden run directory met in the block: a LeadrrgError naming it (an OSError about
    a file elsewhere, e.g. an input, is left as it is)."""
    try:
        yield
    except OSError as exc:
        inside = exc.filename is None or Path(run_dir).absolute() in Path(exc.filename).absolute().parents
        if exc.errno not in OUTPUT_ERRNOS or not inside:
            raise
        raise output_error(exc, run_dir, "run directory") from None


@contextlib.contextmanager
def checkpoint_write(run_dir: Path, step: int, saved_step: int) -> Iterator[None]:
    """Around one checkpoint save: what the file system refuses (safetensors raises its own error type) as a
    LeadrrgError naming the run directory, and which checkpoint is left."""
    from safetensors import SafetensorError

    try:
        yield
    except (OSError, SafetensorError) as exc:
        if isinstance(exc, OSError) and exc.errno not in OUTPUT_ERRNOS:
            raise
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        kept = f"the checkpoint of step {saved_step} is kept" if saved_step else "no checkpoint is kept"
        raise LeadrrgError(
            f"cannot write the checkpoint of step {step} in run directory {run_dir} ({reason}); {kept}. Expected a "
            f"writable folder with free space: make room, then `leadrrg train --resume --out {run_dir}`"
        ) from None


def ignore_interrupts(_worker_id: int) -> None:
    """DataLoader `worker_init_fn`: Ctrl-C reaches the whole process group; the workers leave it to the main
    process, which stops at the end of the step (a worker killed by it would fail the step instead)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class StopRequest:
    """The first SIGINT / SIGTERM received inside the block (main thread only; elsewhere nothing changes)."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for number in SIGNALS:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous = {}

    def _handle(self, number: int, _frame) -> None:
        if self.signal is not None:
            raise KeyboardInterrupt  # a second signal: at once
        self.signal = number
        logger.warning(
            "%s received: training stops at the end of this step, once its checkpoint is saved "
            "(send it again to stop at once, losing the steps since the last checkpoint)",
            signal.Signals(number).name,
        )

    def due(self, ctx: DistContext) -> bool:
        """Whether any process was asked to stop (a collective under torchrun: every process calls it)."""
        asked = self.signal is not None
        if not ctx.enabled:
            return asked
        import torch.distributed as dist

        flag = torch.tensor(
            [1.0 if asked else 0.0], device=ctx.device if dist.get_backend() == "nccl" else "cpu"
        )
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item() > 0)

    def stopped(self, step: int, run_dir: Path, run_log) -> KeyboardInterrupt:
        """Say (and log) that training stopped after the checkpoint of `step` was saved; the exception to raise."""
        name = self.name()
        if run_log.enabled:
            logger.warning(
                "stopped by %s at step %d; the checkpoint of step %d is saved in %s (nothing trained is lost): "
                "continue with `leadrrg train --resume --out %s`",
                *(name, step, step, run_dir / "checkpoint", run_dir),
            )
            run_log.log("stop", step, {"signal": name})
        return KeyboardInterrupt(f"stopped by {name} at step {step}")

    def name(self) -> str:
        return signal.Signals(self.signal).name if self.signal is not None else "a signal on another process"
