"""Which kernel paths into migrate_pages() a run exercised.

The workload prints, after each case, one diagnostic per migrate reason of the
`migrate:mm_migrate_pages` trace events the case caused:
`migrate_reason: compaction events=9 succeeded=468 failed=5`. Each test's
reasons go into results.json; the run summary prints the coverage line: each
of the kernel's nine reasons and the passing tests that exercised it.
"""
from __future__ import annotations

import re
import textwrap

from harness.results.model import RunResult, Status, TestResult

# The kernel's printed names (include/trace/events/migrate.h), in enum migrate_reason order.
REASONS = ("compaction", "memory_failure", "memory_hotplug", "syscall_or_cpuset", "mempolicy_mbind",
           "numa_misplaced", "contig_range", "longterm_pin", "demotion")
_LINE = re.compile(r"^migrate_reason: (\S+) events=(\d+) succeeded=(\d+) failed=(\d+)$")
_TRACED = ("migrate trace:", "migrate_reason:")  # a run whose workload looked at the trace at all
SHOWN = 2  # test names shown per reason; the rest are counted


def parse(diagnostics: tuple[str, ...] | list[str]) -> dict[str, dict[str, int]]:
    """{reason: {"events", "succeeded", "failed"}} from a test's diagnostics."""
    found: dict[str, dict[str, int]] = {}
    for line in diagnostics:
        m = _LINE.match(line)
        if m:
            found[m[1]] = {"events": int(m[2]), "succeeded": int(m[3]), "failed": int(m[4])}
    return found


def _tests(result: RunResult) -> list[tuple[str, TestResult]]:
    """Every test with its GROUP.PATH name, containers included (a group may be a leaf)."""
    out: list[tuple[str, TestResult]] = []

    def walk(test: TestResult, path: str) -> None:
        out.append((path, test))
        for sub in test.subtests:
            walk(sub, f"{path}.{sub.name}")
    for group in result.groups:
        walk(group, group.name)
    return out


def coverage(result: RunResult) -> dict[str, tuple[list[str], list[str]]]:
    """{reason: (passing tests that exercised it, failing ones)}, every reason in REASONS first."""
    cover: dict[str, tuple[list[str], list[str]]] = {r: ([], []) for r in REASONS}
    for path, test in _tests(result):
        for reason in parse(test.diagnostics):
            passing, failing = cover.setdefault(reason, ([], []))
            (passing if test.status is Status.PASS else failing).append(path)
    return cover


def traced(result: RunResult) -> bool:
    return any(line.startswith(_TRACED) for _, test in _tests(result) for line in test.diagnostics)


def coverage_lines(result: RunResult, width: int) -> list[str]:
    """The coverage line, wrapped; none when no test looked at the trace events."""
    if not traced(result):
        return []
    parts = []
    for reason, (passing, failing) in coverage(result).items():
        if passing:
            names = ", ".join(p.split(".", 1)[-1] for p in passing[:SHOWN])
            more = f" +{len(passing) - SHOWN}" if len(passing) > SHOWN else ""
            parts.append(f"{reason}: {names}{more}")
        else:
            seen = f" (seen only in {len(failing)} failing)" if failing else ""
            parts.append(f"{reason}: not exercised{seen}")
    return textwrap.wrap("Migrate reasons (passing tests): " + "; ".join(parts), width,
                         subsequent_indent="    ", break_on_hyphens=False)
