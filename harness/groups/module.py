"""Group `module`: guest-tools/module/migrate_test.ko, built with kbuild against
the kernel under test, calls migrate_pages() directly. insmod runs over SSH;
the module's KTAP is read live from the console and cross-checked with dmesg;
then it is unloaded and the isolation counters are checked. A module that
does not build fails this group only."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import IO

from harness.errors import BuildError
from harness.groups.guest import Ended, GroupRun, Guest, ended_badly, parse, run_watched, timed, unless_unbuilt
from harness.guest import compile as compiler
from harness.kernel.build import KernelBuild
from harness.results import ktap
from harness.results.model import Status, TestResult, rollup
from harness.spec import GroupEntry
from harness.vm.ssh import GuestShell

log = logging.getLogger("harness")
NAME = "module"
ISOLATED = ("nr_isolated_anon", "nr_isolated_file")
TIMEOUT_S = 60  # insmod takes about 0.2 s under TCG: a minute without return is a hang
SUITE_END = r"^\S*(?:\[[^\]]*\] ?)*(?:not )?ok \d+ migrate_pages\b"  # the module's last KTAP line


def prepare(entry: GroupEntry, kernel: KernelBuild, log: IO[str], keep: Path) -> Path | BuildError:
    """The .ko, copied to `keep`: a parallel run may rebuild it in the shared
    build directory once the source lock is released."""
    try:
        return Path(shutil.copy2(compiler.module(kernel, log), keep))
    except BuildError as e:
        return e


def pushes(ko: Path | BuildError) -> tuple[Path, ...]:
    return (ko,) if isinstance(ko, Path) else ()


def regroup(name: str, subtests: list[TestResult], diagnostics: tuple[str, ...] = ()) -> TestResult:
    """A group whose status follows its leaves (see model.rollup)."""
    return TestResult(name, rollup(subtests) or Status.PASS, diagnostics, subtests=tuple(subtests))


def _check(name: str, ok: bool, diagnostic: str) -> TestResult:
    return TestResult(name, Status.PASS if ok else Status.FAIL, (diagnostic,))


def _isolated(shell: GuestShell) -> dict[str, int]:
    # stat_refresh folds the per-CPU deltas in, so the counters are exact
    output = shell.run("echo 1 > /proc/sys/vm/stat_refresh 2>/dev/null; cat /proc/vmstat", timeout=30).stdout
    values = dict(line.split() for line in output.splitlines() if line.split()[0] in ISOLATED)
    return {k: int(v) for k, v in values.items()}


@unless_unbuilt(NAME)
@timed
def run(guest: Guest, ko: Path) -> GroupRun:
    """insmod the test module, read its KTAP live from the console, cross-check
    it with dmesg over SSH, unload it, and check nothing stayed isolated."""
    shell, console, timeout = guest.shell, guest.vm.console, guest.timeout
    remote = guest.push(ko)
    before = _isolated(shell)
    since = console.line_count()
    log.info("module: loading %s (timeout %.0f s)", ko.name, timeout)
    watched = run_watched(guest, f"insmod {remote}", timeout, dump_as=NAME)
    command = watched.command
    if watched.ended is Ended.DONE and command.status != 0:
        message = (command.stderr or command.stdout).strip() or f"exit status {command.status}"
        return GroupRun(TestResult(NAME, Status.ERROR, (f"insmod failed: {message}",)), Ended.DONE)
    if watched.ended is Ended.DONE:  # insmod returned after init: the console may still be printing
        console.wait_for(SUITE_END, timeout=10)
    lines = console.lines(since=since)
    documents = ktap.split_documents(lines)
    result = parse(documents[0] if documents else lines, NAME, "the kernel log")
    if watched.ended is not Ended.DONE:
        return GroupRun(ended_badly(result, watched, timeout), watched.ended)
    dmesg = shell.run("dmesg", timeout=30).stdout.splitlines()
    dmesg_docs = ktap.split_documents(list(enumerate(dmesg, 1)))
    seen = parse(dmesg_docs[-1], NAME, "dmesg") if dmesg_docs else None
    same = seen is not None and [(t.name, t.status) for t in seen.leaves()] == \
        [(t.name, t.status) for t in result.leaves()]
    unload = shell.run(f"rmmod {ko.stem}", timeout=60)
    after = _isolated(shell)
    checks = [
        _check("console_matches_dmesg", same, "the results on the serial console and in dmesg "
               + ("agree" if same else "differ")),
        _check("unload", unload.status == 0, f"rmmod: {(unload.stderr or 'ok').strip()}"),
        _check("isolated_counters_restored", after == before, f"before load {before}, after unload {after}"),
    ]
    return GroupRun(regroup(NAME, list(result.subtests) + checks, result.diagnostics), Ended.DONE)
