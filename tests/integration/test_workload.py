"""The guest C workload on the default 6.1 kernel: compiled static on the host,
pushed and run over SSH, each case a separate result."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from conftest import EXPECTED_SKIPS, WORKLOAD_CASES, harness, skips

pytestmark = pytest.mark.integration

def test_default_run_has_every_workload_case_passing(default_kernel, tmp_path):
    out = tmp_path / "out"
    result = harness("run", "--out", str(out))
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    suite = ET.parse(out / "junit.xml").getroot().find("testsuite[@name='workload']")
    assert [case.get("name") for case in suite.findall("testcase")] == WORKLOAD_CASES
    assert suite.get("failures") == "0" and suite.get("errors") == "0"
    assert skips(out) == EXPECTED_SKIPS, (out / "summary.txt").read_text()  # a skip is no pass
    assert "Group runtimes under" in result.stdout and "workload" in result.stdout.split("Group runtimes")[1]
    groups = [g["name"] for g in json.loads((out / "results.json").read_text())["groups"]]
    assert groups == ["boot", "workload", "module"]
    assert (out / "workload.ktap").read_text().startswith("KTAP version 1")
