"""harness/groups: the groups' bookkeeping (blame, durations, roll-up)."""
import pytest

from harness.groups import guest, module, script
from harness.results import ktap
from harness.results.model import CrashReport, Status, TestResult

pytestmark = pytest.mark.unit

TRUNCATED = ["KTAP version 1", "1..4", "ok 1 first", "ok 2 second", "# Subtest: third"]


def test_the_first_missing_test_is_blamed_and_the_rest_are_errors():
    group = ktap.parse_ktap(list(enumerate(TRUNCATED, 1)), "suite")
    crash = CrashReport("Kernel panic - not syncing: x", "...", 10, 20)
    blamed = guest.blame(group, {None: ("kernel crash: x", crash)}, None)
    assert [(t.name, t.status) for t in blamed.subtests] == [
        ("first", Status.PASS), ("second", Status.PASS), ("third", Status.FAIL), ("test 4 (missing)", Status.ERROR)]
    assert blamed.subtests[2].crash is crash and blamed.status is Status.FAIL


def test_durations_come_from_arrival_times():
    group = ktap.parse_ktap(list(enumerate(TRUNCATED[:4], 1)), "suite")
    timed = script.with_durations(group, {1: 0.0, 2: 0.1, 3: 1.5, 4: 4.0})
    assert [t.duration_s for t in timed.subtests[:2]] == [1.5, 2.5]


def test_regroup_takes_the_worst_leaf():
    ok, bad = TestResult("a", Status.PASS), TestResult("b", Status.FAIL)
    assert module.regroup("g", [ok, bad]).status is Status.FAIL
    assert module.regroup("g", [ok, TestResult("c", Status.ERROR)]).status is Status.ERROR
    assert module.regroup("g", [ok, TestResult("d", Status.SKIP)]).status is Status.PASS


def test_after_the_blamed_test_the_tests_never_reported_were_not_run_because_of_it():
    group = ktap.parse_ktap(list(enumerate(TRUNCATED, 1)), "suite")
    blamed = guest.blame(group, {None: ("hang: no result within 30 s", None)}, "TIMEOUT", "hung the kernel")
    assert blamed.subtests[3].diagnostics == ("not run: third hung the kernel",)


STUCK = ["KTAP version 1", "1..3", "ok 1 first", "# Subtest: second", "# FAIL: stuck",
         "not ok 2 second # TIMEOUT stuck in kernel: kernel_move_pages+0x8d/0x1a0"]


def test_a_test_the_program_reports_stuck_names_the_dump_and_stops_the_rest():
    group = ktap.parse_ktap(list(enumerate(STUCK, 1)), "workload")
    assert guest.stuck_in_kernel(group).name == "second"
    hung = guest.stopped_by_hang(group, "hang-workload.txt")
    first, second, third = hung.subtests
    assert first.status is Status.PASS and second.status is Status.FAIL
    assert second.diagnostics[-1] == "blocked tasks in hang-workload.txt"
    assert third.status is Status.ERROR and third.diagnostics == (
        "not run: second hung the kernel (stuck in kernel: kernel_move_pages+0x8d/0x1a0)",)
    assert guest.stop_reason(hung, guest.Ended.HUNG) == (
        "not run: group workload hung the kernel: second: stuck in kernel: kernel_move_pages+0x8d/0x1a0;"
        " blocked tasks in hang-workload.txt")


def test_nothing_is_stuck_in_a_group_that_ended():
    assert guest.stuck_in_kernel(ktap.parse_ktap(list(enumerate(TRUNCATED, 1)), "suite")) is None


def test_each_crash_is_pinned_on_the_test_running_when_it_began():
    lines = ["KTAP version 1", "1..4", "# Subtest: first", "# FAIL: killed by signal 11", "not ok 1 first",
             "# Subtest: second", "not ok 2 second", "# Subtest: third"]
    group = ktap.parse_ktap(list(enumerate(lines, 1)), "workload")
    bug1, bug3 = CrashReport("kernel BUG in x", "...", 267, 303), CrashReport("kernel BUG in x", "...", 363, 397)
    watched = guest.Watched(guest.Ended.CRASHED, None, (bug1, bug3), None, 250)
    blamed = guest.ended_badly(group, watched, 30, [(260, "first"), (310, "second"), (355, "third")])
    first, second, third, fourth = blamed.subtests
    assert first.crash is bug1 and first.diagnostics[0] == "kernel crash: kernel BUG in x (console.log:267)"
    assert "killed by signal 11" in first.diagnostics[1]
    assert second.crash is None and second.status is Status.FAIL
    assert third.crash is bug3 and third.status is Status.FAIL
    assert fourth.status is Status.ERROR and fourth.diagnostics == ("not run: first crashed the kernel",)
    assert guest.running_at([(260, "first")], 100) is None


def test_a_group_kind_has_its_own_time_limit_capped_by_the_spec():
    from harness import groups
    from harness.spec import Spec, Timeouts
    module_kind, workload_kind = groups.kind_of("module"), groups.kind_of("workload")
    assert module_kind.time_limit(Spec()) == module.TIMEOUT_S
    assert module_kind.time_limit(Spec(timeouts=Timeouts(test=20))) == 20
    assert workload_kind.time_limit(Spec()) == Timeouts().test


def test_a_hung_task_report_is_a_hang_blamed_on_the_running_test():
    group = ktap.parse_ktap(list(enumerate(TRUNCATED, 1)), "suite")
    report = CrashReport("INFO: task hung (blocked for more than 20 seconds): insmod", "...", 40, 60)
    watched = guest.Watched(guest.Ended.HUNG, None, (report,), guest.Path("hang-suite.txt"), 10)
    third = guest.ended_badly(group, watched, 60).subtests[2]
    assert third.directive == "TIMEOUT" and third.diagnostics == (
        "hang: INFO: task hung (blocked for more than 20 seconds): insmod (console.log:40);"
        " blocked tasks in hang-suite.txt",)


def test_blame_reaches_the_leaves_of_a_nested_suite():
    lines = ["KTAP version 1", "1..1", "    KTAP version 1", "    # Subtest: migrate_pages", "    1..3",
             "    ok 1 first", "    # Subtest: second"]
    group = ktap.parse_ktap(list(enumerate(lines, 1)), "module")
    blamed = guest.blame(group, {None: ("hang: no result within 60 s", None)}, "TIMEOUT", "hung the kernel")
    suite, = blamed.subtests
    assert [(t.name, t.status) for t in suite.subtests] == [
        ("first", Status.PASS), ("second", Status.FAIL), ("test 3 (missing)", Status.ERROR)]
    assert suite.status is Status.FAIL and suite.subtests[2].diagnostics == ("not run: second hung the kernel",)
