"""Group `boot`: the boot checks init ran (guest-tools/init/boot-checks.sh), read
from the serial console: NUMA nodes, each node's memory and CPUs, swap, as the
spec promised them. A crash during the boot fails this group."""
from __future__ import annotations

from pathlib import Path
from typing import IO

from harness.groups.guest import Ended, GroupRun, Guest, not_run
from harness.kernel.build import KernelBuild
from harness.results import ktap
from harness.results.model import CrashReport, Status, TestResult
from harness.spec import GroupEntry
from harness.vm.console import Line, Waited


def prepare(entry: GroupEntry, kernel: KernelBuild, log: IO[str], keep: Path) -> None:
    """Nothing to build: the checks are in the initramfs."""


def group_from_console(lines: list[Line], name: str) -> TestResult | None:
    """The KTAP document on the console that says '# Subtest: NAME', parsed."""
    for document in ktap.split_documents(lines):
        if any(ktap.strip_console_prefix(text).strip() == f"# Subtest: {name}" for _, text in document):
            return ktap.parse_ktap(document, name)
    return None


def attach_crashes(group: TestResult, crashes: list[CrashReport]) -> TestResult:
    """A crash fails the group that was running; it is kept in its diagnostics."""
    if not crashes:
        return group
    titles = tuple(f"kernel crash: {c.title} (console.log:{c.first_line})" for c in crashes)
    status = Status.ERROR if group.status is Status.ERROR else Status.FAIL
    return TestResult(group.name, status, group.diagnostics + titles, group.directive, group.subtests,
                      group.duration_s, crashes[0], group.line)


def _result(guest: Guest) -> TestResult:
    vm = guest.vm
    group = group_from_console(vm.console.lines(since=vm.console.start_line), "boot")
    if vm.ready and group is not None:
        return group
    why = {Waited.CRASH: "the kernel crashed during boot",
           Waited.QEMU_EXITED: f"QEMU exited during boot ({vm.console.exit_note()})",
           Waited.TIMEOUT: f"the guest was not ready within {guest.spec.timeouts.boot:.0f} s",
           }.get(vm.boot_ended.how, "no boot checks printed")
    if group is None:
        return not_run("boot", why)
    return TestResult(group.name, Status.ERROR, group.diagnostics + (why,), group.directive, group.subtests,
                      line=group.line)


def run(guest: Guest, asset: None) -> GroupRun:
    """A QEMU killed from outside during boot ends the run as KILLED: no verdict on the kernel."""
    console = guest.vm.console
    crashes = console.crashes(since=console.start_line)
    ended = Ended.KILLED if not guest.vm.ready and console.killed_by() is not None else Ended.DONE
    return GroupRun(attach_crashes(_result(guest), crashes), ended)
