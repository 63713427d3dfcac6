"""Progress that suits where it is shown: a tqdm bar on a terminal, plain lines in a log file.

On a terminal (stderr is a TTY) `Progress` draws a tqdm bar. Elsewhere (a log file, a pipe, CI) it prints one
plain line, `generate: 40/200 studies (20%) 12.3/s`, at most every `PLAIN_EVERY_S` seconds and at the end, so a
log never fills with carriage returns.
"""

from __future__ import annotations

import sys
import time

PLAIN_EVERY_S = 30.0


class Progress:
    """`with Progress(total, "generate") as bar: bar.update(n)`; `enabled=False` shows nothing."""

    def __init__(
        self, total: int | None, desc: str, unit: str = "studies", enabled: bool = True, stream=None
    ):
        self.total, self.desc, self.unit = total, desc, unit
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.count = 0
        self.start = self.last = time.monotonic()
        self.bar = None
        if enabled and _is_tty(self.stream):
            from tqdm import tqdm

            self.bar = tqdm(
                total=total, desc=desc, unit=unit[:-1] if unit.endswith("s") else unit, file=self.stream
            )

    def update(self, n: int = 1) -> None:
        self.count += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.enabled and time.monotonic() - self.last >= PLAIN_EVERY_S:
            self._line()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif self.enabled and self.count:
            self._line()
        self.enabled = False

    def _line(self) -> None:
        self.last = time.monotonic()
        rate = self.count / max(self.last - self.start, 1e-9)
        done = f"{self.count}/{self.total}" if self.total else str(self.count)
        share = f" ({100 * self.count / self.total:.0f}%)" if self.total else ""
        try:
            print(f"{self.desc}: {done} {self.unit}{share} {rate:.1f}/s", file=self.stream, flush=True)
        except (BrokenPipeError, ValueError):
            self.enabled = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _is_tty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def progress_iter(iterable, total: int | None, desc: str, unit: str = "studies"):
    """Yield from `iterable`, showing a `Progress` of one step per item."""
    with Progress(total, desc, unit=unit) as bar:
        for item in iterable:
            yield item
            bar.update(1)
