"""Test-run stage: what every group gets, and the one way to run a command in the guest.

The pipeline owns the VM: it boots it, hands each group a `Guest` (the VM,
an SSH shell connected on first use, the run's artifacts directory) and
stops the VM. A group hands back a `GroupRun`: its TestResult and how it
`Ended`. `run_watched` runs a command over SSH while the serial console is
read without pause, so a kernel crash ends the command at once; a command
that outlives its timeout is a hang, and the guest's blocked tasks are
dumped (sysrq w) before the group returns. It never stops the VM.
"""
from __future__ import annotations

import dataclasses
import enum
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import ParamSpec

from harness.results import ktap
from harness.results.model import CrashReport, Status, TestResult
from harness.spec import Spec
from harness.vm import qemu
from harness.vm.console import Waited
from harness.vm.ssh import CommandResult, GuestShell

log = logging.getLogger("harness")
GUEST_DIR = "/tmp/harness"
DUMP_WAIT_S = 3  # for the sysrq dump to reach the console
COMMAND_SLACK_S = 5  # the console watch outlasts the SSH command's own timeout by this much

Vm = qemu.Vm[CrashReport]


class Ended(enum.Enum):
    """How a group (or a command in the guest) ended; anything but DONE stops the VM."""

    DONE = "done"  # it returned (passing or not); the guest is still usable
    CRASHED = "crashed"  # the kernel crashed, or QEMU exited
    HUNG = "hung"  # no end within the timeout


@dataclass(frozen=True)
class GroupRun:
    result: TestResult
    ended: Ended


class Guest:
    """The booted guest as the pipeline hands it to the groups."""

    def __init__(self, vm: Vm, spec: Spec, out: Path, connect: Callable[[], GuestShell]):
        self.vm, self.spec, self.out = vm, spec, out
        self._connect = connect
        self._shell: GuestShell | None = None

    @property
    def shell(self) -> GuestShell:
        """SSH into the guest, on first use (a group that reads only the console never does)."""
        if self._shell is None:
            self._shell = self._connect()
        return self._shell

    def push(self, local: Path, mode: int | None = None) -> str:
        """Copy a file to GUEST_DIR; returns its path in the guest."""
        self.shell.run(f"mkdir -p {GUEST_DIR}", timeout=30)
        remote = f"{GUEST_DIR}/{local.name}"
        self.shell.put(local, remote, mode=mode)
        return remote

    def close(self) -> None:
        if self._shell is not None:
            self._shell.close()


@dataclass(frozen=True)
class Watched:
    """A command run under watch: how it ended, its output, what the console showed."""

    ended: Ended
    command: CommandResult
    crashes: tuple[CrashReport, ...]  # crash reports that started while it ran
    dump: Path | None  # the blocked-task dump of a hang


def _dump_blocked_tasks(guest: Guest, name: str, since_line: int) -> Path:
    """sysrq w (blocked tasks) on a channel of its own; the console shows the dump."""
    try:
        guest.shell.run("echo w > /proc/sysrq-trigger", timeout=DUMP_WAIT_S)
    except Exception as e:  # noqa: BLE001 - a hung guest may refuse SSH too; keep going
        log.warning("%s: could not ask the guest for its blocked tasks: %s", name, e)
    guest.vm.console.drain(DUMP_WAIT_S)
    dump = guest.out / f"hang-{name}.txt"
    dump.write_text("\n".join(text for _, text in guest.vm.console.lines(since=since_line)) + "\n")
    return dump


def run_watched(guest: Guest, command: str, timeout: float,
                on_stdout: Callable[[bytes], None] | None = None, dump_as: str | None = None) -> Watched:
    """Run `command` over SSH while the console is read (and logged) without pause.

    A hang is dumped to OUT/hang-<dump_as>.txt when `dump_as` is given. After
    a crash the SSH command is abandoned (its connection closed), not waited for."""
    console = guest.vm.console
    since = console.line_count()
    dump = None
    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(guest.shell.run, command, timeout, on_stdout)
        try:
            waited = console.wait_for(None, timeout + COMMAND_SLACK_S, until=future.done).how
        except BaseException:  # Ctrl-C, SIGTERM: end the command's connection, never wait for it
            guest.shell.abandon()
            raise
        if waited in (Waited.CRASH, Waited.QEMU_EXITED):
            ended = Ended.CRASHED
        elif waited is Waited.TIMEOUT or future.result().timed_out:
            ended = Ended.HUNG
        else:
            ended = Ended.DONE
        if ended is Ended.HUNG and dump_as is not None:
            dump = _dump_blocked_tasks(guest, dump_as, since)
        if not future.done():
            guest.shell.abandon()  # the command's connection: the VM's owner stops the VM
        result = future.result()
    console.drain(0.2)  # what the kernel printed as the command ended
    return Watched(ended, result, tuple(console.crashes(since=since)), dump)


def not_run(name: str, why: str) -> TestResult:
    return TestResult(name=name, status=Status.ERROR, diagnostics=(why,))


def parse(lines: list[tuple[int, str]], name: str, where: str) -> TestResult:
    """A group's KTAP; no KTAP at all is an ERROR group that says where it looked."""
    try:
        return ktap.parse_ktap(lines, name)
    except ktap.KtapError:
        return TestResult(name, Status.ERROR, (f"no KTAP output in {where}",))


def blame_first_missing(group: TestResult, why: str, directive: str | None,
                        crash: CrashReport | None) -> TestResult:
    """The first test that never reported was the one running: it failed with `why`."""
    subtests, blamed = list(group.subtests), False
    for i, sub in enumerate(subtests):
        if sub.status is Status.ERROR and not blamed and any(d.startswith("missing") for d in sub.diagnostics):
            subtests[i] = dataclasses.replace(sub, status=Status.FAIL, directive=directive, crash=crash,
                                              diagnostics=(why,))
            blamed = True
    diagnostics = group.diagnostics + (() if blamed else (why,))
    return dataclasses.replace(group, status=Status.FAIL, subtests=tuple(subtests), crash=crash,
                               diagnostics=diagnostics)


def ended_badly(result: TestResult, watched: Watched, timeout: float) -> TestResult:
    """Blame the test that was running for the hang or crash that ended its group."""
    if watched.ended is Ended.HUNG:
        where = f"; blocked tasks in {watched.dump.name}" if watched.dump else ""
        return blame_first_missing(result, f"hang: no result within {timeout:.0f} s{where}", "TIMEOUT", None)
    crash = watched.crashes[0] if watched.crashes else None
    why = f"kernel crash: {crash.title} (console.log:{crash.first_line})" if crash else "QEMU exited"
    return blame_first_missing(result, why, None, crash)


P = ParamSpec("P")


def timed(run: Callable[P, GroupRun]) -> Callable[P, GroupRun]:
    """Record how long a group ran as the group's own duration."""
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> GroupRun:
        start = time.monotonic()
        ran = run(*args, **kwargs)
        took = round(time.monotonic() - start, 2)
        return GroupRun(dataclasses.replace(ran.result, duration_s=took), ran.ended)
    return wrapper
