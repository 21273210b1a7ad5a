"""harness/bisect.py: step verdicts from a run's results, and from the errors that stopped it."""
import pytest

from harness import bisect
from harness.results.model import CrashReport, RunResult, Status, TestResult

pytestmark = pytest.mark.unit


def group(name, *statuses, crash=None):
    leaves = tuple(TestResult(f"t{i}", s, crash=crash if s is Status.FAIL else None) for i, s in enumerate(statuses))
    worst = Status.FAIL if Status.FAIL in statuses else Status.ERROR if Status.ERROR in statuses else Status.PASS
    return TestResult(name, worst, subtests=leaves)


PANIC = CrashReport("Kernel panic - not syncing: x", "x", 1, 2)


@pytest.mark.parametrize("groups, crashes, tests, expected", [
    ((group("boot", Status.PASS), group("module", Status.PASS)), (), (), bisect.Verdict.GOOD),
    ((group("boot", Status.PASS), group("module", Status.PASS, Status.FAIL)), (), (), bisect.Verdict.BAD),
    ((group("boot", Status.PASS), group("module", Status.PASS, Status.FAIL)), (), ("boot",), bisect.Verdict.GOOD),
    ((group("boot", Status.PASS), group("module", Status.PASS, Status.FAIL)), (), ("module.t1",), bisect.Verdict.BAD),
    ((group("boot", Status.ERROR),), (), (), bisect.Verdict.SKIP),  # never got ready
    ((group("boot", Status.PASS), group("module", Status.ERROR)), (), (), bisect.Verdict.SKIP),
    ((group("boot", Status.PASS), group("w", Status.FAIL, crash=PANIC)), (PANIC,), (), bisect.Verdict.BAD),
    ((group("boot", Status.PASS),), (), ("nothere",), bisect.Verdict.SKIP),
])
def test_verdicts(groups, crashes, tests, expected):
    assert bisect.verdict(RunResult({}, groups, crashes), tests) == expected


def test_only_build_failures_are_skipped():
    from harness.errors import BootError, BuildError, ConfigError, DiskFull, PatchDoesNotApply, SourceError, ToolMissing
    assert bisect.verdict_of_error(BuildError("x")) == bisect.Verdict.SKIP
    assert bisect.verdict_of_error(ConfigError("x")) == bisect.Verdict.SKIP
    assert bisect.verdict_of_error(PatchDoesNotApply("patch p does not apply: mm/x.c: hunk #1 failed")) == bisect.Verdict.SKIP
    assert bisect.verdict_of_error(SourceError("git checkout failed")) is None
    assert bisect.verdict_of_error(DiskFull("cc1: No space left on device")) is None
    assert bisect.verdict_of_error(BootError("QEMU would not start")) is None
    assert bisect.verdict_of_error(ToolMissing("qemu")) is None
