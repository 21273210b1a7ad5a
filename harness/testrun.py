"""Test-run stage: run each test group in the booted guest and collect its KTAP.

A script group is pushed over SFTP and run over SSH; its stdout (KTAP) is
written to OUT/<group>.ktap as it arrives and echoed as live progress. While
it runs the serial console is read without pause, so a kernel crash ends the
group at once, and a group that outlives its timeout is a hang: the guest's
blocked tasks are dumped (sysrq w) into OUT/hang-<group>.txt. Hands on one
TestResult per group plus how the group ended.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from harness.results import ktap, oops
from harness.results.model import CrashReport, Status, TestResult
from harness.spec import ScriptGroup
from harness.vm import qemu
from harness.vm.ssh import CommandResult, GuestShell

log = logging.getLogger("harness")
GUEST_DIR = "/tmp/harness"
DUMP_WAIT_S = 3  # for the sysrq dump to reach the console


@dataclass(frozen=True)
class GroupRun:
    result: TestResult
    ended: str  # "done", "crash" (kernel crashed; QEMU may be gone) or "hang"


class _Progress:
    """Collects a group's stdout: to its .ktap file, to the terminal, with arrival times."""

    def __init__(self, group: str, path: Path):
        self.group, self.file, self.start = group, path.open("wb", buffering=0), time.monotonic()
        self.pending, self.arrivals, self.line_no = b"", {}, 0

    def __call__(self, chunk: bytes) -> None:
        self.file.write(chunk)
        *lines, self.pending = (self.pending + chunk).split(b"\n")
        for raw in lines:
            self.line_no += 1
            now = time.monotonic() - self.start
            self.arrivals[self.line_no] = now
            text = raw.decode(errors="replace").rstrip()
            if text.lstrip().startswith(("ok ", "not ok ")):
                log.info("%s [%6.1f s] %s", self.group, now, text.strip())

    def close(self) -> None:
        self.file.close()


def _with_durations(test: TestResult, arrivals: dict[int, float], since: float = 0.0) -> TestResult:
    """A leaf's duration is the time between the previous result line and its own."""
    subtests, previous = [], since
    for sub in test.subtests:
        sub = _with_durations(sub, arrivals, previous)
        subtests.append(sub)
        if sub.line in arrivals:
            previous = arrivals[sub.line]
    own = arrivals.get(test.line) if test.line else None
    duration = round(own - since, 3) if own is not None and not test.subtests else test.duration_s
    return dataclasses.replace(test, subtests=tuple(subtests), duration_s=duration)


def _blame_first_missing(group: TestResult, why: str, directive: str | None,
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


def not_run(name: str, why: str) -> TestResult:
    return TestResult(name=name, status=Status.ERROR, diagnostics=(why,))


def _dump_blocked_tasks(vm: qemu.Vm, shell_factory, out: Path, group: str, since_line: int) -> Path:
    """sysrq w (blocked tasks) over a fresh SSH session; the console shows the dump."""
    try:
        with shell_factory() as shell:
            shell.run("echo w > /proc/sysrq-trigger", timeout=DUMP_WAIT_S)
    except Exception as e:  # noqa: BLE001 - a hung guest may refuse SSH too; keep going
        log.warning("%s: could not ask the guest for its blocked tasks: %s", group, e)
    vm.console.drain(DUMP_WAIT_S)
    dump = out / f"hang-{group}.txt"
    dump.write_text("\n".join(text for n, text in vm.console.lines() if n > since_line) + "\n")
    return dump


def run_script(vm: qemu.Vm, shell: GuestShell, group: ScriptGroup, out: Path, timeout: float,
               shell_factory) -> GroupRun:
    """Push and run one script group; watch the console while it runs."""
    shell.run(f"mkdir -p {GUEST_DIR}", timeout=30)
    remote = f"{GUEST_DIR}/{group.script.name}"
    shell.put(group.script, remote, mode=0o755)
    console_start = len(vm.console.lines())
    progress = _Progress(group.name, out / f"{group.name}.ktap")
    log.info("%s: running %s (timeout %.0f s)", group.name, group.script.name, timeout)
    dump = None
    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(shell.run, f"cd {GUEST_DIR} && {remote}", timeout, progress)
        watch = vm.console.wait_for(None, timeout + 5, until=future.done)
        if watch.kind == "marker" and future.result().timed_out:
            watch = dataclasses.replace(watch, kind="timeout")
        if watch.kind == "timeout":
            dump = _dump_blocked_tasks(vm, shell_factory, out, group.name, console_start)
        if watch.kind != "marker":
            vm.stop()  # a crashed or hung guest: the SSH command ends with the VM
        command: CommandResult = future.result()
    progress.close()
    lines = list(enumerate((out / f"{group.name}.ktap").read_text(errors="replace").splitlines(), 1))
    try:
        result = ktap.parse_ktap(lines, group.name)
    except ktap.KtapError:
        result = TestResult(group.name, Status.ERROR, ("no KTAP output",))
    result = _with_durations(result, progress.arrivals)
    if watch.kind == "marker":
        if command.status not in (0, None) and result.status is Status.PASS:
            result = dataclasses.replace(result, status=Status.FAIL,
                                         diagnostics=result.diagnostics + (f"exit status {command.status}",))
        if command.stderr.strip():
            stderr = "stderr: " + command.stderr.strip()[-500:]
            result = dataclasses.replace(result, diagnostics=result.diagnostics + (stderr,))
        return GroupRun(result, "done")
    if watch.kind == "timeout":
        why = f"hang: no result within {timeout:.0f} s; blocked tasks in {dump.name}"
        return GroupRun(_blame_first_missing(result, why, "TIMEOUT", None), "hang")
    crashes = [c for c in oops.find_crashes(vm.console.lines()) if c.first_line > console_start]
    crash = crashes[0] if crashes else None
    why = f"kernel crash: {crash.title} (console.log:{crash.first_line})" if crash else "QEMU exited"
    return GroupRun(_blame_first_missing(result, why, None, crash), "crash")
