"""Progress of long work, one phase at a time, on stderr: a tqdm bar on a terminal; elsewhere (CI logs,
pipes, `kubectl logs`) or when asked for plain output, plain lines at most every `PLAIN_INTERVAL`
seconds and one when the phase ends, with no carriage return or escape code to garble a log.

    progress = Progress("replay")
    with progress.phase("re-delivering order-saga", unit="events") as phase:
        phase.plan(5000)
        phase.advance()  # once per event
    # plain: `replay: re-delivering order-saga 5000/5000 events, 310/s, done in 16.1 s`
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Protocol, TextIO

from tqdm import tqdm

PLAIN_INTERVAL = 10.0  # seconds between two plain lines of one phase (plus the one at its end)
_NOT_CI = ("", "0", "false", "no")


class PhaseProgress(Protocol):
    """One phase's count; what the code doing the work calls, from any thread."""

    def advance(self, count: int = 1) -> None:
        """`count` more items done."""

    def plan(self, total: int) -> None:
        """The phase's size, once known."""

    def reached(self, done: int, total: int) -> None:
        """Where the phase is, for work that measures its position rather than counting items."""


class Progress:
    """Where one program's phases show, chosen once: a bar when `stream` is a terminal, plain lines when
    it is not, when `CI` is set (some CI runners give jobs a terminal) or when `plain` is asked for."""

    def __init__(self, program: str, *, stream: TextIO | None = None, plain: bool = False,
                 environ: Mapping[str, str] | None = None, clock: Callable[[], float] = time.monotonic,
                 interval: float = PLAIN_INTERVAL) -> None:
        self.program = program
        self.stream = stream if stream is not None else sys.stderr
        in_ci = (environ if environ is not None else os.environ).get("CI", "").lower() not in _NOT_CI
        self.plain = plain or in_ci or not self.stream.isatty() or not _sized(self.stream)
        self.clock = clock
        self.interval = interval

    @contextmanager
    def phase(self, label: str, *, unit: str, total: int | None = None) -> Iterator[PhaseProgress]:
        """Show one phase until the block ends; its last state stays on screen (or in the log)."""
        if self.plain:
            lines = _Lines(f"{self.program}: {label}", unit, total, self.stream, self.clock, self.interval)
            try:
                yield lines
            except BaseException:
                lines.finish("stopped after")
                raise
            lines.finish("done in")
            return
        bar = _Bar(desc=label, total=total, unit=f" {unit}", file=self.stream, miniters=1, leave=True)
        try:
            yield _BarPhase(bar)
        finally:
            bar.close()


class _Bar(tqdm):
    # tqdm's monitor thread outlives every bar (it only stops at exit); with miniters=1 each update
    # checks the time itself, so the monitor has nothing to do.
    monitor_interval = 0


class _BarPhase:
    def __init__(self, bar: _Bar) -> None:
        self.bar = bar
        self.lock = threading.Lock()  # tqdm's counter is not thread-safe; a replay advances from each lane

    def advance(self, count: int = 1) -> None:
        with self.lock:
            self.bar.update(count)

    def plan(self, total: int) -> None:
        with self.lock:
            self.bar.total = total
            self.bar.refresh()

    def reached(self, done: int, total: int) -> None:
        with self.lock:
            self.bar.total = total
            self.bar.update(done - self.bar.n)


class _Lines:
    """Plain lines: `bench: closed c=64 1200 sagas, 80/s` or `replay: ... 1200/5000 events, 310/s`."""

    def __init__(self, title: str, unit: str, total: int | None, stream: TextIO, clock: Callable[[], float],
                 interval: float) -> None:
        self.title = title
        self.unit = unit
        self.total = total
        self.stream = stream
        self.clock = clock
        self.interval = interval
        self.done = 0
        self.began = self.last_line = clock()
        self.lock = threading.Lock()  # a replay advances from each partition's lane

    def advance(self, count: int = 1) -> None:
        with self.lock:
            self.done += count
            self._maybe_line()

    def plan(self, total: int) -> None:
        with self.lock:
            self.total = total

    def reached(self, done: int, total: int) -> None:
        with self.lock:
            self.done, self.total = done, total
            self._maybe_line()

    def finish(self, ending: str) -> None:
        with self.lock:
            self._line(f", {ending} {self.clock() - self.began:.1f} s")

    def _maybe_line(self) -> None:
        if self.clock() - self.last_line >= self.interval:
            self._line("")

    def _line(self, suffix: str) -> None:
        now = self.clock()
        self.last_line = now
        elapsed = now - self.began
        rate = self.done / elapsed if elapsed > 0 else 0.0
        count = f"{self.done}/{self.total}" if self.total is not None else str(self.done)
        # Flushed at once: a CI log (or `kubectl logs`) shows it while the phase goes on.
        self.stream.write(f"{self.title} {count} {self.unit}, {_rate(rate)}/s{suffix}\n")
        self.stream.flush()


def _sized(terminal: TextIO) -> bool:
    """Whether a terminal reports a size: tqdm draws nothing on one of 0 rows (a pty nobody sized, as
    under `script` or some `docker run -t`)."""
    try:
        size = os.get_terminal_size(terminal.fileno())
    except (OSError, ValueError):  # no file descriptor (a stream in a test): tqdm's default width
        return True
    return size.columns > 0 and size.lines > 0


def _rate(per_second: float) -> str:
    return f"{per_second:.0f}" if per_second >= 10 else f"{per_second:.1f}"
