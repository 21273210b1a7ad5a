"""Group kind `script`: your own program, pushed to the guest, run over SSH,
its stdout read as KTAP. The workload is one too (see workload.py).

Stdout is written to OUT/<group>.ktap as it arrives and echoed as live
progress; each leaf's duration is the time between its result line and the
one before. A crash or hang fails the test that was running (a crash: the
test whose `# Subtest:` header came last before the crash's first console line); so does a test
the program itself reports stuck in the kernel (`# TIMEOUT`): a hang too,
and an OOM kill on the console (the first test that never reported is named with it).
"""
from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from harness.errors import naming
from harness.groups.guest import (
    GUEST_DIR,
    Ended,
    GroupRun,
    Guest,
    ended_badly,
    oom_killed,
    parse,
    reported_hang,
    run_watched,
    stuck_in_kernel,
    timed,
)
from harness.kernel.build import KernelBuild
from harness.results import ktap, oops
from harness.results.model import Status, TestResult
from harness.spec import GroupEntry, ScriptGroup

log = logging.getLogger("harness")
LINE_START = 4096  # of a line still arriving, what Progress keeps: enough to know a result or a header


@dataclass(frozen=True)
class Program:
    """A guest program that prints KTAP on stdout, as a group runs it."""

    name: str  # the group's
    path: Path  # on the host
    timeout: float | None = None  # default: the group kind's time limit (the spec's timeouts.test)
    args: tuple[str, ...] = ()  # its command-line arguments
    cases: tuple[str, ...] = ()  # its tests' names in order, if it lists them: for those never reported


def pushes(program: Program) -> tuple[Path, ...]:
    return (program.path,)


def prepare(entry: GroupEntry, kernel: KernelBuild, log: IO[str], keep: Path) -> Program:
    assert isinstance(entry, ScriptGroup)  # the table dispatches mappings here, names elsewhere
    return Program(entry.name, entry.script, entry.timeout)


class Progress:
    """Takes a group's stdout as it arrives: to its .ktap file, with live progress
    on the terminal and the arrival time of each result line. Nothing else of
    the output stays in memory (a line's start at most, while it is incomplete)."""

    def __init__(self, group: str, path: Path, console_lines: Callable[[], int]):
        self.group, self.path, self.start = group, path, time.monotonic()
        self.file = path.open("wb", buffering=0)
        self.pending, self.arrivals, self.line_no = b"", dict[int, float](), 0
        self.console_lines = console_lines
        self.started: list[tuple[int, str]] = []  # (console line count, test) as each test began

    def __call__(self, chunk: bytes) -> None:
        with naming(self.path):  # a full disk names the file
            self.file.write(chunk)
        *lines, pending = (self.pending + chunk).split(b"\n")
        self.pending = pending[:LINE_START]
        for raw in lines:
            self.line_no += 1
            head = raw.lstrip()
            if head.startswith((b"ok ", b"not ok ")):
                now = self.arrivals[self.line_no] = time.monotonic() - self.start
                log.info("%s [%6.1f s] %s", self.group, now, head.decode(errors="replace").rstrip())
            elif head.startswith(b"# Subtest: "):  # which test runs now
                name = head.split(b": ", 1)[1].decode(errors="replace").strip()
                self.started.append((self.console_lines(), name))
                log.info("%s [%6.1f s] running %s", self.group, time.monotonic() - self.start, name)

    def close(self) -> None:
        self.file.close()


def with_durations(test: TestResult, arrivals: dict[int, float], since: float = 0.0) -> TestResult:
    """A leaf's duration is the time between the previous result line and its own."""
    subtests, previous = [], since
    for sub in test.subtests:
        sub = with_durations(sub, arrivals, previous)
        subtests.append(sub)
        if sub.line in arrivals:
            previous = arrivals[sub.line]
    own = arrivals.get(test.line) if test.line else None
    duration = round(own - since, 3) if own is not None and not test.subtests else test.duration_s
    return dataclasses.replace(test, subtests=tuple(subtests), duration_s=duration)


@timed
def run(guest: Guest, program: Program) -> GroupRun:
    """Push and run one program; its stdout is the KTAP."""
    remote = guest.push(program.path, mode=0o755)
    timeout = program.timeout or guest.timeout
    ktap_file = guest.out / f"{program.name}.ktap"
    progress = Progress(program.name, ktap_file, guest.vm.console.line_count)
    log.info("%s: running %s (timeout %.0f s)", program.name, program.path.name, timeout)
    try:
        line = " ".join((f"cd {GUEST_DIR} && {remote}", *program.args))
        watched = run_watched(guest, line, timeout, progress, dump_as=program.name)
    finally:
        progress.close()
    result = with_durations(parse(ktap.numbered_lines(ktap_file), program.name, ktap_file.name, program.cases),
                            progress.arrivals)
    if watched.ended is not Ended.DONE:
        return GroupRun(ended_badly(result, watched, timeout, progress.started), watched.ended)
    if kills := oops.oom_kills(guest.vm.console.lines(since=watched.since)):
        result = oom_killed(result, kills)
    if stuck_in_kernel(result):  # the program saw a test stuck in the kernel and stopped
        return GroupRun(reported_hang(guest, result, watched, program.name), Ended.HUNG)
    command = watched.command
    if command.status != 0 and result.status is Status.PASS:
        result = dataclasses.replace(result, status=Status.FAIL,
                                     diagnostics=result.diagnostics + (f"exit status {command.status}",))
    if command.stderr.strip():
        stderr = "stderr: " + command.stderr.strip()[-500:]
        result = dataclasses.replace(result, diagnostics=result.diagnostics + (stderr,))
    return GroupRun(result, Ended.DONE)
