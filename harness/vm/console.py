"""VM stage: the serial console of a running QEMU, driven with pexpect.

Everything QEMU prints is appended to console.log the moment it arrives
(unbuffered), so a crash or a Ctrl-C keeps it. Waiting for a marker also
watches for kernel crashes and for QEMU exiting, so a panicked guest ends
the wait at once instead of at the timeout.
"""
from __future__ import annotations

import ctypes
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pexpect

from harness.results.oops import CRASH_START

PR_SET_PDEATHSIG = 1
CRASH_GRACE_S = 5  # after a crash starts, how long its report may keep printing


def _die_with_parent() -> None:
    """In the child, before exec: the kernel kills QEMU if the harness dies, even by SIGKILL."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass(frozen=True)
class Wait:
    """How a wait ended: 'marker', 'crash', 'exit' (QEMU gone) or 'timeout'."""

    kind: str
    seconds: float
    match: str = ""


class Console:
    def __init__(self, argv: list[str], log_path: Path):
        self.log_path = log_path
        # console.log may hold an earlier boot of the same run: this one starts after it
        self.start_line = self.line_count()
        self._log = log_path.open("ab", buffering=0)
        self.child = pexpect.spawn(argv[0], argv[1:], timeout=None, maxread=65536,
                                   logfile=None, preexec_fn=_die_with_parent, echo=False)
        self.child.logfile_read = self._log
        self.pid = self.child.pid
        # The console is read as bytes: the patterns are compiled to bytes too.
        self._crash = re.compile(CRASH_START.pattern.encode(), re.MULTILINE)

    def wait_for(self, marker: str | None, timeout: float, until: Callable[[], bool] | None = None) -> Wait:
        """Read the console until a line matches `marker` or `until()` is true
        ('marker'); a crash or QEMU's exit ends the wait early.

        Reading never stops while a test runs over SSH, so a chatty guest can
        never block on a full serial line. After a crash starts, its report
        gets CRASH_GRACE_S to finish printing (a panic ends QEMU by itself).
        """
        start = time.monotonic()
        deadline = start + timeout
        patterns = [self._crash, pexpect.EOF, pexpect.TIMEOUT]
        if marker is not None:
            patterns.append(re.compile(marker.encode(), re.MULTILINE))
        crashed = False
        while True:
            left = deadline - time.monotonic()
            poll = min(max(left, 0.05), 0.2) if until else max(left, 0.05)
            index = self.child.expect(patterns, timeout=poll)
            elapsed = time.monotonic() - start
            if index == 3 or (until is not None and until() and not crashed):
                kind = "crash" if crashed else "marker"
                return Wait(kind, elapsed, self.child.after.decode(errors="replace") if index == 3 else "")
            if index == 0 and not crashed:
                crashed = True
                deadline = min(deadline, time.monotonic() + CRASH_GRACE_S)
            elif index == 1:
                return Wait("crash" if crashed else "exit", elapsed)
            elif index == 2 and time.monotonic() >= deadline:
                return Wait("crash" if crashed else "timeout", elapsed)

    def drain(self, seconds: float = 0.5) -> None:
        """Copy whatever QEMU still prints during `seconds` into console.log."""
        if not self.alive:
            return
        try:
            self.child.expect(pexpect.EOF, timeout=seconds)
        except pexpect.TIMEOUT:
            pass

    def lines(self) -> list[tuple[int, str]]:
        """console.log so far as numbered lines, for the parsers.

        QEMU's stdio keeps output post-processing on, so the guest's CRLF
        arrives as CR CR LF: every trailing CR is dropped here."""
        text = self.log_path.read_bytes().decode(errors="replace")
        return [(n, line.rstrip("\r")) for n, line in enumerate(text.split("\n"), 1)]

    def line_count(self) -> int:
        """Complete lines in console.log so far: what comes next has a higher number."""
        return self.log_path.read_bytes().count(b"\n") if self.log_path.exists() else 0

    def tail(self, count: int = 25) -> str:
        return "\n".join(text for _, text in self.lines()[-count:])

    @property
    def alive(self) -> bool:
        return self.child.isalive()

    def close(self) -> None:
        """Stop QEMU (SIGTERM, then SIGKILL) and close console.log."""
        try:
            if self.child.isalive():
                self.child.kill(signal.SIGTERM)
                deadline = time.monotonic() + 3
                while self.child.isalive() and time.monotonic() < deadline:
                    time.sleep(0.05)
                if self.child.isalive():
                    self.child.kill(signal.SIGKILL)
            self.child.close(force=True)
        finally:
            self._log.close()
