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
        self._log = log_path.open("ab", buffering=0)
        self.child = pexpect.spawn(argv[0], argv[1:], timeout=None, maxread=65536,
                                   logfile=None, preexec_fn=_die_with_parent, echo=False)
        self.child.logfile_read = self._log
        self.pid = self.child.pid
        # The console is read as bytes: the patterns are compiled to bytes too.
        self._crash = re.compile(CRASH_START.pattern.encode(), re.MULTILINE)

    def wait_for(self, marker: str, timeout: float) -> Wait:
        """Wait for a line matching `marker`; a crash or QEMU's exit ends it early.

        After a crash starts, the report is given CRASH_GRACE_S to finish
        printing (a panic then ends QEMU by itself: -no-reboot, panic=-1).
        """
        start = time.monotonic()
        deadline = start + timeout
        patterns = [re.compile(marker.encode(), re.MULTILINE), self._crash, pexpect.EOF, pexpect.TIMEOUT]
        crashed = False
        while True:
            left = deadline - time.monotonic()
            index = self.child.expect(patterns, timeout=max(left, 0.1))
            elapsed = time.monotonic() - start
            if index == 0:
                return Wait("crash" if crashed else "marker", elapsed, self.child.after.decode(errors="replace"))
            if index == 1 and not crashed:
                crashed = True
                deadline = min(deadline, time.monotonic() + CRASH_GRACE_S)
            elif index == 2:
                return Wait("crash" if crashed else "exit", elapsed)
            elif index == 3:
                return Wait("crash" if crashed else "timeout", elapsed)

    def send(self, text: str) -> None:
        self.child.send(text)

    def drain(self, seconds: float = 0.5) -> None:
        """Copy whatever QEMU still prints during `seconds` into console.log."""
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
