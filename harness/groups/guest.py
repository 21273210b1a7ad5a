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
import itertools
import logging
import re
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import ParamSpec, TypeVar

from harness.errors import BuildError, VmCrashed, VmKilled
from harness.guest.initramfs import MARKER
from harness.results import ktap, oops
from harness.results.model import CrashReport, Status, TestResult, rollup
from harness.results.report import failure, is_hang
from harness.spec import Spec
from harness.vm import qemu
from harness.vm.console import Console, Waited, signal_words
from harness.vm.ssh import CommandResult, GuestShell

log = logging.getLogger("harness")
GUEST_DIR = "/tmp/harness"
DUMP_WAIT_S = 3  # for the sysrq dump to reach the console
COMMAND_SLACK_S = 5  # the console watch outlasts the SSH command's own timeout by this much
SYNC_S = 2  # the longest wait for a command's end mark on the console (none comes after a crash or hang)

Vm = qemu.Vm[CrashReport]


class Ended(enum.Enum):
    """How a group (or a command in the guest) ended; anything but DONE stops the VM."""

    DONE = "done"  # it returned (passing or not); the guest is still usable
    CRASHED = "crashed"  # the kernel crashed, or QEMU exited
    HUNG = "hung"  # no end within the timeout
    KILLED = "killed"  # QEMU was killed from outside: no verdict on the kernel
    QEMU_CRASHED = "QEMU crashed"  # QEMU died of its own bug (SIGSEGV, SIGABRT, ...): no verdict either


@dataclass(frozen=True)
class GroupRun:
    result: TestResult
    ended: Ended


class Guest:
    """The booted guest as the pipeline hands it to the groups."""

    def __init__(self, vm: Vm, spec: Spec, out: Path, connect: Callable[[], GuestShell]):
        self.vm, self.spec, self.out = vm, spec, out
        self.timeout = spec.timeouts.test  # the running group's time limit: the pipeline sets it per group
        self._connect = connect
        self._shell: GuestShell | None = None

    @property
    def shell(self) -> GuestShell:
        """SSH into the guest, on first use (a group that reads only the console never does)."""
        if self._shell is None:
            self._shell = self._connect()
        return self._shell

    def push(self, local: Path, mode: int | None = None) -> str:
        """Copy a file to GUEST_DIR; returns its path in the guest. A file the
        initramfs holds already (the pipeline preloads what the groups push) is
        linked there instead: SFTP into a TCG guest moves about 1 MB/s."""
        remote = f"{GUEST_DIR}/{local.name}"
        preloaded = self.vm.image.preloaded.get(local)
        if preloaded is not None and mode in (None, 0o755):
            self.shell.run(f"mkdir -p {GUEST_DIR} && ln -sf {preloaded} {remote}", timeout=30)
            return remote
        self.shell.run(f"mkdir -p {GUEST_DIR}", timeout=30)
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
    since: int  # the console's line count when the command started
    killed_by: int | None = None  # the signal that killed QEMU from outside (Ended.KILLED)
    qemu_note: str = ""  # how QEMU ended by itself (Ended.QEMU_CRASHED): 'signal 11, SIGSEGV'


def dump_blocked_tasks(guest: Guest, name: str, since_line: int) -> Path:
    """sysrq w (blocked tasks) on a channel of its own; the console shows the dump."""
    try:
        guest.shell.run("echo w > /proc/sysrq-trigger", timeout=DUMP_WAIT_S)
    except Exception as e:  # noqa: BLE001 - a hung guest may refuse SSH too; keep going
        log.warning("%s: could not ask the guest for its blocked tasks: %s", name, e)
    guest.vm.console.drain(DUMP_WAIT_S)
    dump = guest.out / f"hang-{name}.txt"
    dump.write_text("\n".join(text for _, text in guest.vm.console.lines(since=since_line)) + "\n")
    return dump


_SYNC_MARKS = itertools.count(1)


def _then_mark(command: str, n: int) -> str:
    """`command`, then a line to the kernel's log when it has ended (its exit status kept)."""
    return f"( {command}\n); rc=$?; echo '{MARKER}: command {n} ended' > /dev/kmsg; exit $rc"


def _until_mark(console: Console[CrashReport], n: int, since: int) -> None:
    """Wait until the console shows command n's end: the kernel prints its log in order, so
    everything it printed while the command ran is in console.log then (a fixed wait of
    0.2 s stood for it before, twice per run, and proved nothing). A mark that does not
    come within SYNC_S (the command's shell was killed) is not waited for longer."""
    mark = f"{MARKER}: command {n} ended"
    if not any(mark in text for _, text in console.lines(since=since)):
        console.wait_for(re.escape(mark), SYNC_S)


def run_watched(guest: Guest, command: str, timeout: float,
                on_stdout: Callable[[bytes], None] | None = None, dump_as: str | None = None) -> Watched:
    """Run `command` over SSH while the console is read (and logged) without pause.

    A hang is dumped to OUT/hang-<dump_as>.txt when `dump_as` is given. After
    a crash the SSH command is abandoned (its connection closed), not waited for."""
    console = guest.vm.console
    since = console.line_count()
    dump = None
    synced = next(_SYNC_MARKS)
    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(guest.shell.run, _then_mark(command, synced), timeout, on_stdout)
        try:
            waited = console.wait_for(None, timeout + COMMAND_SLACK_S, until=future.done).how
        except BaseException:  # Ctrl-C, SIGTERM: end the command's connection, never wait for it
            guest.shell.abandon()
            raise
        if waited is Waited.MARKER:  # the command ended: what the kernel printed before it ended
            _until_mark(console, synced, since)
        else:  # a crash or a hang: what comes in a moment
            console.drain(0.2)
        crashes = tuple(console.crashes(since=since))
        if (killed_by := console.killed_by()) is not None:
            ended = Ended.KILLED
        elif console.crashed_itself:
            ended = Ended.QEMU_CRASHED
        elif crashes and console.alive and all(oops.is_hung_task(c) for c in crashes):
            ended = Ended.HUNG  # the hung-task detector saw a task blocked in the kernel
        # A command can end because the kernel died under it before the console showed it.
        elif waited in (Waited.CRASH, Waited.QEMU_EXITED) or crashes or not console.alive:
            ended = Ended.CRASHED
        elif waited is Waited.TIMEOUT or future.result().timed_out:
            ended = Ended.HUNG
        else:
            ended = Ended.DONE
        if ended is Ended.HUNG and dump_as is not None:
            dump = dump_blocked_tasks(guest, dump_as, since)
        if not future.done():
            guest.shell.abandon()  # the command's connection: the VM's owner stops the VM
        result = future.result()
    note = console.exit_note() if ended is Ended.QEMU_CRASHED else ""
    return Watched(ended, result, tuple(console.crashes(since=since)), dump, since, killed_by, note)


def not_run(name: str, why: str) -> TestResult:
    return TestResult(name=name, status=Status.ERROR, diagnostics=(why,))


def parse(lines: Iterable[tuple[int, str]], name: str, where: str, names: Sequence[str] = ()) -> TestResult:
    """A group's KTAP; no KTAP at all is an ERROR group that says where it looked
    (and where to read the diagnostics a test had too many of). `names`: its
    tests' names in order, for those that never reported."""
    try:
        return ktap.parse_ktap(lines, name, where, names)
    except ktap.KtapError:
        return TestResult(name, Status.ERROR, (f"no KTAP output in {where}",))


def _never_reported(test: TestResult) -> bool:
    return test.status is Status.ERROR and any(d.startswith("missing") for d in test.diagnostics)


def _stopped(test: TestResult, blamed: str, how: str) -> TestResult:
    """A test that never reported because the kernel stopped at `blamed`: not run, and why."""
    return dataclasses.replace(test, diagnostics=(f"not run: {blamed} {how}",))


Blame = tuple[str, CrashReport | None]  # why a test failed, the crash that ended it


def blame(group: TestResult, blamed: dict[str | None, Blame], directive: str | None,
          how: str = "crashed the kernel") -> TestResult:
    """Each test named in `blamed` failed for its reason (the key None: the
    first test that never reported, which was the one running); the tests
    never reported after the first one blamed were not run because of it.
    Tests are leaves, in order, at any depth; a suite above a failed leaf fails."""
    left, first = dict(blamed), list[str]()

    def mark(test: TestResult) -> TestResult:
        if test.subtests:
            subtests = tuple(mark(sub) for sub in test.subtests)
            failed = any(sub.status is Status.FAIL for sub in subtests)
            return dataclasses.replace(test, subtests=subtests, status=Status.FAIL if failed else test.status)
        key = test.name if test.name in left else None if None in left and _never_reported(test) else ""
        if key != "":
            why, crash = left.pop(key)
            said = test.diagnostics if test.line is not None else ()
            first.append(test.name)
            return dataclasses.replace(test, status=Status.FAIL, directive=directive or test.directive,
                                       crash=crash, diagnostics=(why, *said))
        return _stopped(test, first[0], how) if first and _never_reported(test) else test

    marked = mark(group)
    crash = next((c for _, c in blamed.values() if c), None)
    diagnostics = group.diagnostics + tuple(why for why, _ in left.values())  # no test to pin them on
    return dataclasses.replace(marked, status=Status.FAIL, crash=crash, diagnostics=diagnostics)


def running_at(started: Sequence[tuple[int, str]], line: int) -> str | None:
    """The test that was running at console line `line`: the last one started
    before it (`started`: the console's line count as each test began, its name)."""
    return next((name for count, name in reversed(started) if count < line), None)


def ended_badly(result: TestResult, watched: Watched, timeout: float,
                started: Sequence[tuple[int, str]] = ()) -> TestResult:
    """Blame the test that was running for the hang or crash that ended its
    group: each crash goes to the test running when it began (from `started`),
    else to the first test that never reported. When QEMU was killed from
    outside, no test is blamed: those that never reported are errors."""
    if watched.killed_by is not None:
        return unfinished(result, f"not run: {killed(watched.killed_by, f'group {result.name}')}")
    if watched.ended is Ended.QEMU_CRASHED:
        return unfinished(result, f"not run: {qemu_crashed(watched.qemu_note, f'group {result.name}')}")
    if watched.ended is Ended.HUNG:
        where = f"; blocked tasks in {watched.dump.name}" if watched.dump else ""
        said = (f"{watched.crashes[0].title} (console.log:{watched.crashes[0].first_line})" if watched.crashes
                else f"no result within {timeout:.0f} s")
        return blame(result, {None: (f"hang: {said}{where}", None)}, "TIMEOUT", "hung the kernel")
    if not watched.crashes:
        return blame(result, {None: ("QEMU exited", None)}, None)
    blamed: dict[str | None, Blame] = {}
    for crash in watched.crashes:
        blamed.setdefault(running_at(started, crash.first_line),
                          (f"kernel crash: {crash.title} (console.log:{crash.first_line})", crash))
    return blame(result, blamed, None)


def killed(signum: int, during: str) -> str:
    """'QEMU was killed (signal 9, SIGKILL) during `during`'."""
    return f"QEMU was killed ({signal_words(signum)}) during {during}"


def qemu_crashed(note: str, during: str) -> str:
    """'QEMU itself crashed (signal 11, SIGSEGV) during `during`'."""
    return f"QEMU itself crashed ({note}) during {during}"


def qemu_crash_error(note: str, during: str, more: str = "") -> VmCrashed:
    """The error of a QEMU that crashed by itself while `during` ran (exit 2)."""
    return VmCrashed(f"{qemu_crashed(note, during)}: an infrastructure failure, not a verdict on the kernel{more}")


def qemu_killed(signum: int, during: str, more: str = "") -> VmKilled:
    """The error of a QEMU killed from outside by `signum` while `during` ran (exit 2)."""
    return VmKilled(f"{killed(signum, during)}, from outside the harness (a user, the host's OOM killer, "
                    f"a CI job's time limit): an infrastructure failure, not a verdict on the kernel{more}")


def unfinished(group: TestResult, why: str) -> TestResult:
    """The tests of `group` that never reported are errors saying `why`; the group rolls up again."""
    def mark(test: TestResult) -> TestResult:
        if test.subtests:
            subtests = tuple(mark(sub) for sub in test.subtests)
            return dataclasses.replace(test, subtests=subtests, status=rollup(subtests) or test.status)
        return dataclasses.replace(test, diagnostics=(why,)) if _never_reported(test) else test
    marked = mark(group)
    return dataclasses.replace(marked, diagnostics=(*group.diagnostics, why)) if marked.subtests else \
        dataclasses.replace(marked, status=Status.ERROR, diagnostics=(why,))


def oom_killed(result: TestResult, kills: Sequence[oops.OomKill]) -> TestResult:
    """The OOM killer ended processes while a group ran: the first test that
    never reported was running then (the rest were not run); if every test
    reported, the group says so all the same."""
    why = f"killed by the OOM killer: {'; '.join(map(str, kills))}"
    if not any(_never_reported(leaf) for leaf in result.leaves()):
        return dataclasses.replace(result, diagnostics=(*result.diagnostics, why))
    return blame(result, {None: (why, None)}, None, "was running when the OOM killer ended the program")


def stuck_in_kernel(result: TestResult) -> TestResult | None:
    """The test that said it is stuck in the kernel (`not ok N name # TIMEOUT ...`), if one did."""
    return next((leaf for leaf in result.leaves() if is_hang(leaf)), None)


def reported_hang(guest: Guest, result: TestResult, watched: Watched, name: str) -> TestResult:
    """A program reported a test stuck in the kernel and stopped: the kernel is
    wedged. Dump its blocked tasks; the tests it never ran were not run because of it."""
    return stopped_by_hang(result, dump_blocked_tasks(guest, name, watched.since).name)


def stopped_by_hang(result: TestResult, dump: str) -> TestResult:
    """The stuck test names the blocked-task dump; the tests never reported were not run."""
    hung = stuck_in_kernel(result)
    assert hung is not None
    how = f"hung the kernel ({(hung.directive or '')[len('TIMEOUT'):].strip() or 'TIMEOUT'})"

    def mark(test: TestResult) -> TestResult:
        if test is hung:
            return dataclasses.replace(test, diagnostics=test.diagnostics + (f"blocked tasks in {dump}",))
        if _never_reported(test):
            return _stopped(test, hung.name, how)
        return dataclasses.replace(test, subtests=tuple(mark(sub) for sub in test.subtests))
    return mark(result)


def stop_reason(group: TestResult, ended: Ended) -> str:
    """Why the groups after `group` did not run (it crashed or hung the kernel)."""
    blamed = next((leaf for leaf in group.leaves() if leaf.status is Status.FAIL and (leaf.crash or is_hang(leaf))),
                  None)
    what = f": {blamed.name}: {failure(blamed)}" if blamed else ""
    return f"not run: group {group.name} {'hung' if ended is Ended.HUNG else 'crashed'} the kernel{what}"


P = ParamSpec("P")


def timed(run: Callable[P, GroupRun]) -> Callable[P, GroupRun]:
    """Record how long a group ran as the group's own duration."""
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> GroupRun:
        start = time.monotonic()
        ran = run(*args, **kwargs)
        took = round(time.monotonic() - start, 2)
        return GroupRun(dataclasses.replace(ran.result, duration_s=took), ran.ended)
    return wrapper


A = TypeVar("A")
Run = Callable[[Guest, A], GroupRun]


def unless_unbuilt(name: str) -> Callable[[Run[A]], Run[A | BuildError]]:
    """A group's run whose asset may be the BuildError of its prepare: that fails the group, not the run."""
    def decorate(run: Run[A]) -> Run[A | BuildError]:
        def wrapper(guest: Guest, asset: A | BuildError) -> GroupRun:
            if isinstance(asset, BuildError):
                return GroupRun(not_run(name, str(asset)), Ended.DONE)
            return run(guest, asset)
        return wrapper
    return decorate
