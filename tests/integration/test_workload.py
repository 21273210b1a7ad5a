"""The guest C workload on the default 6.1 kernel: compiled static on the host,
pushed and run over SSH, each case a separate result."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
from conftest import harness

pytestmark = pytest.mark.integration

CASES = ["anon_move_pages", "migrate_pages_other_process", "mbind_move", "shared_anon_move_all",
         "file_pages_tmpfs", "file_pages_ext4", "swap_pages", "thp_move", "unmovable_page",
         "concurrent_bounce", "permissions_unprivileged", "bad_args", "migration_counters", "query_mode"]


def test_default_run_has_every_workload_case_passing(default_kernel, tmp_path):
    out = tmp_path / "out"
    result = harness("run", "--out", str(out))
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    suite = ET.parse(out / "junit.xml").getroot().find("testsuite[@name='workload']")
    assert [case.get("name") for case in suite.findall("testcase")] == CASES
    assert suite.get("failures") == "0" and suite.get("errors") == "0"
    assert "Group runtimes under" in result.stdout and "workload" in result.stdout.split("Group runtimes")[1]
    groups = [g["name"] for g in json.loads((out / "results.json").read_text())["groups"]]
    assert groups == ["boot", "workload", "module"]
    assert (out / "workload.ktap").read_text().startswith("KTAP version 1")
