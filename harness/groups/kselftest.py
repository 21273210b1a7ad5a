"""Group `kselftest-mm`: the kernel's own mm selftests (tools/testing/selftests/mm,
or .../vm before 6.3), built from the tree under test (harness/guest/selftests.py)
and run one by one over SSH, each under the spec's per-test timeout.

A spec names the selftests: `kselftest-mm` runs the default set (the
migration-related ones), `{kselftest-mm: [migration, hmm, ksm_numa, mremap_test]}`
chooses. A name is a row of SELFTESTS, or any other selftest binary of the
tree's directory, run without arguments. What a selftest needs from the
machine is provided first: hugepages reserved for the hugetlb cases, and the
test module it drives (test_hmm.ko for hmm-tests) loaded from the same build.

Output is read as TAP when it is TAP (kselftest_harness: `migration`,
`hmm-tests`): one result per case, `kselftest-mm.migration.private_anon`,
skips with their reasons. Otherwise the exit status is the result (0 ok,
4 = KSFT_SKIP skip, else fail) and stdout its diagnostics.
"""
from __future__ import annotations

import dataclasses
import logging
import re
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from harness.errors import BuildError
from harness.groups.guest import (
    GUEST_DIR,
    Ended,
    GroupRun,
    Guest,
    ended_badly,
    not_run,
    run_watched,
    timed,
    unless_unbuilt,
)
from harness.groups.module import regroup
from harness.groups.script import Progress, with_durations
from harness.guest import selftests
from harness.kernel.build import KernelBuild
from harness.results import ktap
from harness.results.model import Status, TestResult
from harness.spec import ChosenTests, GroupEntry

log = logging.getLogger("harness")
NAME = "kselftest-mm"
KSFT_SKIP = 4
HUGEPAGES = 32  # reserved while the group runs (64 MiB of 2 MiB pages): the hugetlb cases take a few
KEEP_LINES = 40  # of a plain-text selftest's output, as its diagnostics


@dataclass(frozen=True)
class KnownBug:
    """A case of the selftest that fails for a bug of the selftest itself, on
    trees whose copy of its source lacks the upstream fix: an expected failure."""

    case: str
    fixed_by: str  # text the fixed source contains
    why: str


@dataclass(frozen=True)
class Selftest:
    """How to run one selftest a spec can name."""

    binary: str  # the Makefile target in the selftest directory
    runs: tuple[tuple[str, str], ...] = (("", ""),)  # (case name, arguments); "" = the binary's own cases
    module: str | None = None  # a test module of the kernel build to load first, as its test script does
    known_bugs: tuple[KnownBug, ...] = ()


SELFTESTS = {
    "migration": Selftest("migration", known_bugs=(KnownBug(
        "shared_anon", "MAX_RETRIES",
        "this migration.c fails on the first move_pages() that finds the page busy (a racing fault holds "
        "a reference); upstream retries since 'selftests/mm: Relax test to fail after 100 migration "
        "failures' (2024)"),)),
    "hmm": Selftest("hmm-tests", module="lib/test_hmm.ko"),  # test_hmm.sh smoke: device-private only
    "ksm_numa": Selftest("ksm_tests", runs=(("merge_across_nodes", "-N -m 1"),
                                            ("no_merge_across_nodes", "-N -m 0"))),  # as run_vmtests.sh
}
DEFAULT = ("migration", "hmm", "ksm_numa")


def selftest(name: str) -> Selftest:
    return SELFTESTS.get(name) or Selftest(name)


@dataclass(frozen=True)
class Prepared:
    tests: tuple[str, ...]
    built: selftests.Built
    modules: tuple[Path, ...]
    known_bugs: tuple[tuple[str, KnownBug], ...] = ()  # (selftest, bug) that this tree's sources have


def known_bugs(tree: Path, directory: str, tests: tuple[str, ...]) -> tuple[tuple[str, KnownBug], ...]:
    """The known selftest bugs the tree's copy of each selftest still has."""
    return tuple((test, bug) for test in tests for bug in selftest(test).known_bugs
                 if bug.fixed_by not in (tree / directory / f"{selftest(test).binary}.c").read_text(errors="replace"))


def expect_known_bugs(name: str, result: TestResult, bugs: tuple[tuple[str, KnownBug], ...]) -> TestResult:
    """A failed case with a known selftest bug is an expected failure, with the bug as its reason."""
    why = {bug.case: bug.why for test, bug in bugs if test == name}
    subtests = tuple(dataclasses.replace(s, status=Status.XFAIL, directive=f"XFAIL {why[s.name]}")
                     if s.name in why and s.status is Status.FAIL else s for s in result.subtests)
    if subtests == result.subtests:
        return result
    return dataclasses.replace(regroup(name, list(subtests)), diagnostics=result.diagnostics, line=result.line,
                               duration_s=result.duration_s)


def prepare(entry: GroupEntry, kernel: KernelBuild, build_log: IO[str], keep: Path) -> Prepared | BuildError:
    """Build the chosen selftests and copy them (and their modules) to `keep`;
    a selftest that does not build fails this group only."""
    tests = entry.tests if isinstance(entry, ChosenTests) else DEFAULT
    chosen = [selftest(t) for t in tests]
    try:
        built = selftests.build(kernel, tuple(dict.fromkeys(s.binary for s in chosen)), build_log, keep)
        modules = tuple(selftests.module(kernel, s.module, keep) for s in chosen if s.module)
    except BuildError as e:
        return e
    return Prepared(tests, built, modules, known_bugs(kernel.source.tree, built.directory, tests))


def _strip(result: TestResult, prefix: str) -> TestResult:
    """kselftest_harness names a case FIXTURE.[VARIANT.]TEST; the fixture
    named like the selftest is not repeated in its results."""
    name = result.name.removeprefix(prefix) if result.name.startswith(prefix) else result.name
    return dataclasses.replace(result, name=name, subtests=tuple(_strip(s, prefix) for s in result.subtests))


_HARNESS_SKIP = re.compile(r"^\s*SKIP\s{2,}(.+)$")  # kselftest_harness's own log line for SKIP()


def _skipped_in_setup(result: TestResult) -> TestResult:
    """Older kselftest_harness (6.1) reports `ok` for a case whose fixture setup
    called SKIP(exit(0), ...), e.g. hmm-tests without device-coherent memory;
    its log line (stderr, merged into stdout) says it did not run."""
    if result.subtests:
        return dataclasses.replace(result, subtests=tuple(_skipped_in_setup(s) for s in result.subtests))
    reason = next((m[1].strip() for d in result.diagnostics if (m := _HARNESS_SKIP.match(d))), None)
    if result.status is not Status.PASS or reason is None or result.directive:
        return result
    return dataclasses.replace(result, status=Status.SKIP, directive=f"SKIP {reason}")


# kselftest_harness's progress lines, which say nothing a result does not
_HARNESS_CHATTER = re.compile(
    r"^(?:Starting \d+ tests from \d+ test cases\.|\s*RUN\s{2,}\S+ \.\.\.|\s*(?:OK|FAIL)\s{2,}\S+)$")


def _quiet(result: TestResult) -> TestResult:
    return dataclasses.replace(result, subtests=tuple(_quiet(s) for s in result.subtests),
                               diagnostics=tuple(d for d in result.diagnostics if not _HARNESS_CHATTER.match(d)))


def is_tap(lines: list[tuple[int, str]]) -> bool:
    return any(re.match(r"^\s*K?TAP version \d+", text) for _, text in lines)


def from_exit(case: str, status: int, lines: list[tuple[int, str]], command: str) -> TestResult:
    """A plain-text selftest: its exit status is its result (kselftest.h's KSFT_* codes)."""
    output = tuple(text for _, text in lines if text.strip())[-KEEP_LINES:]
    if status == 0:
        return TestResult(case, Status.PASS, output)
    if status == KSFT_SKIP:
        why = output[-1].strip() if output else "no reason given"
        return TestResult(case, Status.SKIP, output, directive=f"SKIP {why}")
    return TestResult(case, Status.FAIL, output + (f"{command}: exit status {status}",))


def result_of(name: str, case: str, status: int, lines: list[tuple[int, str]], command: str) -> TestResult:
    """One run of a selftest as a result: its TAP cases, or one case from its exit status."""
    if not is_tap(lines):
        return from_exit(case or name, status, lines, command)
    parsed = _quiet(_skipped_in_setup(_strip(ktap.parse_ktap(lines, case or name), f"{name}.")))
    if status not in (0, KSFT_SKIP) and not parsed.status.is_failure:
        parsed = dataclasses.replace(parsed, status=Status.FAIL,
                                     diagnostics=parsed.diagnostics + (f"{command}: exit status {status}",))
    return parsed


def flatten(name: str, runs: list[TestResult]) -> TestResult:
    """A selftest of one run is that run (its cases, or itself a case); several runs are one case each."""
    if len(runs) == 1:
        return dataclasses.replace(runs[0], name=name)
    return regroup(name, runs)


def setup_command(modules: list[str]) -> str:
    """Reserve hugepages (remembering the old count) and load the test modules."""
    loads = "".join(f" && insmod {shlex.quote(m)}" for m in modules)
    return (f"cat /proc/sys/vm/nr_hugepages > {GUEST_DIR}/nr_hugepages.old && "
            f"echo {HUGEPAGES} > /proc/sys/vm/nr_hugepages && "
            f"test $(cat /proc/sys/vm/nr_hugepages) -ge {HUGEPAGES // 2}{loads}")


def teardown_command(modules: list[str]) -> str:
    unloads = "".join(f"rmmod {Path(m).stem}; " for m in modules)
    return f"{unloads}cat {GUEST_DIR}/nr_hugepages.old > /proc/sys/vm/nr_hugepages"


def _run_one(guest: Guest, test: str, case: str, command: str) -> tuple[TestResult, Ended]:
    """One run of a selftest under watch; its output (stderr merged, so each
    message stands next to its case) lands in OUT/kselftest-mm.TEST[.CASE].log."""
    label, timeout = ".".join(filter(None, (NAME, test, case))), guest.spec.timeouts.test
    path = guest.out / f"{label}.log"
    progress = Progress(label, path, guest.vm.console.line_count)
    log.info("%s: %s (timeout %.0f s)", label, command, timeout)
    start = time.monotonic()
    try:
        watched = run_watched(guest, f"cd {GUEST_DIR} && {command} 2>&1", timeout, progress, dump_as=label)
    finally:
        progress.close()
    lines = list(enumerate(path.read_text(errors="replace").splitlines(), 1))
    status = watched.command.status if watched.command.status is not None else -1
    result = with_durations(result_of(test, case, status, lines, command), progress.arrivals)
    if not result.subtests:
        result = dataclasses.replace(result, duration_s=round(time.monotonic() - start, 2))
    if watched.ended is not Ended.DONE:
        result = ended_badly(result, watched, timeout)
    return result, watched.ended


@unless_unbuilt(NAME)
@timed
def run(guest: Guest, prepared: Prepared) -> GroupRun:
    """Push the selftests, provide what they need, run each; a crash or hang ends the group."""
    for path in prepared.built.binaries + prepared.modules:
        guest.push(path, mode=0o755)
    modules = [f"{GUEST_DIR}/{m.name}" for m in prepared.modules]
    setup = guest.shell.run(setup_command(modules), timeout=120)
    if setup.status != 0:
        why = f"the guest could not be set up for the selftests: {(setup.stderr or setup.stdout).strip()}"
        return GroupRun(not_run(NAME, why), Ended.DONE)
    results: list[TestResult] = []
    for test in prepared.tests:
        spec = selftest(test)
        runs: list[TestResult] = []
        for case, args in spec.runs:
            result, ended = _run_one(guest, test, case, f"./{spec.binary} {args}".strip())
            runs.append(result)
            if ended is not Ended.DONE:
                return GroupRun(regroup(NAME, results + [flatten(test, runs)]), ended)
        results.append(expect_known_bugs(test, flatten(test, runs), prepared.known_bugs))
    guest.shell.run(teardown_command(modules), timeout=120)
    return GroupRun(regroup(NAME, results), Ended.DONE)
