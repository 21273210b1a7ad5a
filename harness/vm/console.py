"""VM stage: the serial console of a running QEMU, driven with pexpect.

Everything QEMU prints is appended to console.log the moment it arrives
(unbuffered), so a crash or a Ctrl-C keeps it. Waiting for a marker also
watches for kernel crashes and for QEMU exiting, so a panicked guest ends
the wait at once instead of at the timeout.
"""
from __future__ import annotations

import ctypes
import enum
import re
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

import pexpect

from harness.errors import naming

Line = tuple[int, str]  # (1-based line number in console.log, text)
C = TypeVar("C")  # what a crash report is: the results stage decides (harness/results/oops.py)

_Pattern = re.Pattern[str] | re.Pattern[bytes] | str | bytes | type[pexpect.EOF] | type[pexpect.TIMEOUT]
PR_SET_PDEATHSIG = 1
CRASH_GRACE_S = 5  # after a crash starts, how long its report may keep printing
# How often a wait asks its `until()`: every 10 ms in its first UNTIL_FAST_S (most commands end
# by then; at 0.2 s each lost up to 0.4 s), then every 100 ms (each ask searches what the console
# printed since the last match: a long, chatty command is not searched 100 times a second).
UNTIL_POLL_S, UNTIL_FAST_S = 0.01, 2.0
# Signals QEMU dies of by its own doing (a failed assertion, a bad access): a crash of QEMU, not a kill
SELF_INFLICTED = frozenset({signal.SIGABRT, signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE})
_CAUGHT_RE = re.compile(r"terminating on signal (\d+)")  # QEMU's own word on a SIGTERM/SIGINT/SIGHUP it caught


def signal_words(signum: int) -> str:
    """'signal 9, SIGKILL' (or 'signal N' for a number with no name), for messages."""
    try:
        return f"signal {signum}, {signal.Signals(signum).name}"
    except ValueError:
        return f"signal {signum}"


def note_between_boots(log_path: Path, text: str) -> None:
    """A line of the harness's own in console.log, between a QEMU that ended and the next boot."""
    with log_path.open("a") as f:
        f.write(f"\n[harness] {text}\n")


def _die_with_parent() -> None:
    """In the child, before exec: the kernel kills QEMU if the harness dies, even by SIGKILL."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class Waited(enum.Enum):
    """How a wait on the console ended."""

    MARKER = "marker"  # the marker line appeared, or `until()` came true
    CRASH = "crash"  # a kernel crash report started (QEMU may have exited since)
    QEMU_EXITED = "QEMU exited"  # without a crash report
    TIMEOUT = "timeout"


@dataclass(frozen=True)
class Wait:
    how: Waited
    seconds: float
    match: str = ""


@dataclass(frozen=True)
class CrashWatch(Generic[C]):
    """The crash table as the console needs it, handed in by the caller so
    that the VM stage does not depend on the results stage."""

    start: re.Pattern[str]  # the first line of any crash report (multiline)
    find: Callable[[list[Line]], list[C]]  # every crash report in numbered lines


class _Log:
    """console.log, appended to unbuffered; a failed write (a full disk) names the file."""

    def __init__(self, path: Path):
        self.path, self.file = path, path.open("ab", buffering=0)

    def write(self, data: bytes) -> None:
        with naming(self.path):
            self.file.write(data)

    def flush(self) -> None:
        """Nothing to flush: pexpect calls it."""

    def close(self) -> None:
        self.file.close()


class Console(Generic[C]):
    def __init__(self, argv: list[str], log_path: Path, crashes: CrashWatch[C]):
        self.log_path = log_path
        # console.log may hold an earlier boot of the same run: this one starts after it
        self.start_line = self.line_count()
        self.started_at = time.time()  # wall clock, as console.log's mtime
        self._log = _Log(log_path)
        self.child = pexpect.spawn(argv[0], argv[1:], timeout=None, maxread=65536,
                                   logfile=None, preexec_fn=_die_with_parent, echo=False)
        self.child.logfile_read = self._log
        assert self.child.pid is not None  # spawn() has forked
        self.pid: int = self.child.pid
        self._crashes = crashes
        # The console is read as bytes: the patterns are compiled to bytes too.
        self._crash = re.compile(crashes.start.pattern.encode(), re.MULTILINE)

    def wait_for(self, marker: str | None, timeout: float, until: Callable[[], bool] | None = None) -> Wait:
        """Read the console until a line matches `marker` or `until()` is true
        (MARKER); a crash or QEMU's exit ends the wait early.

        Reading never stops while a test runs over SSH, so a chatty guest can
        never block on a full serial line. After a crash starts, its report
        gets CRASH_GRACE_S to finish printing (a panic ends QEMU by itself).
        """
        start = time.monotonic()
        deadline = start + timeout
        patterns: list[_Pattern] = [self._crash, pexpect.EOF, pexpect.TIMEOUT]
        if marker is not None:
            patterns.append(re.compile(marker.encode(), re.MULTILINE))
        crashed = False
        while True:
            left = deadline - time.monotonic()
            fast = time.monotonic() - start < UNTIL_FAST_S
            poll = min(max(left, 0.01), UNTIL_POLL_S if fast else 0.1) if until else max(left, 0.05)
            index = self.child.expect(patterns, timeout=poll)
            elapsed = time.monotonic() - start
            if index == 0 and not crashed:  # before `until`: a panic also ends the SSH command it interrupts
                crashed = True
                deadline = min(deadline, time.monotonic() + CRASH_GRACE_S)
            if index == 3 or (until is not None and until() and not crashed):
                how = Waited.CRASH if crashed else Waited.MARKER
                after = self.child.after
                return Wait(how, elapsed, after.decode(errors="replace") if isinstance(after, bytes) else "")
            if index == 1:
                return Wait(Waited.CRASH if crashed else Waited.QEMU_EXITED, elapsed)
            elif index == 2 and time.monotonic() >= deadline:
                return Wait(Waited.CRASH if crashed else Waited.TIMEOUT, elapsed)

    def drain(self, seconds: float = 0.5) -> None:
        """Copy whatever QEMU still prints during `seconds` into console.log."""
        if not self.alive:
            return
        try:
            self.child.expect(pexpect.EOF, timeout=seconds)
        except pexpect.TIMEOUT:
            pass

    def lines(self, since: int = 0) -> list[Line]:
        """console.log so far as numbered lines after line `since`, for the parsers.

        QEMU's stdio keeps output post-processing on, so the guest's CRLF
        arrives as CR CR LF: every trailing CR is dropped here."""
        text = self.log_path.read_bytes().decode(errors="replace")
        numbered = enumerate(text.split("\n"), 1)
        return [(n, line.rstrip("\r")) for n, line in numbered if n > since]

    def crashes(self, since: int = 0) -> list[C]:
        """The crash reports that start after line `since`."""
        return self._crashes.find(self.lines(since))

    def line_count(self) -> int:
        """Complete lines in console.log so far: what comes next has a higher number."""
        return self.log_path.read_bytes().count(b"\n") if self.log_path.exists() else 0

    def tail(self, count: int = 25) -> str:
        return "\n".join(text for _, text in self.lines()[-count:])

    @property
    def silent_s(self) -> float:
        """Seconds since QEMU last printed anything (since it started, if nothing yet)."""
        return time.time() - max(self.log_path.stat().st_mtime, self.started_at)

    @property
    def alive(self) -> bool:
        return self.child.isalive()

    def killed_by(self) -> int | None:
        """The signal that ended QEMU from outside: one it died of, or one it
        caught and said so; None while it runs, or after an end of its own (an
        exit, or a crash: SELF_INFLICTED)."""
        if self.child.isalive():
            return None
        if self.child.signalstatus is not None:
            return None if self.child.signalstatus in SELF_INFLICTED else int(self.child.signalstatus)
        said = _CAUGHT_RE.search(self.tail(3))
        return int(said[1]) if said else None

    @property
    def crashed_itself(self) -> bool:
        """QEMU died of a SELF_INFLICTED signal (a failed assertion, a bad access)."""
        return not self.child.isalive() and self.child.signalstatus in SELF_INFLICTED

    def exit_note(self) -> str:
        """How QEMU ended, for a message: 'exit status N', or 'signal N, SIGX'; '' while it runs."""
        if self.child.isalive():
            return ""
        if self.child.signalstatus is not None:
            return signal_words(self.child.signalstatus)
        return f"exit status {self.child.exitstatus}"

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
