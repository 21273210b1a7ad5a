"""Results stage: the values every parser produces and every report reads.

A run is a tree: RunResult -> groups (TestResult with subtests) -> leaves.
Counting is done on leaves only, so a group never counts twice.
"""
from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


class Status(str, enum.Enum):
    PASS = "pass"
    FAIL = "fail"
    SKIP = "skip"
    XFAIL = "xfail"  # `not ok ... # TODO` / `# XFAIL`: a known failure, not counted as one
    ERROR = "error"  # the test could not run or never reported (missing, crash before it)

    @property
    def is_failure(self) -> bool:
        return self in (Status.FAIL, Status.ERROR)


@dataclass(frozen=True)
class CrashReport:
    """A kernel crash seen on the console: one-line title plus its excerpt."""

    title: str
    excerpt: str
    first_line: int  # 1-based line numbers in console.log
    last_line: int
    stack: str | None = None  # its frames decoded to file:line, with a debug-info kernel (kernel/symbols.py)


@dataclass(frozen=True)
class TestResult:
    """One KTAP test line, or a group/suite holding subtests."""

    __test__ = False  # not a pytest test class, despite its name

    name: str
    status: Status
    diagnostics: tuple[str, ...] = ()
    directive: str | None = None  # e.g. "SKIP no swap", "TIMEOUT"
    subtests: tuple[TestResult, ...] = ()
    duration_s: float | None = None
    crash: CrashReport | None = None
    line: int | None = None  # where the result line stood in its log

    def paths(self) -> list[tuple[tuple[str, ...], TestResult]]:
        """Every leaf with the names that lead to it below this result
        (a result without subtests is its own leaf, with the path ())."""
        if not self.subtests:
            return [((), self)]
        return [((sub.name, *names), leaf) for sub in self.subtests for names, leaf in sub.paths()]

    def leaves(self) -> list[TestResult]:
        return [leaf for _, leaf in self.paths()]


# KCIDB's status order, highest priority first (kcidb-io schema v4 and v5,
# "status": "The status names above are listed in priority order (highest to
# lowest), which can be used to produce a summary status for a collection of
# test runs ... the highest-priority status across all its tests"; v5 lists
# FAIL, ERROR, MISS, PASS, DONE, SKIP). FAIL outranks ERROR: a test that
# showed the code faulty says more than one that could not tell. XFAIL, a
# known failure, ranks as PASS; KCIDB has no MISS or DONE of ours.
_PRIORITY = (Status.FAIL, Status.ERROR, Status.PASS, Status.XFAIL, Status.SKIP)


def rollup(results: Iterable[TestResult]) -> Status | None:
    """The status of a group of results: the highest-priority status of their
    leaves, in KCIDB's order; None when there are no leaves."""
    statuses = {leaf.status for result in results for leaf in result.leaves()}
    worst = next((s for s in _PRIORITY if s in statuses), None)
    return Status.PASS if worst is Status.XFAIL else worst


@dataclass(frozen=True)
class Counts:
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    errors: int = 0
    xfailed: int = 0

    @classmethod
    def of(cls, results: list[TestResult]) -> Counts:
        leaves = [leaf for r in results for leaf in r.leaves()]
        by = {s: sum(1 for x in leaves if x.status is s) for s in Status}
        return cls(by[Status.PASS], by[Status.FAIL], by[Status.SKIP], by[Status.ERROR], by[Status.XFAIL])

    @property
    def total(self) -> int:
        return self.passed + self.failed + self.skipped + self.errors + self.xfailed

    def line(self) -> str:
        """The closing line CI systems read: 'N passed, N failed, N skipped'."""
        text = f"{self.passed} passed, {self.failed + self.errors} failed, {self.skipped} skipped"
        if self.errors:
            text += f" ({self.errors} errors)"
        return text


@dataclass(frozen=True)
class RunResult:
    """Everything a run produced: metadata, one TestResult per group, crashes."""

    metadata: dict[str, Any] = field(default_factory=dict)
    groups: tuple[TestResult, ...] = ()
    crashes: tuple[CrashReport, ...] = ()

    @property
    def counts(self) -> Counts:
        return Counts.of(list(self.groups))

    @property
    def ok(self) -> bool:
        c = self.counts
        return not self.crashes and c.failed == 0 and c.errors == 0 and c.total > 0
