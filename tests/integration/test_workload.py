"""The guest C workload on the default 6.1 kernel: compiled static on the host,
pushed and run over SSH, each case a separate result."""
from __future__ import annotations

import json
import subprocess
import xml.etree.ElementTree as ET

import pytest
from conftest import EXPECTED_SKIPS, REPO, harness, skips, workload_cases

from harness.results import migrate_reasons
from harness.results.report import load

pytestmark = pytest.mark.integration

# The "done when": these paths into migrate_pages() exercised, each by a passing test.
EXERCISED = {"compaction": "workload.compaction", "memory_failure": "workload.soft_offline",
             "syscall_or_cpuset": "workload.anon_move_pages", "mempolicy_mbind": "workload.mbind_move",
             "numa_misplaced": "workload.numa_balancing", "contig_range": "workload.contig_range"}


def test_default_run_has_every_workload_case_passing(default_kernel, tmp_path):
    cases = workload_cases()
    assert len(cases) >= 14, cases  # the suite's cases when this list stopped being kept by hand
    out = tmp_path / "out"
    result = harness("run", "--out", str(out))
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    suite = ET.parse(out / "junit.xml").getroot().find("testsuite[@name='workload']")
    assert [case.get("name") for case in suite.findall("testcase")] == cases
    assert suite.get("failures") == "0" and suite.get("errors") == "0"
    assert skips(out) == EXPECTED_SKIPS, (out / "summary.txt").read_text()  # a skip is no pass
    assert "Group runtimes under" in result.stdout and "workload" in result.stdout.split("Group runtimes")[1]
    groups = [g["name"] for g in json.loads((out / "results.json").read_text())["groups"]]
    assert groups == ["boot", "workload", "module"]
    assert (out / "workload.ktap").read_text().startswith("KTAP version 1")
    cover = migrate_reasons.coverage(load(out))
    assert {reason: test for reason, test in EXERCISED.items() if test in cover[reason][0]} == EXERCISED
    assert "Migrate reasons (passing tests): compaction: compaction;" in result.stdout


FAIL_THEN_SKIP = r'''
#include "suite.h"
int case_bad_args(void)
{
	failf("injected: a check failed, expected it to pass");
	return skip("injected: asked to skip after the failed check");
}
'''


def test_failed_check_wins_over_a_later_skip(default_kernel, tmp_path):
    """bad_args swapped for a case that records a failed check, then returns skip():
    the suite must report it 'not ok' (with the failed check), never '# SKIP'."""
    src = REPO / "guest-tools" / "workload"
    (tmp_path / "stub.c").write_text(FAIL_THEN_SKIP)
    objs = []
    for c in sorted(src.glob("*.c")):
        obj = tmp_path / (c.stem + ".o")
        rename = ["-Dcase_bad_args=real_case_bad_args"] if c.name == "cases_fail.c" else []
        subprocess.run(["gcc", "-O2", "-pthread", *rename, "-c", str(c), "-o", str(obj)], check=True)
        objs.append(str(obj))
    subprocess.run(["gcc", "-O2", "-pthread", "-I", str(src), "-c", str(tmp_path / "stub.c"), "-o",
                    str(tmp_path / "stub.o")], check=True)
    binary = tmp_path / "migrate_suite"
    subprocess.run(["gcc", "-static", "-pthread", "-o", str(binary), *objs, str(tmp_path / "stub.o")], check=True)
    result = harness("boot", "--push", str(binary), "--exec", "/tmp/harness/migrate_suite bad_args",
                     "--out", str(tmp_path / "out"))
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert "not ok 12 bad_args" in lines, result.stdout[-3000:]
    assert "# FAIL: injected: a check failed, expected it to pass" in lines
