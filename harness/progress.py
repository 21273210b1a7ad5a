"""Progress of long work (the kernel build, extracting a source) on stderr.

On a terminal: one updating line drawn by `rich` (bar, done of total,
elapsed, time left). Elsewhere (a CI log, `| cat`): a plain `harness:` line
every 10 % or 30 s, with no control character. `Estimate` is the arithmetic.
"""
from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import IO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgress

log = logging.getLogger("harness")
PLAIN_EVERY_S = 30.0
PLAIN_EVERY = 10  # a plain line at each tenth of the total
KBUILD_STEP = re.compile(r"^  [A-Z][A-Z0-9_]* +\S")  # kbuild's quiet lines: "  CC      mm/migrate.o"


def clock_text(seconds: float) -> str:
    minutes, secs = divmod(int(seconds + 0.5), 60)
    return f"{minutes}:{secs:02d}"


@dataclass(frozen=True)
class Estimate:
    """`done` of `total` (None: unknown) after `elapsed` seconds."""

    done: int
    total: int | None
    elapsed: float

    @property
    def fraction(self) -> float | None:
        return min(self.done / self.total, 1.0) if self.total else None

    @property
    def left(self) -> float | None:
        """Seconds left at the rate so far; None before the first step or without a total."""
        if not self.total or not self.done:
            return None
        return self.elapsed * max(self.total - self.done, 0) / self.done

    def text(self, what: str, unit: str) -> str:
        parts = [f"{what}: {self.done}" + (f"/{self.total}" if self.total else "") + f" {unit}"]
        if self.fraction is not None:
            parts[0] += f" ({self.fraction:.0%})"
        parts.append(f"{clock_text(self.elapsed)} elapsed")
        if self.left is not None:
            parts.append(f"about {clock_text(self.left)} left")
        return ", ".join(parts)


class Progress:
    """`with Progress(what, total, unit) as p: p.update(done)` (or `p.line(text)`
    for each output line of a kbuild make, which counts its steps)."""

    def __init__(self, what: str, total: int | None, unit: str, stream: IO[str] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.what, self.total, self.unit, self.clock = what, total, unit, clock
        self.stream = stream or sys.stderr
        self.done = 0
        self._bar: RichProgress | None = None
        self._shown = (0.0, 0)  # (time, tenth of the total) of the last plain line

    def __enter__(self) -> Progress:
        self.start = self.clock()
        self._shown = (self.start, 0)
        if self.stream.isatty():
            self._bar = RichProgress(TextColumn(f"{self.what}:"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn(self.unit), TimeElapsedColumn(), TextColumn("elapsed,"),
                                     TimeRemainingColumn(), TextColumn("left"),
                                     console=Console(file=self.stream), transient=True)
            self._bar.start()
            self._task = self._bar.add_task(self.what, total=self.total)
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.stop()

    def estimate(self) -> Estimate:
        return Estimate(self.done, self.total, self.clock() - self.start)

    def update(self, done: int) -> None:
        self.done = done
        if self._bar is not None:
            self._bar.update(self._task, completed=done)
            return
        now, (shown_at, shown_tenth) = self.clock(), self._shown
        tenth = min(done, self.total) * PLAIN_EVERY // self.total if self.total else 0
        if now - shown_at >= PLAIN_EVERY_S or tenth > shown_tenth:
            self._shown = (now, tenth)
            log.info("%s", self.estimate().text(self.what, self.unit))

    def line(self, text: str) -> None:
        if KBUILD_STEP.match(text):
            self.update(self.done + 1)
