"""Migrate reasons per test and the run's coverage line, on a real capture
(data/ktap/workload-paths-6.1.ktap: the default workload on 6.1 under TCG,
with the compaction, soft_offline, numa_balancing and contig_range cases)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from harness.results import migrate_reasons
from harness.results.ktap import parse_ktap
from harness.results.model import RunResult, Status
from harness.results.report import summary, to_json

pytestmark = pytest.mark.unit

CAPTURE = Path(__file__).parent / "data" / "ktap" / "workload-paths-6.1.ktap"
WIDTH = 100


def workload():
    lines = list(enumerate(CAPTURE.read_text(encoding="utf-8").splitlines(), 1))
    return parse_ktap(lines, "workload", CAPTURE.name)


def case(group, name):
    return next(t for t in group.subtests if t.name == name)


def test_each_new_case_saw_its_own_reason_with_its_counts():
    group = workload()
    assert migrate_reasons.parse(case(group, "soft_offline").diagnostics) == {
        "memory_failure": {"events": 4, "succeeded": 4, "failed": 0}}
    assert migrate_reasons.parse(case(group, "numa_balancing").diagnostics) == {
        "numa_misplaced": {"events": 67, "succeeded": 67, "failed": 0}}
    assert migrate_reasons.parse(case(group, "contig_range").diagnostics) == {
        "contig_range": {"events": 9, "succeeded": 259, "failed": 0}}
    assert set(migrate_reasons.parse(case(group, "compaction").diagnostics)) == {"compaction"}
    assert migrate_reasons.parse(case(group, "mbind_move").diagnostics)["mempolicy_mbind"]["failed"] == 2
    assert migrate_reasons.parse(case(group, "bad_args").diagnostics) == {}  # moves nothing


def test_coverage_names_every_reason_and_the_ones_nobody_exercised():
    lines = migrate_reasons.coverage_lines(RunResult(groups=(workload(),)), WIDTH)
    text = " ".join(line.strip() for line in lines)
    assert text.startswith("Migrate reasons (passing tests): compaction: compaction; memory_failure: soft_offline;")
    for reason in ("memory_hotplug", "longterm_pin", "demotion"):
        assert f"{reason}: not exercised;" in text + ";"
    assert "syscall_or_cpuset: anon_move_pages, migrate_pages_other_process +" in text
    assert "numa_misplaced: numa_balancing;" in text and "contig_range: contig_range;" in text
    positions = [text.index(f"{reason}:") for reason in migrate_reasons.REASONS]
    assert positions == sorted(positions)
    assert all(len(line) <= WIDTH for line in lines)


def test_a_failing_test_does_not_count_but_is_mentioned():
    group = workload()
    failed = tuple(dataclasses.replace(t, status=Status.FAIL) if t.name == "compaction" else t
                   for t in group.subtests)
    cover = migrate_reasons.coverage(RunResult(groups=(dataclasses.replace(group, subtests=failed),)))
    assert cover["compaction"] == ([], ["workload.compaction"])
    text = " ".join(migrate_reasons.coverage_lines(RunResult(groups=(dataclasses.replace(group, subtests=failed),)),
                                                   WIDTH))
    assert "compaction: not exercised (seen only in 1 failing);" in text


def test_results_json_carries_each_tests_reasons_and_the_summary_the_line():
    result = RunResult(groups=(workload(),))
    doc = to_json(result)
    tests = {t["name"]: t for t in doc["groups"][0]["subtests"]}
    assert tests["soft_offline"]["migrate_reasons"] == {"memory_failure": {"events": 4, "succeeded": 4, "failed": 0}}
    assert tests["query_mode"]["migrate_reasons"] == {}
    assert doc["groups"][0]["migrate_reasons"] == {}
    text = summary(result).splitlines()
    assert text[-1].startswith("18 passed")
    assert any(line.startswith("Migrate reasons (passing tests): ") for line in text)


def test_no_line_when_nothing_looked_at_the_trace():
    group = workload()
    untraced = tuple(dataclasses.replace(t, diagnostics=tuple(d for d in t.diagnostics
                                                              if not d.startswith(("migrate_reason", "migrate trace"))))
                     for t in group.subtests)
    group = dataclasses.replace(group, subtests=untraced,
                                diagnostics=tuple(d for d in group.diagnostics if not d.startswith("migrate trace")))
    assert migrate_reasons.coverage_lines(RunResult(groups=(group,)), WIDTH) == []
